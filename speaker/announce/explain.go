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

// Why a node does not announce an address, as Explain says.
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

// Explain says why node does not announce ip over proto, which the plans
// decided. It is for people (kubectl-ironlb), not for the decision: PlanL2
// and PlanBGP decide, and Explain only names the first rule, in the order
// they apply, that keeps node out. It returns "" when node does announce
// ip, and the plan's NotAnnounced reason when no advertisement of proto
// covers it.
func Explain(cfg *config.Config, nodes []NodeInfo, svcs []ServiceInfo, l2 L2Plan, bgp BGPPlan, proto Protocol, ip netip.Addr, node string) string {
	var users []ServiceInfo // the Services holding ip, with its pool each
	var pools []string
	for _, s := range svcs {
		if k := slices.Index(s.IPs, ip); k >= 0 {
			users = append(users, s)
			pool := ""
			if k < len(s.Pools) {
				pool = s.Pools[k]
			}
			pools = append(pools, pool)
		}
	}
	switch proto {
	case L2:
		if a, ok := l2.Addresses[ip]; ok && a.Node == node {
			return ""
		}
	case BGP:
		if a, ok := bgp.Addresses[ip]; ok && slices.Contains(a.Nodes, node) {
			return ""
		}
	}
	i := slices.IndexFunc(nodes, func(n NodeInfo) bool { return n.Name == node })
	if i < 0 {
		return WhyNodeNotReady // not a Node at all
	}
	n := nodes[i]
	switch {
	case !n.Ready:
		return WhyNodeNotReady
	case !n.SpeakerAlive:
		return WhySpeakerDown
	case n.Excluded:
		return WhyExcluded
	case n.NetworkUnavailable:
		return WhyNetworkUnavailable
	}
	for k, s := range users {
		advs := coveringNodeSelectors(cfg, proto, s, pools[k])
		if advs == nil {
			return ReasonNoAdvertisement
		}
		if !selectsAny(advs, n.Labels) {
			if k == 0 {
				return WhyNotSelected
			}
			return WhySharedElsewhere
		}
		if s.Local && !s.EndpointNodes[node] {
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
