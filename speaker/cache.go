package speaker

import (
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/internal/kube"
	"github.com/ironlb/ironlb/speaker/core"
)

// stripUnread is the informers' transform: every node caches every
// LoadBalancer Service, Node and EndpointSlice of the cluster, so what a
// cached object carries is paid once per object per node. A Service
// becomes a core.Service. Every other object loses its managedFields.
// Of Nodes and EndpointSlices, it keeps of the metadata what the speaker
// reads (name, labels, UID: a BGPNodeStatus's owner; an EndpointSlice's
// labels only its Service's name), and of the rest only the fields the
// plan reads (core.NodeInfos, MeshPeers, ServiceInfos): a Node's images and
// capacity, an endpoint's addresses go. Other kinds lose the
// last-applied annotation. TestStripUnread holds the plan's input
// unchanged by it.
func stripUnread(in any) (any, error) {
	m, ok := in.(metav1.Object)
	if !ok {
		return in, nil
	}
	if s, ok := in.(*corev1.Service); ok {
		return core.NewService(s), nil
	}
	m.SetManagedFields(nil)
	switch in.(type) {
	case *corev1.Node, *discoveryv1.EndpointSlice:
		m.SetOwnerReferences(nil)
		m.SetFinalizers(nil)
		m.SetGenerateName("")
	default:
		if a := m.GetAnnotations(); a != nil {
			if _, ok := a[corev1.LastAppliedConfigAnnotation]; ok {
				a = maps.Clone(a)
				delete(a, corev1.LastAppliedConfigAnnotation)
				m.SetAnnotations(a)
			}
		}
		return in, nil
	}
	switch o := in.(type) {
	case *corev1.Node:
		o.Annotations = nil
		o.Spec = corev1.NodeSpec{Unschedulable: o.Spec.Unschedulable}
		st := corev1.NodeStatus{Addresses: o.Status.Addresses}
		for _, c := range o.Status.Conditions {
			// Only the status: the heartbeat times change every few
			// minutes and would make each such update look like news.
			if c.Type == corev1.NodeReady || c.Type == corev1.NodeNetworkUnavailable {
				st.Conditions = append(st.Conditions, corev1.NodeCondition{Type: c.Type, Status: c.Status})
			}
		}
		o.Status = st
	case *discoveryv1.EndpointSlice:
		o.Annotations = nil
		// Of the labels only the Service's name (the map itself when it
		// is the only one).
		if name, ok := o.Labels[discoveryv1.LabelServiceName]; !ok {
			o.Labels = nil
		} else if len(o.Labels) > 1 {
			o.Labels = map[string]string{discoveryv1.LabelServiceName: name}
		}
		eps := make([]discoveryv1.Endpoint, len(o.Endpoints))
		for i, e := range o.Endpoints {
			eps[i] = discoveryv1.Endpoint{NodeName: e.NodeName, Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}}
		}
		o.Endpoints, o.Ports = eps, nil
	}
	return in, nil
}

// watch starts nothing: it builds the informers of every kind a pass
// reads, each change calling poke (Services, Nodes and EndpointSlices
// only when planInputChanged) and every one calling active (decoding is
// most of what a speaker allocates), and the stores a pass reads them
// from.
func watch(cs *kube.Clients, namespace string, poke, active func()) (*Stores, []cache.SharedIndexInformer, error) {
	st := Stores{Config: map[string]cache.Store{}}
	var infs []cache.SharedIndexInformer
	type watched struct {
		store    *cache.Store
		client   rest.Interface
		resource string
		obj      runtime.Object
		sel      fields.Selector
	}
	ws := []watched{
		// Only LoadBalancer Services: most of a cluster's are not, and
		// each would cost every node memory and a decode per change.
		{&st.Services, cs.Core, "services", &corev1.Service{},
			fields.OneTermEqualSelector("spec.type", string(corev1.ServiceTypeLoadBalancer))},
		{&st.Nodes, cs.Core, "nodes", &corev1.Node{}, nil},
		{&st.EndpointSlices, cs.Discovery, "endpointslices", &discoveryv1.EndpointSlice{}, nil},
		{&st.Secrets, cs.Core, "secrets", &corev1.Secret{}, nil}, // BGP passwords
	}
	stores := make([]cache.Store, len(config.Kinds()))
	for i, k := range config.Kinds() {
		ws = append(ws, watched{&stores[i], cs.IronLB, k.Resource, k.New(), nil})
	}
	for _, w := range ws {
		ns := ""
		if w.resource == "secrets" {
			if namespace == "" {
				continue
			}
			ns = namespace // the speaker may read no others
		}
		inf, err := kube.Informer(w.client, w.resource, ns, w.sel, w.obj, stripUnread)
		if err != nil {
			return nil, nil, fmt.Errorf("watch %s: %w", w.resource, err)
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { active(); poke() },
			UpdateFunc: func(old, new any) {
				active()
				if planInputChanged(old, new) {
					poke()
				}
			},
			DeleteFunc: func(any) { active(); poke() },
		}); err != nil {
			return nil, nil, fmt.Errorf("watch %s: %w", w.resource, err)
		}
		*w.store = inf.GetStore()
		infs = append(infs, inf)
	}
	for i, k := range config.Kinds() {
		st.Config[k.Name] = stores[i]
	}
	return &st, infs, nil
}

// planInputChanged tells the updates that can change the plan. For
// Services, status condition writes (the speakers' own Announced
// condition, the controller's) cannot, and with one write per address
// per change, each waking every speaker for a full pass, they kept large
// clusters busy long after the addresses had settled. For Nodes and
// EndpointSlices, what stripUnread leaves is what the plan reads, so a
// kubelet's status refresh or an endpoint's new pod address on the same
// node wakes nobody. Other kinds always can.
func planInputChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(metav1.Object)
	n, ok2 := newObj.(metav1.Object)
	if !ok1 || !ok2 || !maps.Equal(o.GetLabels(), n.GetLabels()) ||
		!maps.Equal(o.GetAnnotations(), n.GetAnnotations()) ||
		!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp()) {
		return true
	}
	switch o := oldObj.(type) {
	case *core.Service:
		n, ok := newObj.(*core.Service)
		return !ok || o.AllocatedFrom != n.AllocatedFrom || o.Local != n.Local || !slices.Equal(o.IPs, n.IPs) ||
			!ptr.Equal(o.Class, n.Class)
	case *corev1.Node:
		n, ok := newObj.(*corev1.Node)
		return !ok || !equality.Semantic.DeepEqual(o.Spec, n.Spec) || !equality.Semantic.DeepEqual(o.Status, n.Status)
	case *discoveryv1.EndpointSlice:
		n, ok := newObj.(*discoveryv1.EndpointSlice)
		return !ok || !equality.Semantic.DeepEqual(o.Endpoints, n.Endpoints)
	}
	return true
}
