// Package config turns the whole set of ironlb objects into one immutable,
// validated Config. It is pure: no client, no clock, no I/O, so every rule
// that needs more than one object (overlapping pools, dangling references,
// conflicting advertisements) is decided here and unit-tested here; the
// controller only reports the Problems as conditions and Events.
package config

import (
	"fmt"
	"net/netip"
	"sort"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/ipam"
)

// Objects is everything the parser looks at, as read from the API server.
type Objects struct {
	Pools             []v1beta1.IPAddressPool
	L2Advertisements  []v1beta1.L2Advertisement
	BGPPeers          []v1beta1.BGPPeer
	BGPAdvertisements []v1beta1.BGPAdvertisement
	BFDProfiles       []v1beta1.BFDProfile
	Communities       []v1beta1.Community
	// Established names the objects ("Kind/name") that were valid in the
	// previous parse. They win conflicts against newcomers regardless of
	// age: what works keeps working. (Creation timestamps have one-second
	// resolution, so age alone often ties.)
	Established map[string]bool
}

// Problem is one thing wrong with one object. Fatal problems keep the object
// out of the Config; the others are reported but the object still works,
// because tearing down a working announcement over, say, a reference to a
// pool that does not exist yet would turn a typo into an outage.
type Problem struct {
	Kind, Name string
	// Field is the JSON path inside the object, e.g. "spec.addresses[1]".
	Field   string
	Reason  string
	Message string
	Fatal   bool
}

func (p Problem) Error() string {
	return fmt.Sprintf("%s %q: %s: %s", p.Kind, p.Name, p.Field, p.Message)
}

// Config is the validated configuration. It is never modified after Parse
// returns, so readers share it without locks.
type Config struct {
	Pools             map[string]*Pool
	L2Advertisements  []*L2Advertisement
	BGPPeers          map[string]*BGPPeer
	BGPAdvertisements []*BGPAdvertisement
	BFDProfiles       map[string]*BFDProfile
	// Valid names every object ("Kind/name") without a fatal problem; pass
	// it as the next parse's Objects.Established.
	Valid map[string]bool
}

// IPAMPools lists the pools in the allocator's terms, terminating pools
// included: their addresses stay accounted for until released.
func (c *Config) IPAMPools() []ipam.Pool {
	out := make([]ipam.Pool, 0, len(c.Pools))
	for _, name := range c.PoolNames() {
		p := c.Pools[name]
		out = append(out, ipam.Pool{Name: p.Name, Ranges: p.Ranges, AvoidBuggyIPs: p.AvoidBuggyIPs})
	}
	return out
}

// PoolNames returns the valid pools' names, sorted.
func (c *Config) PoolNames() []string {
	names := make([]string, 0, len(c.Pools))
	for n := range c.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// PoolOf returns the pool containing ip, or nil.
func (c *Config) PoolOf(ip netip.Addr) *Pool {
	for _, n := range c.PoolNames() {
		if c.Pools[n].Contains(ip) {
			return c.Pools[n]
		}
	}
	return nil
}

// Candidates lists, in the order to try them, the pools that may
// auto-assign to a Service: restricted pools admitting it by priority, then
// unrestricted pools, each group by name. Pools with autoAssign false and
// terminating pools are left out.
func (c *Config) Candidates(ns string, nsLabels, svcLabels labels.Set) []string {
	var restricted, open []*Pool
	for _, n := range c.PoolNames() {
		p := c.Pools[n]
		if !p.AutoAssign || p.Terminating || !p.Admits(ns, nsLabels, svcLabels) {
			continue
		}
		if p.Restricted {
			restricted = append(restricted, p)
		} else {
			open = append(open, p)
		}
	}
	sort.SliceStable(restricted, func(i, j int) bool { return restricted[i].Priority < restricted[j].Priority })
	out := make([]string, 0, len(restricted)+len(open))
	for _, p := range append(restricted, open...) {
		out = append(out, p.Name)
	}
	return out
}

// problems collects Problems for one Parse call.
type problems []Problem

func (ps *problems) add(fatal bool, kind, name, field, reason, format string, args ...any) {
	*ps = append(*ps, Problem{Kind: kind, Name: name, Field: field, Reason: reason, Message: fmt.Sprintf(format, args...), Fatal: fatal})
}

// Parse validates objs as a whole. It returns the Config made of every
// object without a fatal problem, and every problem found. It never fails
// as a whole: one bad object must not take the others down.
func Parse(objs Objects) (*Config, []Problem) {
	var ps problems
	cfg := &Config{
		Pools:       map[string]*Pool{},
		BGPPeers:    map[string]*BGPPeer{},
		BFDProfiles: map[string]*BFDProfile{},
	}
	parsePools(objs.Pools, objs.Established, cfg, &ps)
	parseBFD(objs.BFDProfiles, cfg, &ps)
	aliases := parseCommunities(objs.Communities, objs.Established, &ps)
	poolLabels := map[string]labels.Set{}
	for n, p := range cfg.Pools {
		poolLabels[n] = p.Labels
	}
	parseL2(objs.L2Advertisements, objs.Established, cfg, poolLabels, &ps)
	parsePeers(objs.BGPPeers, objs.Established, cfg, &ps)
	parseBGPAdvs(objs.BGPAdvertisements, objs.Established, cfg, poolLabels, aliases, &ps)
	fatal := map[string]bool{}
	for _, p := range ps {
		if p.Fatal {
			fatal[p.Kind+"/"+p.Name] = true
		}
	}
	cfg.Valid = map[string]bool{}
	objs.Each(func(kind string, o Object) {
		if k := kind + "/" + o.GetName(); !fatal[k] {
			cfg.Valid[k] = true
		}
	})
	return cfg, ps
}

// byAge sorts objects established first, then oldest first (name breaks
// ties), so that when two objects conflict the one that was there first
// keeps working.
func byAge[T any](items []T, kind string, established map[string]bool, meta func(*T) *metav1.ObjectMeta) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := meta(out[i]), meta(out[j])
		if ea, eb := established[kind+"/"+a.Name], established[kind+"/"+b.Name]; ea != eb {
			return ea
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	return out
}

func selectors(kind, name, field string, in []metav1.LabelSelector, ps *problems) ([]labels.Selector, bool) {
	out := make([]labels.Selector, 0, len(in))
	ok := true
	for i := range in {
		s, err := metav1.LabelSelectorAsSelector(&in[i])
		if err != nil {
			ps.add(true, kind, name, fmt.Sprintf("%s[%d]", field, i), v1beta1.ReasonInvalid, "invalid label selector: %v", err)
			ok = false
			continue
		}
		out = append(out, s)
	}
	return out, ok
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}
