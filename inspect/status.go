package inspect

import (
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/speaker/announce"
)

// ServiceStatus is one Service's load balancing.
type ServiceStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	// Allocated and Announced are the controller's and the speakers'
	// conditions, nil until written.
	Allocated *Condition      `json:"allocated,omitempty"`
	Announced *Condition      `json:"announced,omitempty"`
	Addresses []AddressStatus `json:"addresses,omitempty"`
}

// Condition is a condition's gist.
type Condition struct {
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Message string `json:"message,omitempty"`
}

// AddressStatus is one address of a Service and who announces it, per
// protocol (nil: no advertisement of that protocol covers it).
type AddressStatus struct {
	IP     string          `json:"ip"`
	Pool   string          `json:"pool,omitempty"`
	Layer2 *ProtocolStatus `json:"layer2,omitempty"`
	BGP    *ProtocolStatus `json:"bgp,omitempty"`
}

// ProtocolStatus is who announces an address over one protocol.
type ProtocolStatus struct {
	// Announcing are the nodes that announce it (layer 2: one).
	Announcing []string `json:"announcing"`
	// Interfaces are layer 2's; empty: every suitable interface.
	Interfaces []string `json:"interfaces,omitempty"`
	// NotAnnounced is the plan's reason when no node announces it.
	NotAnnounced string `json:"notAnnounced,omitempty"`
	// Others are the other nodes, each with why it does not announce.
	Others []NodeReason `json:"others,omitempty"`
	// Sessions are the BGP sessions of each announcing node.
	Sessions []NodeSessions `json:"sessions,omitempty"`
}

// NodeReason is why a node does not announce an address.
type NodeReason struct {
	Node   string `json:"node"`
	Reason string `json:"reason"`
}

// NodeSessions are one node's BGP sessions, from its BGPNodeStatus (nil
// Peers: the node has written none).
type NodeSessions struct {
	Node        string                     `json:"node"`
	Established int32                      `json:"established"`
	PeerCount   int32                      `json:"peerCount"`
	Peers       []v1beta1.BGPSessionStatus `json:"peers,omitempty"`
}

// Status reports every ironlb Service in namespace ns ("": all of them),
// sorted by namespace and name.
func (v *View) Status(ns string) []ServiceStatus {
	var out []ServiceStatus
	for i := range v.c.Services {
		s := &v.c.Services[i]
		if (ns == "" || s.Namespace == ns) && v.c.Filter.Manages(s) {
			out = append(out, v.ServiceStatus(s))
		}
	}
	slices.SortFunc(out, func(a, b ServiceStatus) int {
		if a.Namespace != b.Namespace {
			return strings.Compare(a.Namespace, b.Namespace)
		}
		return strings.Compare(a.Name, b.Name)
	})
	return out
}

// ServiceStatus reports one Service.
func (v *View) ServiceStatus(s *corev1.Service) ServiceStatus {
	st := ServiceStatus{Namespace: s.Namespace, Name: s.Name,
		Allocated: condition(s, v1beta1.ServiceConditionIPAllocated),
		Announced: condition(s, v1beta1.ServiceConditionAnnounced),
	}
	info, ok := v.info(s)
	if !ok {
		return st
	}
	for k, ip := range info.IPs {
		a := AddressStatus{IP: ip.String()}
		if k < len(info.Pools) {
			a.Pool = info.Pools[k]
		}
		if v.covered(announce.L2, info, k) {
			a.Layer2 = v.layer2(info, ip)
		}
		if v.covered(announce.BGP, info, k) {
			a.BGP = v.bgp(info, ip)
		}
		st.Addresses = append(st.Addresses, a)
	}
	return st
}

// info finds the plan's input for s.
func (v *View) info(s *corev1.Service) (announce.ServiceInfo, bool) {
	i, ok := v.infos[s.Namespace+"/"+s.Name]
	if !ok {
		return announce.ServiceInfo{}, false
	}
	return v.Plans.Infos[i], true
}

func (v *View) layer2(info announce.ServiceInfo, ip netip.Addr) *ProtocolStatus {
	p := v.Plans
	ps := &ProtocolStatus{Announcing: []string{}}
	if a, ok := p.L2.Addresses[ip]; ok {
		ps.Announcing, ps.Interfaces = []string{a.Node}, a.Interfaces
	} else {
		ps.NotAnnounced = p.L2.NotAnnounced[info.Key]
	}
	ps.Others = v.explain(announce.L2, ip, ps.Announcing)
	return ps
}

func (v *View) bgp(info announce.ServiceInfo, ip netip.Addr) *ProtocolStatus {
	p := v.Plans
	ps := &ProtocolStatus{Announcing: []string{}}
	if a, ok := p.BGP.Addresses[ip]; ok {
		ps.Announcing = a.Nodes
	} else {
		ps.NotAnnounced = p.BGP.NotAnnounced[info.Key]
	}
	ps.Others = v.explain(announce.BGP, ip, ps.Announcing)
	for _, n := range ps.Announcing {
		ns := NodeSessions{Node: n}
		for _, st := range v.c.NodeStatuses {
			if st.Name == n {
				ns.Established, ns.PeerCount, ns.Peers = st.Status.Established, st.Status.PeerCount, st.Status.Peers
			}
		}
		ps.Sessions = append(ps.Sessions, ns)
	}
	return ps
}

func condition(s *corev1.Service, typ string) *Condition {
	c := meta.FindStatusCondition(s.Status.Conditions, typ)
	if c == nil {
		return nil
	}
	return &Condition{Status: string(c.Status), Reason: c.Reason, Message: c.Message}
}

// PoolStatus is one pool's usage per family, as the controller counts it
// in the pool's status, and its Ready condition.
type PoolStatus struct {
	Name  string     `json:"name"`
	Ready *Condition `json:"ready,omitempty"`
	// Problems are the configuration's findings about the pool.
	Problems []string           `json:"problems,omitempty"`
	IPv4     *v1beta1.PoolUsage `json:"ipv4,omitempty"`
	IPv6     *v1beta1.PoolUsage `json:"ipv6,omitempty"`
}

// Pools reports every pool, sorted by name.
func (v *View) Pools() []PoolStatus {
	var out []PoolStatus
	for _, p := range v.c.Objects.Pools {
		ps := PoolStatus{Name: p.Name, IPv4: p.Status.IPv4, IPv6: p.Status.IPv6}
		if c := meta.FindStatusCondition(p.Status.Conditions, v1beta1.ConditionReady); c != nil {
			ps.Ready = &Condition{Status: string(c.Status), Reason: c.Reason, Message: c.Message}
		}
		for _, pr := range v.Problems {
			if pr.Kind == config.KindPool && pr.Name == p.Name {
				ps.Problems = append(ps.Problems, pr.Field+": "+pr.Message)
			}
		}
		out = append(out, ps)
	}
	slices.SortFunc(out, func(a, b PoolStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}
