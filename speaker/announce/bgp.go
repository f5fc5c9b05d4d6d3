package announce

import (
	"net/netip"
	"slices"
	"sort"
	"strings"

	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config"
)

// BGPAssignment is who announces one address over BGP.
type BGPAssignment struct {
	// Nodes announcing the address, sorted: all eligible nodes, so the
	// routers spread traffic over them (ECMP).
	Nodes []string
	// Advertisements per node: those that cover every Service of the
	// address and select the node. They shape the route (aggregation,
	// communities, local preference, peers).
	Advertisements map[string][]*config.BGPAdvertisement
	// Services using the address, sorted.
	Services []string
}

// BGPPlan is the BGP decision for the whole cluster: every speaker
// computes it, acts on its own part and reports on the Services.
type BGPPlan struct {
	Addresses map[netip.Addr]BGPAssignment
	// NotAnnounced gives, per Service key covered by a BGPAdvertisement,
	// why no node announces one of its addresses.
	NotAnnounced map[string]string
}

// Announcement is one address a node announces and the advertisements
// that shape its route.
type Announcement struct {
	IP             netip.Addr
	Advertisements []*config.BGPAdvertisement
}

// ForNode lists what node announces, sorted by address.
func (p BGPPlan) ForNode(node string) []Announcement {
	var out []Announcement
	for ip, a := range p.Addresses {
		if advs, ok := a.Advertisements[node]; ok {
			out = append(out, Announcement{IP: ip, Advertisements: advs})
		}
	}
	slices.SortFunc(out, func(a, b Announcement) int { return a.IP.Compare(b.IP) })
	return out
}

// PlanBGP decides, for every address a BGPAdvertisement covers, the nodes
// that announce it. Unlike layer 2 there is no single owner: every
// eligible node announces (externalTrafficPolicy Cluster), or every node
// with a ready endpoint (Local). Cordoned nodes withdraw while another
// node can announce, so a drain moves traffic away before its pods are
// evicted. An address shared by several Services is announced where all
// of them may be.
func PlanBGP(cfg *config.Config, nodes []NodeInfo, svcs []ServiceInfo) BGPPlan {
	plan := BGPPlan{Addresses: map[netip.Addr]BGPAssignment{}, NotAnnounced: map[string]string{}}
	nodeLabels := make(map[string]labels.Set, len(nodes))
	for _, n := range nodes {
		nodeLabels[n.Name] = n.Labels
	}
	plain := plainNodes(nodes)
	type acc struct {
		advs     map[string][]*config.BGPAdvertisement // nil until the first Service narrows it
		services []string
		reason   string
	}
	perIP := map[netip.Addr]*acc{}
	sorted := slices.Clone(svcs)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Key < sorted[j].Key })
	for _, s := range sorted {
		for k, ip := range s.IPs {
			pool := ""
			if k < len(s.Pools) {
				pool = s.Pools[k]
			}
			advs := matchingBGP(cfg, s, pool)
			if len(advs) == 0 {
				continue // not a BGP address (maybe a layer-2 one)
			}
			perNode := map[string][]*config.BGPAdvertisement{}
			var local func(string) bool
			if s.Local {
				local = func(n string) bool { return s.EndpointNodes[n] }
			}
			selects := func(adv *config.BGPAdvertisement, node string) bool {
				return len(adv.NodeSelectors) == 0 || config.MatchesAny(adv.NodeSelectors, nodeLabels[node])
			}
			anyAdv := func(n Node) bool {
				for _, adv := range advs {
					if selects(adv, n.Name) {
						return true
					}
				}
				return false
			}
			for _, n := range Eligible(plain, anyAdv, local) {
				for _, adv := range advs {
					if selects(adv, n) {
						perNode[n] = append(perNode[n], adv)
					}
				}
			}
			a := perIP[ip]
			if a == nil {
				a = &acc{}
				perIP[ip] = a
			}
			a.services = append(a.services, s.Key)
			if len(perNode) == 0 && a.reason == "" {
				a.reason = ReasonNoEligibleNode
				if s.Local && len(s.EndpointNodes) == 0 {
					a.reason = ReasonNoLocalEndpoint
				}
			}
			if a.advs == nil {
				a.advs = perNode
				continue
			}
			for n, have := range a.advs {
				more, ok := perNode[n]
				if !ok {
					delete(a.advs, n)
					continue
				}
				for _, adv := range more {
					if !slices.Contains(have, adv) {
						have = append(have, adv)
					}
				}
				a.advs[n] = have
			}
		}
	}
	for ip, a := range perIP {
		if len(a.advs) == 0 {
			notAnnounced(plan.NotAnnounced, a.services, a.reason)
			continue
		}
		nodes := make([]string, 0, len(a.advs))
		for n, advs := range a.advs {
			nodes = append(nodes, n)
			slices.SortFunc(advs, func(x, y *config.BGPAdvertisement) int { return strings.Compare(x.Name, y.Name) })
		}
		sort.Strings(nodes)
		plan.Addresses[ip] = BGPAssignment{Nodes: nodes, Advertisements: a.advs, Services: a.services}
	}
	return plan
}

// matchingBGP lists the BGP advertisements that cover a Service's
// addresses from pool.
func matchingBGP(cfg *config.Config, s ServiceInfo, pool string) []*config.BGPAdvertisement {
	return filter(cfg.BGPAdvertisements, func(a *config.BGPAdvertisement) bool { return covers(a.Pools, a.ServiceSelectors, s, pool) })
}
