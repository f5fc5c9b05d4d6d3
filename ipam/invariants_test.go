package ipam

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
)

// exhaustiveLimit is the largest pool family (in addresses) whose coverage
// checkInvariants verifies address by address; bigger ones get the counting
// argument only.
const exhaustiveLimit = 1 << 16

// checkInvariants verifies the allocator's internal consistency:
//   - no IP is held by two incompatible services;
//   - every non-orphan holding is inside its pool, and orphans are outside all;
//   - per pool and family, the free set and the held IPs are disjoint and,
//     with the .0/.255 exclusions, cover exactly the pool's ranges;
//   - free sets are canonical (sorted, disjoint, maximal intervals);
//   - counters, the address-to-pool index and the sharing index agree with
//     the holdings.
func checkInvariants(a *Allocator) error {
	// The index: sorted, entries belong to live pools, and cover exactly
	// the configured ranges.
	if !slices.IsSortedFunc(a.index, func(x, y poolRange) int { return x.First.Compare(y.First) }) {
		return fmt.Errorf("index not sorted")
	}
	nRanges := 0
	for name, p := range a.pools {
		if p.name != name {
			return fmt.Errorf("pool %q stored under %q", p.name, name)
		}
		for i := range p.fam {
			nRanges += len(p.fam[i].ranges)
		}
	}
	if nRanges != len(a.index) {
		return fmt.Errorf("index has %d entries, pools have %d ranges", len(a.index), nRanges)
	}
	for _, r := range a.index {
		if a.pools[r.pool.name] != r.pool {
			return fmt.Errorf("index range %s points to a dead pool %q", r.Range, r.pool.name)
		}
	}
	// poolOf by linear scan, independent of the index.
	scanPoolOf := func(ip netip.Addr) *pool {
		for _, p := range a.pools {
			for _, r := range p.family(FamilyOf(ip)).ranges {
				if r.Contains(ip) {
					return p
				}
			}
		}
		return nil
	}

	// Services and their holdings.
	for key, st := range a.services {
		if st.svc.Key != key {
			return fmt.Errorf("service %q stored under %q", st.svc.Key, key)
		}
		if len(st.holdings) == 0 {
			return fmt.Errorf("service %q holds nothing but is recorded", key)
		}
		var seen [numFamilies]bool
		for _, h := range st.holdings {
			f := FamilyOf(h.IP)
			if seen[f.index()] {
				return fmt.Errorf("service %q holds two %s addresses", key, f)
			}
			seen[f.index()] = true
			is := a.ips[h.IP]
			if is == nil {
				return fmt.Errorf("service %q holds %s, which has no state", key, h.IP)
			}
			if !slices.Contains(is.holders, st) {
				return fmt.Errorf("service %q holds %s but is not among its holders", key, h.IP)
			}
			if h.Orphan != (is.pool == nil) {
				return fmt.Errorf("service %q: holding %s has Orphan=%v but pool %v", key, h.IP, h.Orphan, is.pool)
			}
			if !h.Orphan && h.Pool != is.pool.name {
				return fmt.Errorf("service %q: holding %s says pool %q, IP is in %q", key, h.IP, h.Pool, is.pool.name)
			}
		}
	}

	// Held IPs.
	wantSharing := map[string]map[netip.Addr]int{}
	type counts struct{ held, assigned int }
	perPool := map[*pool]*[numFamilies]counts{}
	for ip, is := range a.ips {
		if len(is.holders) == 0 {
			return fmt.Errorf("IP %s has state but no holders", ip)
		}
		if !slices.IsSortedFunc(is.holders, func(x, y *svcState) int { return strings.Compare(x.svc.Key, y.svc.Key) }) {
			return fmt.Errorf("IP %s: holders not sorted", ip)
		}
		for i, h := range is.holders {
			if a.services[h.svc.Key] != h {
				return fmt.Errorf("IP %s: holder %q is not a live service", ip, h.svc.Key)
			}
			if !slices.ContainsFunc(h.holdings, func(x Holding) bool { return x.IP == ip }) {
				return fmt.Errorf("IP %s: holder %q does not hold it", ip, h.svc.Key)
			}
			for _, o := range is.holders[i+1:] {
				if o.svc.Key == h.svc.Key {
					return fmt.Errorf("IP %s: holder %q listed twice", ip, h.svc.Key)
				}
				if r, _, ok := conflict(&h.svc, &o.svc); !ok {
					return fmt.Errorf("IP %s held by incompatible %q and %q: %s", ip, h.svc.Key, o.svc.Key, r)
				}
				if r, _, ok := conflict(&o.svc, &h.svc); !ok {
					return fmt.Errorf("IP %s held by incompatible %q and %q: %s", ip, o.svc.Key, h.svc.Key, r)
				}
			}
			if k := h.svc.SharingKey; k != "" {
				if wantSharing[k] == nil {
					wantSharing[k] = map[netip.Addr]int{}
				}
				wantSharing[k][ip]++
			}
		}
		if p := scanPoolOf(ip); p != is.pool {
			return fmt.Errorf("IP %s attributed to %v, inside %v", ip, poolName(is.pool), poolName(p))
		}
		if is.pool != a.poolOf(ip) {
			return fmt.Errorf("IP %s: index lookup disagrees", ip)
		}
		if p := is.pool; p != nil {
			if perPool[p] == nil {
				perPool[p] = &[numFamilies]counts{}
			}
			c := &perPool[p][FamilyOf(ip).index()]
			c.held++
			free := p.family(FamilyOf(ip)).free
			if p.allocatable(ip) {
				c.assigned++
			}
			if free.contains(ip) {
				return fmt.Errorf("IP %s is held and free in pool %q", ip, p.name)
			}
		}
	}
	if !maps.EqualFunc(a.sharing, wantSharing, maps.Equal) {
		return fmt.Errorf("sharing index %v, want %v", a.sharing, wantSharing)
	}

	// Pools.
	for _, p := range a.pools {
		for _, f := range []Family{FamilyV4, FamilyV6} {
			pf := p.family(f)
			var c counts
			if perPool[p] != nil {
				c = perPool[p][f.index()]
			}
			if pf.held != c.held || pf.assigned != uint64(c.assigned) {
				return fmt.Errorf("pool %q %s: counters held=%d assigned=%d, want %d and %d",
					p.name, f, pf.held, pf.assigned, c.held, c.assigned)
			}
			if err := checkFreeSet(a, p, f); err != nil {
				return fmt.Errorf("pool %q %s: %w", p.name, f, err)
			}
		}
	}
	return nil
}

func poolName(p *pool) string {
	if p == nil {
		return "no pool"
	}
	return fmt.Sprintf("pool %q", p.name)
}

// checkFreeSet verifies one family of one pool.
func checkFreeSet(a *Allocator, p *pool, f Family) error {
	pf := p.family(f)
	fs := pf.free
	if fs.family != f || fs.avoidBuggy != (p.avoidBuggy && f == FamilyV4) {
		return fmt.Errorf("free set family %s avoidBuggy %v", fs.family, fs.avoidBuggy)
	}
	var total u128
	for _, r := range pf.ranges {
		if r.Family() != f {
			return fmt.Errorf("range %s in the wrong family", r)
		}
		total = total.addSat(fs.allocatableIn(r.First, r.Last))
	}
	if total != pf.total {
		return fmt.Errorf("total %v, want %v", pf.total, total)
	}
	ivs := fs.intervals()
	inRanges := func(ip netip.Addr) bool {
		return slices.ContainsFunc(pf.ranges, func(r Range) bool { return r.Contains(ip) })
	}
	excluded := func(ip netip.Addr) bool { return p.avoidBuggy && isBuggyIPv4(ip) }
	next := func(ip netip.Addr) netip.Addr {
		for ip = ip.Next(); ip.IsValid() && excluded(ip); ip = ip.Next() {
		}
		return ip
	}
	for i, iv := range ivs {
		if iv.Family() != f || FamilyOf(iv.Last) != f {
			return fmt.Errorf("interval %s in the wrong family", iv)
		}
		if iv.Last.Less(iv.First) {
			return fmt.Errorf("interval %s is reversed", iv)
		}
		if excluded(iv.First) || excluded(iv.Last) {
			return fmt.Errorf("interval %s ends on an excluded address", iv)
		}
		if i > 0 && !ivs[i-1].Last.Less(iv.First) {
			return fmt.Errorf("intervals %s and %s overlap", ivs[i-1], iv)
		}
		if i > 0 && next(ivs[i-1].Last) == iv.First {
			return fmt.Errorf("intervals %s and %s should be merged", ivs[i-1], iv)
		}
		// Every allocatable address of iv is inside the pool's ranges:
		// walk range by range, gaps may only be excluded addresses.
		for cur := iv.First; ; {
			j := slices.IndexFunc(pf.ranges, func(r Range) bool { return r.Contains(cur) })
			if j < 0 {
				return fmt.Errorf("free interval %s contains %s, outside the pool", iv, cur)
			}
			end := pf.ranges[j].Last
			if !end.Less(iv.Last) {
				break
			}
			cur = next(end)
		}
	}
	// Counting: free + assigned = total. Together with "held allocatable
	// IPs are not free" (checked by the caller) and "free is inside the
	// pool" (above), this means free and held cover the pool exactly.
	if got, want := fs.count(), total.subSat(u128From(pf.assigned)); got != want {
		return fmt.Errorf("%v free addresses, want %v (total %v - assigned %d)", got, want, total, pf.assigned)
	}
	if total.less(u128From(exhaustiveLimit + 1)) {
		for _, r := range pf.ranges {
			for ip := r.First; ip.IsValid() && !r.Last.Less(ip); ip = ip.Next() {
				if excluded(ip) {
					continue
				}
				free, held := fs.contains(ip), a.ips[ip] != nil
				if free == held {
					return fmt.Errorf("%s: free=%v held=%v, want exactly one", ip, free, held)
				}
			}
		}
		for _, iv := range ivs {
			for ip := iv.First; ip.IsValid() && !iv.Last.Less(ip); ip = ip.Next() {
				if !excluded(ip) && !inRanges(ip) {
					return fmt.Errorf("free %s is outside the pool", ip)
				}
			}
		}
	}
	return nil
}

// dump renders the complete observable and internal state, for comparing
// states before and after an operation that must not change anything.
func dump(a *Allocator) string {
	return dumpPools(a) + dumpHolders(a)
}

// dumpPools renders the pools: ranges, usage and free sets.
func dumpPools(a *Allocator) string {
	var b strings.Builder
	names := slices.Sorted(maps.Keys(a.pools))
	for _, name := range names {
		p := a.pools[name]
		fmt.Fprintf(&b, "pool %s avoid=%v inuse=%d\n", name, p.avoidBuggy, a.InUse(name))
		u, _ := a.Usage(name)
		for _, f := range []Family{FamilyV4, FamilyV6} {
			pf := p.family(f)
			fmt.Fprintf(&b, "  %s usage=%+v ranges=", f, u[f])
			for _, r := range pf.ranges {
				b.WriteString(r.First.String() + "-" + r.Last.String() + " ")
			}
			b.WriteString("free=")
			for _, iv := range pf.free.intervals() {
				b.WriteString("[" + iv.First.String() + "," + iv.Last.String() + "]")
			}
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// dumpHolders renders services, held IPs and the sharing index.
func dumpHolders(a *Allocator) string {
	var b strings.Builder
	for _, key := range a.Services() {
		st := a.services[key]
		fmt.Fprintf(&b, "svc %+v holds %+v\n", st.svc, st.holdings)
	}
	ips := slices.SortedFunc(maps.Keys(a.ips), netip.Addr.Compare)
	for _, ip := range ips {
		fmt.Fprintf(&b, "ip %s %s users=%v\n", ip, poolName(a.ips[ip].pool), a.Users(ip))
	}
	for _, k := range slices.Sorted(maps.Keys(a.sharing)) {
		m := a.sharing[k]
		fmt.Fprintf(&b, "share %q:", k)
		for _, ip := range slices.SortedFunc(maps.Keys(m), netip.Addr.Compare) {
			fmt.Fprintf(&b, " %s×%d", ip, m[ip])
		}
		b.WriteByte('\n')
	}
	return b.String()
}
