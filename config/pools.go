package config

import (
	"fmt"
	"net/netip"
	"slices"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/ipam"
)

// Pool is a validated IPAddressPool.
type Pool struct {
	Name          string
	Labels        labels.Set
	Ranges        []ipam.Range
	AutoAssign    bool
	AvoidBuggyIPs bool
	// Terminating pools keep the addresses they lent but lend no more.
	Terminating bool
	// Restricted pools only admit Services matched by serviceAllocation.
	Restricted         bool
	Priority           int32
	Namespaces         []string
	NamespaceSelectors []labels.Selector
	ServiceSelectors   []labels.Selector
}

// Admits tells whether the pool may give addresses to a Service in
// namespace ns (with labels nsLabels) carrying labels svcLabels.
func (p *Pool) Admits(ns string, nsLabels, svcLabels labels.Set) bool {
	if !p.Restricted {
		return true
	}
	nsOK := len(p.Namespaces) == 0 && len(p.NamespaceSelectors) == 0
	if slices.Contains(p.Namespaces, ns) || MatchesAny(p.NamespaceSelectors, nsLabels) {
		nsOK = true
	}
	svcOK := len(p.ServiceSelectors) == 0 || MatchesAny(p.ServiceSelectors, svcLabels)
	return nsOK && svcOK
}

// Contains tells whether ip is one of the pool's addresses.
func (p *Pool) Contains(ip netip.Addr) bool {
	for _, r := range p.Ranges {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// MatchesAny tells whether set matches at least one of sels.
func MatchesAny(sels []labels.Selector, set labels.Set) bool {
	for _, s := range sels {
		if s.Matches(set) {
			return true
		}
	}
	return false
}

func parsePools(items []v1beta1.IPAddressPool, est map[string]bool, cfg *Config, ps *problems) {
	type accepted struct {
		name   string
		ranges []ipam.Range
	}
	var taken []accepted
	for _, obj := range byAge(items, KindPool, est, func(p *v1beta1.IPAddressPool) *metav1.ObjectMeta { return &p.ObjectMeta }) {
		name := obj.Name
		ok := true
		if len(obj.Spec.Addresses) == 0 {
			// Admission refuses this too; an empty pool must not look usable.
			ps.add(true, KindPool, name, "spec.addresses", v1beta1.ReasonInvalid, "a pool needs at least one address range")
			ok = false
		}
		var ranges []ipam.Range
		for i, a := range obj.Spec.Addresses {
			field := fmt.Sprintf("spec.addresses[%d]", i)
			r, err := ipam.ParseRange(string(a))
			if err != nil {
				ps.add(true, KindPool, name, field, v1beta1.ReasonInvalid, "%v", err)
				ok = false
				continue
			}
			for j, prev := range ranges {
				if overlaps(r, prev) {
					ps.add(true, KindPool, name, field, v1beta1.ReasonOverlap, "%s overlaps %s (spec.addresses[%d]) of the same pool", r, prev, j)
					ok = false
				}
			}
			for _, other := range taken {
				for _, or := range other.ranges {
					if overlaps(r, or) {
						ps.add(true, KindPool, name, field, v1beta1.ReasonOverlap, "%s overlaps %s of IPAddressPool %q", r, or, other.name)
						ok = false
					}
				}
			}
			ranges = append(ranges, r)
		}
		p := &Pool{
			Name:          name,
			Labels:        labels.Set(obj.Labels),
			Ranges:        ranges,
			AutoAssign:    obj.Spec.AutoAssign == nil || *obj.Spec.AutoAssign,
			AvoidBuggyIPs: obj.Spec.AvoidBuggyIPs,
			Terminating:   obj.DeletionTimestamp != nil,
		}
		if sa := obj.Spec.ServiceAllocation; sa != nil {
			p.Restricted = true
			p.Priority = sa.Priority
			p.Namespaces = slices.Clone(sa.Namespaces)
			var ok1, ok2 bool
			p.NamespaceSelectors, ok1 = selectors(KindPool, name, "spec.serviceAllocation.namespaceSelectors", sa.NamespaceSelectors, ps)
			p.ServiceSelectors, ok2 = selectors(KindPool, name, "spec.serviceAllocation.serviceSelectors", sa.ServiceSelectors, ps)
			ok = ok && ok1 && ok2
		}
		if !ok {
			continue
		}
		taken = append(taken, accepted{name, ranges})
		cfg.Pools[name] = p
	}
}

// resolvePools turns names and selectors into a set of pool names. An empty
// selection means every pool (nil). Unknown names are reported, not fatal:
// the pool may be created later.
func resolvePools(kind, name string, names []v1beta1.PoolName, sels []metav1.LabelSelector, cfg *Config, poolLabels map[string]labels.Set, ps *problems) (map[string]bool, bool) {
	if len(names) == 0 && len(sels) == 0 {
		return nil, true
	}
	out := map[string]bool{}
	for i, n := range names {
		if _, ok := cfg.Pools[string(n)]; !ok {
			ps.add(false, kind, name, fmt.Sprintf("spec.ipAddressPools[%d]", i), v1beta1.ReasonUnknownRef, "IPAddressPool %q does not exist or is invalid", n)
		}
		out[string(n)] = true
	}
	parsed, ok := selectors(kind, name, "spec.ipAddressPoolSelectors", sels, ps)
	for pool, l := range poolLabels {
		if MatchesAny(parsed, l) {
			out[pool] = true
		}
	}
	return out, ok
}

// sortedPools lists the existing pools of a selection (nil = all), sorted.
func sortedPools(sel map[string]bool, cfg *Config) []string {
	var out []string
	for _, n := range cfg.PoolNames() {
		if sel == nil || sel[n] {
			out = append(out, n)
		}
	}
	return out
}

func overlaps(a, b ipam.Range) bool {
	return a.First.Is4() == b.First.Is4() && a.First.Compare(b.Last) <= 0 && b.First.Compare(a.Last) <= 0
}

// alignedTo tells whether r is made of whole /bits blocks, so that
// announcing each address aggregated to /bits covers nothing outside r.
func alignedTo(r ipam.Range, bits int) bool {
	start, err := r.First.Prefix(bits)
	if err != nil || start.Addr() != r.First {
		return false
	}
	next := r.Last.Next()
	if !next.IsValid() {
		return true
	}
	end, err := next.Prefix(bits)
	return err == nil && end.Addr() == next
}
