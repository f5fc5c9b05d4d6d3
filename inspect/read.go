package inspect

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
)

// DefaultSpeakerSelector selects the chart's speaker Pods.
const DefaultSpeakerSelector = "app.kubernetes.io/name=ironlb,app.kubernetes.io/component=speaker"

// Read lists, with get/list access only, what the reports need: every
// configuration object, Service, EndpointSlice, Node and Namespace, the
// speaker Pods (by speakers, a label selector) and the BGPNodeStatuses.
// The speaker Pods and BGPNodeStatuses are optional: without access to
// them the reports say so instead of failing.
func Read(ctx context.Context, r client.Reader, speakers string, filter config.ClassFilter) (*Cluster, error) {
	sel, err := labels.Parse(speakers)
	if err != nil {
		return nil, fmt.Errorf("speaker selector %q: %w", speakers, err)
	}
	c := &Cluster{Filter: filter}
	for _, k := range config.Kinds() {
		l := k.NewList()
		if err := r.List(ctx, l); err != nil {
			return nil, fmt.Errorf("list %s: %w", k.Resource, err)
		}
		k.Store(&c.Objects, l)
	}
	var (
		svcs  corev1.ServiceList
		eps   discoveryv1.EndpointSliceList
		nodes corev1.NodeList
		nss   corev1.NamespaceList
	)
	for _, l := range []struct {
		what string
		list client.ObjectList
	}{{"services", &svcs}, {"endpointslices", &eps}, {"nodes", &nodes}, {"namespaces", &nss}} {
		if err := r.List(ctx, l.list); err != nil {
			return nil, fmt.Errorf("list %s: %w", l.what, err)
		}
	}
	c.Services, c.EndpointSlices, c.Nodes, c.Namespaces = svcs.Items, eps.Items, nodes.Items, nss.Items

	var pods corev1.PodList
	switch err := r.List(ctx, &pods, client.MatchingLabelsSelector{Selector: sel}); {
	case apierrors.IsForbidden(err):
		c.SpeakersUnknown = "no access to list pods (the speakers')"
	case err != nil:
		return nil, fmt.Errorf("list speaker pods (%s): %w", speakers, err)
	case len(pods.Items) == 0:
		c.SpeakersUnknown = fmt.Sprintf("no speaker pod matches %q", speakers)
	default:
		c.SpeakerPods = pods.Items
	}
	var sts v1beta1.BGPNodeStatusList
	if err := r.List(ctx, &sts); err != nil && !apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("list bgpnodestatuses: %w", err)
	}
	c.NodeStatuses = sts.Items
	return c, nil
}
