package announce

import (
	"net/netip"
	"slices"
	"sort"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config"
)

// NodeInfo is a node as the plan sees it: health plus labels for the
// advertisements' node selectors.
type NodeInfo struct {
	Node
	Labels labels.Set
}

// ServiceInfo is a LoadBalancer Service with assigned addresses.
type ServiceInfo struct {
	Key string // namespace/name
	IPs []netip.Addr
	// Pools[k] is the pool IPs[k] came from: a dual-stack Service may take
	// its families from two pools, each with its own advertisements.
	Pools  []string
	Labels labels.Set
	// Local is externalTrafficPolicy: Local; EndpointNodes then lists the
	// nodes with a ready endpoint of the Service.
	Local         bool
	EndpointNodes map[string]bool
}

// Reasons a Service is not announced in layer 2.
const (
	ReasonNoAdvertisement = "NoAdvertisement"
	ReasonNoEligibleNode  = "NoEligibleNode"
	ReasonNoLocalEndpoint = "NoLocalEndpoints"
)

// L2Assignment is who announces one address, and where.
type L2Assignment struct {
	Node string
	// Interfaces to announce on; empty means every suitable interface.
	Interfaces []string
	// Services using the address (more than one when shared), sorted.
	Services []string
}

// L2Plan is the layer-2 decision for the whole cluster. Every speaker
// computes the same plan and acts on its own part of it.
type L2Plan struct {
	Addresses map[netip.Addr]L2Assignment
	// NotAnnounced gives, per Service key, why none of its addresses is
	// announced.
	NotAnnounced map[string]string
}

// ForNode returns, per interface ("" = every suitable one), the addresses
// node must announce.
func (p L2Plan) ForNode(node string) map[string][]netip.Addr {
	out := map[string][]netip.Addr{}
	for ip, a := range p.Addresses {
		if a.Node != node {
			continue
		}
		ifaces := a.Interfaces
		if len(ifaces) == 0 {
			ifaces = []string{""}
		}
		for _, i := range ifaces {
			out[i] = append(out[i], ip)
		}
	}
	for i := range out {
		slices.SortFunc(out[i], func(a, b netip.Addr) int { return a.Compare(b) })
	}
	return out
}

// PlanL2 decides, for every announced address, the one node that answers
// for it. An address shared by several Services is announced where all of
// them may be announced (the intersection of their eligible nodes), so a
// shared address never splits across nodes.
func PlanL2(cfg *config.Config, nodes []NodeInfo, svcs []ServiceInfo) L2Plan {
	plan := L2Plan{Addresses: map[netip.Addr]L2Assignment{}, NotAnnounced: map[string]string{}}
	type acc struct {
		eligible   map[string]bool // nil until the first Service narrows it
		allIfaces  bool
		interfaces map[string]bool
		services   []string
		reason     string
	}
	nodeLabels := make(map[string]labels.Set, len(nodes))
	for _, n := range nodes {
		nodeLabels[n.Name] = n.Labels
	}
	plain := plainNodes(nodes)
	perIP := map[netip.Addr]*acc{}
	sorted := slices.Clone(svcs)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Key < sorted[j].Key })
	// decide returns the nodes that may announce the addresses of s that
	// came from pool, the interfaces to use (all = no restriction), or why
	// none may.
	decide := func(s ServiceInfo, pool string) (names []string, ifaces map[string]bool, allIfaces bool, reason string) {
		advs := matchingL2(cfg, s, pool)
		ifaces = map[string]bool{}
		if len(advs) == 0 {
			return nil, ifaces, false, ReasonNoAdvertisement
		}
		seen := map[string]bool{}
		for _, adv := range advs {
			match := func(n Node) bool { return true }
			if len(adv.NodeSelectors) > 0 {
				match = func(n Node) bool { return config.MatchesAny(adv.NodeSelectors, nodeLabels[n.Name]) }
			}
			var local func(string) bool
			if s.Local {
				local = func(n string) bool { return s.EndpointNodes[n] }
			}
			for _, n := range Eligible(plain, match, local) {
				if !seen[n] {
					seen[n] = true
					names = append(names, n)
				}
			}
			if len(adv.Interfaces) == 0 {
				allIfaces = true
			}
			for _, i := range adv.Interfaces {
				ifaces[i] = true
			}
		}
		if len(names) == 0 {
			reason = ReasonNoEligibleNode
			if s.Local && len(s.EndpointNodes) == 0 {
				reason = ReasonNoLocalEndpoint
			}
		}
		return names, ifaces, allIfaces, reason
	}
	for _, s := range sorted {
		for k, ip := range s.IPs {
			pool := ""
			if k < len(s.Pools) {
				pool = s.Pools[k]
			}
			names, ifaces, allIfaces, reason := decide(s, pool)
			a := perIP[ip]
			if a == nil {
				a = &acc{interfaces: map[string]bool{}}
				perIP[ip] = a
			}
			a.services = append(a.services, s.Key)
			if reason != "" {
				a.reason = reason
				a.eligible = map[string]bool{}
				continue
			}
			if a.eligible == nil {
				a.eligible = map[string]bool{}
				for _, n := range names {
					a.eligible[n] = true
				}
			} else {
				for n := range a.eligible {
					if !slices.Contains(names, n) {
						delete(a.eligible, n)
					}
				}
			}
			a.allIfaces = a.allIfaces || allIfaces
			for i := range ifaces {
				a.interfaces[i] = true
			}
		}
	}
	for ip, a := range perIP {
		var eligible []string
		for n := range a.eligible {
			eligible = append(eligible, n)
		}
		sort.Strings(eligible)
		owner, ok := Owner(ip, eligible)
		if !ok {
			notAnnounced(plan.NotAnnounced, a.services, a.reason)
			continue
		}
		var ifaces []string
		for i := range a.interfaces {
			if !a.allIfaces {
				ifaces = append(ifaces, i)
			}
		}
		sort.Strings(ifaces)
		plan.Addresses[ip] = L2Assignment{Node: owner, Interfaces: ifaces, Services: a.services}
	}
	return plan
}

// matchingL2 lists the L2 advertisements that cover a Service's addresses
// from pool.
func matchingL2(cfg *config.Config, s ServiceInfo, pool string) []*config.L2Advertisement {
	return filter(cfg.L2Advertisements, func(a *config.L2Advertisement) bool { return covers(a.Pools, a.ServiceSelectors, s, pool) })
}

// covers tells whether an advertisement selecting pools (nil: every pool)
// and Services (no selector: every Service) covers the addresses s got
// from pool.
func covers(pools map[string]bool, services []labels.Selector, s ServiceInfo, pool string) bool {
	return (pools == nil || pools[pool]) && (len(services) == 0 || config.MatchesAny(services, s.Labels))
}

// notAnnounced records why services are not announced (no reason given:
// no eligible node).
func notAnnounced(into map[string]string, services []string, reason string) {
	if reason == "" {
		reason = ReasonNoEligibleNode
	}
	for _, k := range services {
		into[k] = reason
	}
}

func filter[T any](in []T, keep func(T) bool) []T {
	var out []T
	for _, v := range in {
		if keep(v) {
			out = append(out, v)
		}
	}
	return out
}

func plainNodes(nodes []NodeInfo) []Node {
	out := make([]Node, len(nodes))
	for i, n := range nodes {
		out[i] = n.Node
	}
	return out
}
