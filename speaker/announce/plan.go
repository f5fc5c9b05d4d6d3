package announce

import (
	"net/netip"
	"slices"
	"strings"

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
//
// Every speaker runs it on every liveness change, so it is written for
// thousands of Services: the nodes an advertisement allows are computed
// once per plan, not per Service, and Services that match the same
// advertisements share one decision.
func PlanL2(cfg *config.Config, nodes []NodeInfo, svcs []ServiceInfo) L2Plan {
	plan := L2Plan{Addresses: make(map[netip.Addr]L2Assignment, len(svcs)), NotAnnounced: map[string]string{}}
	type acc struct {
		// eligible is sorted and shared with the decisions: replaced,
		// never modified. narrowed: a Service has set it.
		eligible   []string
		hashes     []nodeHash // eligible's, for Owner
		narrowed   bool
		allIfaces  bool
		interfaces []string
		services   []string
		reason     string
	}
	pl := newL2Planner(cfg, nodes)
	perIP := make(map[netip.Addr]*acc, len(svcs))
	sorted := svcs
	if !slices.IsSortedFunc(svcs, byKey) {
		sorted = slices.Clone(svcs)
		slices.SortFunc(sorted, byKey)
	}
	for _, s := range sorted {
		for k, ip := range s.IPs {
			pool := ""
			if k < len(s.Pools) {
				pool = s.Pools[k]
			}
			d := pl.decide(s, pool)
			a := perIP[ip]
			if a == nil {
				a = &acc{}
				perIP[ip] = a
			}
			a.services = append(a.services, s.Key)
			if d.reason != "" {
				a.reason = d.reason
				a.eligible, a.hashes, a.narrowed = nil, nil, true
				continue
			}
			if !a.narrowed {
				a.eligible, a.hashes, a.narrowed = d.names, d.hashes, true
			} else {
				a.eligible = intersectSorted(a.eligible, d.names)
				a.hashes = pl.hashesOf(a.eligible)
			}
			a.allIfaces = a.allIfaces || d.allIfaces
			a.interfaces = unionSorted(a.interfaces, d.ifaces)
		}
	}
	for ip, a := range perIP {
		owner, ok := ownerHashed(ip, a.hashes)
		if !ok {
			notAnnounced(plan.NotAnnounced, a.services, a.reason)
			continue
		}
		var ifaces []string
		if !a.allIfaces {
			ifaces = a.interfaces
		}
		plan.Addresses[ip] = L2Assignment{Node: owner, Interfaces: ifaces, Services: a.services}
	}
	return plan
}

func byKey(a, b ServiceInfo) int { return strings.Compare(a.Key, b.Key) }

// l2Decision is which nodes may announce a Service's addresses from one
// pool, on which interfaces, or why none may.
type l2Decision struct {
	names     []string // sorted; shared, never modified
	hashes    []nodeHash
	ifaces    []string // sorted union of the advertisements' interfaces
	allIfaces bool     // an advertisement names no interface: all of them
	reason    string
}

// l2Planner holds what one PlanL2 computes once and reuses per Service.
type l2Planner struct {
	cfg   *config.Config
	plain []Node
	// advNodes[k] are the nodes advertisement k's node selectors accept.
	advNodes [][]Node
	hashOf   map[string]nodeHash
	// memo holds the decisions of Services without externalTrafficPolicy
	// Local, by the advertisements they match.
	memo map[string]l2Decision
}

func newL2Planner(cfg *config.Config, nodes []NodeInfo) *l2Planner {
	pl := &l2Planner{
		cfg: cfg, plain: plainNodes(nodes),
		advNodes: make([][]Node, len(cfg.L2Advertisements)),
		memo:     map[string]l2Decision{},
		hashOf:   make(map[string]nodeHash, len(nodes)),
	}
	labelsOf := make(map[string]labels.Set, len(nodes))
	for _, n := range nodes {
		labelsOf[n.Name] = n.Labels
		pl.hashOf[n.Name] = hashNode(n.Name)
	}
	for k, adv := range cfg.L2Advertisements {
		if len(adv.NodeSelectors) == 0 {
			pl.advNodes[k] = pl.plain
			continue
		}
		for _, n := range pl.plain {
			if config.MatchesAny(adv.NodeSelectors, labelsOf[n.Name]) {
				pl.advNodes[k] = append(pl.advNodes[k], n)
			}
		}
	}
	return pl
}

// decide returns the decision for the addresses s got from pool.
func (pl *l2Planner) decide(s ServiceInfo, pool string) l2Decision {
	var buf [8]byte
	matched := buf[:0] // advertisement indices; at most 255 advertisements are memoised
	var advs []int
	for k, adv := range pl.cfg.L2Advertisements {
		if covers(adv.Pools, adv.ServiceSelectors, s, pool) {
			advs = append(advs, k)
			matched = append(matched, byte(k))
		}
	}
	if len(advs) == 0 {
		return l2Decision{reason: ReasonNoAdvertisement}
	}
	memoize := !s.Local && len(pl.cfg.L2Advertisements) < 256
	if memoize {
		if d, ok := pl.memo[string(matched)]; ok {
			return d
		}
	}
	var d l2Decision
	var local func(string) bool
	if s.Local {
		local = func(n string) bool { return s.EndpointNodes[n] }
	}
	for _, k := range advs {
		adv := pl.cfg.L2Advertisements[k]
		d.names = unionSorted(d.names, Eligible(pl.advNodes[k], nil, local))
		if len(adv.Interfaces) == 0 {
			d.allIfaces = true
		}
		d.ifaces = unionSorted(d.ifaces, sortedCopy(adv.Interfaces))
	}
	d.hashes = pl.hashesOf(d.names)
	if len(d.names) == 0 {
		d.reason = ReasonNoEligibleNode
		if s.Local && len(s.EndpointNodes) == 0 {
			d.reason = ReasonNoLocalEndpoint
		}
	}
	if memoize {
		pl.memo[string(matched)] = d
	}
	return d
}

func (pl *l2Planner) hashesOf(names []string) []nodeHash {
	out := make([]nodeHash, len(names))
	for i, n := range names {
		out[i] = pl.hashOf[n]
	}
	return out
}

func sortedCopy(in []string) []string {
	if len(in) == 0 {
		return nil
	}
	out := slices.Clone(in)
	slices.Sort(out)
	return slices.Compact(out)
}

// unionSorted merges two sorted, duplicate-free lists. It returns one of
// them unchanged when the other adds nothing, and never modifies either.
func unionSorted(a, b []string) []string {
	if len(b) == 0 {
		return a
	}
	if len(a) == 0 {
		return b
	}
	out := make([]string, 0, len(a)+len(b))
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := strings.Compare(a[i], b[j]); {
		case c < 0:
			out = append(out, a[i])
			i++
		case c > 0:
			out = append(out, b[j])
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	out = append(out, a[i:]...)
	return append(out, b[j:]...)
}

// intersectSorted returns the names in both sorted lists, as a new list.
func intersectSorted(a, b []string) []string {
	var out []string
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		switch c := strings.Compare(a[i], b[j]); {
		case c < 0:
			i++
		case c > 0:
			j++
		default:
			out = append(out, a[i])
			i++
			j++
		}
	}
	return out
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
