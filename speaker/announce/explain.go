package announce

import (
	"net/netip"
	"slices"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config"
)

// Protocol is layer 2 or BGP.
type Protocol string

// The protocols a plan decides.
const (
	L2  Protocol = "layer2"
	BGP Protocol = "bgp"
)

// Why a node does not announce an address, as Explainer.Why says.
const (
	WhyNodeNotReady       = "NodeNotReady"
	WhySpeakerDown        = "SpeakerNotRunning"
	WhyExcluded           = "ExcludedByLabel"
	WhyNetworkUnavailable = "NetworkUnavailable"
	WhyNotSelected        = "NodeNotSelected"
	WhyNoLocalEndpoint    = "NoLocalEndpoint"
	WhyCordoned           = "Cordoned"
	WhySharedElsewhere    = "SharedAddress"
	WhyNotElected         = "NotElected"
)

// Explainer says why a node does not announce an address, which the
// plans decided. It is for people (kubectl-ironlb), not for the decision:
// PlanL2 and PlanBGP decide, and Why only names the first rule, in the
// order they apply, that keeps the node out. It indexes the plan's
// Services by address and its nodes by name once, so explaining every
// address on every node stays linear in a large cluster.
type Explainer struct {
	cfg   *config.Config
	nodes map[string]NodeInfo
	users map[netip.Addr][]user // the Services holding each address
	l2    L2Plan
	bgp   BGPPlan
}

// user is a Service holding an address, from pool.
type user struct {
	svc  ServiceInfo
	pool string
}

// NewExplainer indexes the inputs and results of one plan.
func NewExplainer(cfg *config.Config, nodes []NodeInfo, svcs []ServiceInfo, l2 L2Plan, bgp BGPPlan) *Explainer {
	e := &Explainer{cfg: cfg, nodes: make(map[string]NodeInfo, len(nodes)), users: map[netip.Addr][]user{}, l2: l2, bgp: bgp}
	for _, n := range nodes {
		if _, dup := e.nodes[n.Name]; !dup {
			e.nodes[n.Name] = n
		}
	}
	for _, s := range svcs {
		for k, ip := range s.IPs {
			if slices.Index(s.IPs, ip) != k {
				continue // the same address twice in one Service
			}
			pool := ""
			if k < len(s.Pools) {
				pool = s.Pools[k]
			}
			e.users[ip] = append(e.users[ip], user{s, pool})
		}
	}
	return e
}

// Why says why node does not announce ip over proto: "" when it does,
// and the plan's NotAnnounced reason when no advertisement of proto
// covers ip.
func (e *Explainer) Why(proto Protocol, ip netip.Addr, node string) string {
	switch proto {
	case L2:
		if a, ok := e.l2.Addresses[ip]; ok && a.Node == node {
			return ""
		}
	case BGP:
		if a, ok := e.bgp.Addresses[ip]; ok && slices.Contains(a.Nodes, node) {
			return ""
		}
	}
	n, ok := e.nodes[node]
	switch {
	case !ok:
		return WhyNodeNotReady // not a Node at all
	case !n.Ready:
		return WhyNodeNotReady
	case !n.SpeakerAlive:
		return WhySpeakerDown
	case n.Excluded:
		return WhyExcluded
	case n.NetworkUnavailable:
		return WhyNetworkUnavailable
	}
	for k, u := range e.users[ip] {
		advs := coveringNodeSelectors(e.cfg, proto, u.svc, u.pool)
		if advs == nil {
			return ReasonNoAdvertisement
		}
		if !selectsAny(advs, n.Labels) {
			if k == 0 {
				return WhyNotSelected
			}
			return WhySharedElsewhere
		}
		if u.svc.Local && !u.svc.EndpointNodes[node] {
			if k == 0 {
				return WhyNoLocalEndpoint
			}
			return WhySharedElsewhere
		}
	}
	if n.Unschedulable {
		return WhyCordoned
	}
	if proto == L2 {
		return WhyNotElected
	}
	return WhySharedElsewhere
}

// coveringNodeSelectors lists the node selectors of each advertisement of
// proto covering s's address from pool (an empty list: every node), nil
// when none covers it.
func coveringNodeSelectors(cfg *config.Config, proto Protocol, s ServiceInfo, pool string) [][]labels.Selector {
	var out [][]labels.Selector
	if proto == L2 {
		for _, a := range cfg.L2Advertisements {
			if covers(a.Pools, a.ServiceSelectors, s, pool) {
				out = append(out, a.NodeSelectors)
			}
		}
		return out
	}
	for _, a := range matchingBGP(cfg, s, pool) {
		out = append(out, a.NodeSelectors)
	}
	return out
}

// selectsAny tells whether any of the advertisements' node selectors
// accepts a node with these labels.
func selectsAny(advs [][]labels.Selector, node labels.Set) bool {
	for _, sel := range advs {
		if len(sel) == 0 || config.MatchesAny(sel, node) {
			return true
		}
	}
	return false
}

// Covers tells whether an advertisement of proto covers s's address from
// pool: whether that protocol announces it at all.
func Covers(cfg *config.Config, proto Protocol, s ServiceInfo, pool string) bool {
	return coveringNodeSelectors(cfg, proto, s, pool) != nil
}
