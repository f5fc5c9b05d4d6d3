// Package core is the speaker's functional core. From one node's view of
// the cluster (configuration, Services, EndpointSlices, Nodes, the mesh's
// liveness, what the announcers answer for) it computes, as data, what the
// node announces over each protocol and what it reports: Step plans a
// pass, Report says the Services' conditions once the announcers have
// been updated, NodeStatus the node's BGP status. Nothing here has a
// goroutine, a lock, a clock or a socket; package speaker's shells read
// the informers into Inputs and carry out the Actions, so every decision
// is table-tested here without root, namespaces or wall time.
package core

import (
	"net/netip"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/speaker/announce"
)

// ExcludeLabel keeps a node from announcing any LoadBalancer address.
const ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

// Service is what a speaker keeps of a LoadBalancer Service. Every node
// caches every one, and a corev1.Service costs about 1.4 KB even stripped
// to what a speaker reads (its structs alone are 640 bytes, a
// one-annotation map 300 more); this about 0.5 KB. It embeds ObjectMeta so
// that an informer can key it, and keeps of it the namespace, name, UID
// (an Event's object), generation, labels (advertisements select Services
// by them) and deletion timestamp.
type Service struct {
	metav1.ObjectMeta
	// AllocatedFrom is the v1beta1.AnnotationAllocatedFrom annotation.
	AllocatedFrom string
	// Class is spec.loadBalancerClass (nil: none): a Service of another
	// load balancer's class is not this speaker's to announce or report.
	Class *string
	IPs   []netip.Addr // of status.loadBalancer.ingress
	Local bool         // externalTrafficPolicy: Local
	// Announced is the ironlb.io/Announced condition, nil if none.
	Announced *metav1.Condition
}

// NewService keeps of s what a speaker reads.
func NewService(s *corev1.Service) *Service {
	c := &Service{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: s.Namespace, Name: s.Name, UID: s.UID, Generation: s.Generation,
			Labels: s.Labels, DeletionTimestamp: s.DeletionTimestamp,
		},
		AllocatedFrom: s.Annotations[v1beta1.AnnotationAllocatedFrom],
		Class:         s.Spec.LoadBalancerClass,
		IPs:           config.IngressIPs(s),
		Local:         s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
	}
	if a := meta.FindStatusCondition(s.Status.Conditions, v1beta1.ServiceConditionAnnounced); a != nil {
		cond := *a
		cond.Type = v1beta1.ServiceConditionAnnounced // not the decoded copy
		c.Announced = &cond
	}
	return c
}

// Key is "namespace/name".
func (s *Service) Key() string { return s.Namespace + "/" + s.Name }

// Ref is the Service for Events about s.
func (s *Service) Ref() *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID}}
}

// MeshPeers maps node names to their speakers' mesh addresses (the first
// InternalIP). The shell hands them to the mesh before it reads who is
// alive for Step.
func MeshPeers(nodes []*corev1.Node, port uint16) map[string]netip.AddrPort {
	out := map[string]netip.AddrPort{}
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				out[n.Name] = netip.AddrPortFrom(ip, port)
				break
			}
		}
	}
	return out
}

// NodeAddresses returns the node's InternalIP of each family.
func NodeAddresses(n *corev1.Node) (v4, v6 netip.Addr) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		switch {
		case err != nil:
		case ip.Is4() && !v4.IsValid():
			v4 = ip
		case ip.Is6() && !v6.IsValid():
			v6 = ip
		}
	}
	return v4, v6
}

// NodeInfos turns Node objects and the mesh's view into the plan's input.
func NodeInfos(nodes []*corev1.Node, alive map[string]bool) []announce.NodeInfo {
	out := make([]announce.NodeInfo, 0, len(nodes))
	for _, n := range nodes {
		info := announce.NodeInfo{Labels: labels.Set(n.Labels)}
		info.Name = n.Name
		info.Unschedulable = n.Spec.Unschedulable
		_, info.Excluded = n.Labels[ExcludeLabel]
		info.SpeakerAlive = alive[n.Name]
		for _, c := range n.Status.Conditions {
			switch c.Type {
			case corev1.NodeReady:
				info.Ready = c.Status == corev1.ConditionTrue
			case corev1.NodeNetworkUnavailable:
				info.NetworkUnavailable = c.Status == corev1.ConditionTrue
			}
		}
		out = append(out, info)
	}
	return out
}

// ServiceInfos lists the Services that have addresses, with the nodes of
// their ready endpoints and, where the configuration knows it, each
// address's pool. The addresses are the caller's: read only.
func ServiceInfos(cfg *config.Config, svcs []*Service, eps []*discoveryv1.EndpointSlice) []announce.ServiceInfo {
	endpoints := map[string]map[string]bool{}
	for _, es := range eps {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		key := es.Namespace + "/" + svc
		for _, e := range es.Endpoints {
			if e.NodeName == nil || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			if endpoints[key] == nil {
				endpoints[key] = map[string]bool{}
			}
			endpoints[key][*e.NodeName] = true
		}
	}
	var out []announce.ServiceInfo
	for _, s := range svcs {
		if len(s.IPs) == 0 {
			continue
		}
		key := s.Key()
		// The annotation names the pools without repeats, so it tells an
		// address's pool only when there is one; the configured ranges
		// tell the rest.
		pools := make([]string, len(s.IPs))
		if named := s.AllocatedFrom; !strings.Contains(named, ",") {
			for k := range pools {
				pools[k] = named
			}
		}
		for k, ip := range s.IPs {
			if p := cfg.PoolOf(ip); p != nil {
				pools[k] = p.Name
			}
		}
		out = append(out, announce.ServiceInfo{
			Key: key, IPs: s.IPs, Pools: pools, Labels: labels.Set(s.Labels),
			Local: s.Local, EndpointNodes: endpoints[key],
		})
	}
	return out
}
