package ipam

import (
	"cmp"
	"fmt"
	"net/netip"
	"slices"
)

// Pool is a named set of address ranges the allocator may hand out.
type Pool struct {
	Name   string
	Ranges []Range
	// AvoidBuggyIPs skips IPv4 addresses ending in .0 and .255, which some
	// consumer routers mistake for network or broadcast addresses.
	AvoidBuggyIPs bool
}

// Usage is a pool's address accounting for one family. Figures saturate at
// math.MaxUint64: an IPv6 /64 alone has 2^64 addresses.
type Usage struct {
	// Total is the number of allocatable addresses: the size of the pool's
	// ranges, minus the .0/.255 addresses when AvoidBuggyIPs is set.
	Total uint64
	// Assigned is the number of distinct held IPs among those.
	Assigned uint64
	// Available is Total - Assigned: what auto allocation can still hand out.
	Available uint64
}

// pool is the allocator's live view of a Pool.
type pool struct {
	name       string
	avoidBuggy bool
	fam        [numFamilies]poolFamily
}

// poolFamily is one family of a pool. The counters are maintained on every
// claim and release so Usage and InUse never walk the pool.
type poolFamily struct {
	ranges   []Range // sorted, non-overlapping
	free     *freeSet
	total    u128   // allocatable addresses, saturating
	assigned uint64 // held allocatable addresses
	held     int    // held addresses inside ranges, allocatable or not
}

func (p *pool) family(f Family) *poolFamily { return &p.fam[f.index()] }

// allocatable reports whether ip, which is inside p, may be handed out.
func (p *pool) allocatable(ip netip.Addr) bool { return !(p.avoidBuggy && isBuggyIPv4(ip)) }

// poolRange is one range of one pool, an entry of the allocator's
// address-to-pool index.
type poolRange struct {
	Range
	pool *pool
}

// buildPools validates cfg and builds the live pools and the sorted
// address-to-pool index. Validation is complete before anything is built so
// SetPools can stay all-or-nothing.
func buildPools(cfg []Pool) (map[string]*pool, []poolRange, error) {
	pools := make(map[string]*pool, len(cfg))
	var index []poolRange
	for i, c := range cfg {
		if c.Name == "" {
			return nil, nil, fmt.Errorf("%w: pool #%d has an empty name", ErrInvalidPools, i+1)
		}
		if _, dup := pools[c.Name]; dup {
			return nil, nil, fmt.Errorf("%w: pool name %q is used twice", ErrInvalidPools, c.Name)
		}
		p := &pool{name: c.Name, avoidBuggy: c.AvoidBuggyIPs}
		for j, r := range c.Ranges {
			if err := r.check(); err != nil {
				return nil, nil, fmt.Errorf("%w: pool %q: range #%d (%s): %v", ErrInvalidPools, c.Name, j+1, r, err)
			}
			pf := p.family(r.Family())
			pf.ranges = append(pf.ranges, r)
			index = append(index, poolRange{Range: r, pool: p})
		}
		pools[c.Name] = p
	}
	slices.SortFunc(index, func(a, b poolRange) int { return a.First.Compare(b.First) })
	if err := checkOverlaps(index); err != nil {
		return nil, nil, err
	}
	for _, p := range pools {
		for i := range p.fam {
			pf := &p.fam[i]
			slices.SortFunc(pf.ranges, func(a, b Range) int { return a.First.Compare(b.First) })
			pf.free = newFreeSet(familyAt(i), p.avoidBuggy)
			pf.free.build(pf.ranges)
			for _, r := range pf.ranges {
				pf.total = pf.total.addSat(pf.free.allocatableIn(r.First, r.Last))
			}
		}
	}
	return pools, index, nil
}

// checkOverlaps reports the first overlap in index, which is sorted by First.
// An address in two pools would make "which pool is this IP from" ambiguous
// and could be handed out twice.
func checkOverlaps(index []poolRange) error {
	if len(index) == 0 {
		return nil
	}
	widest := index[0] // the range reaching furthest so far
	for _, cur := range index[1:] {
		if FamilyOf(cur.First) == FamilyOf(widest.Last) && !widest.Last.Less(cur.First) {
			both := Range{First: cur.First, Last: minAddr(cur.Last, widest.Last)}
			if cur.pool == widest.pool {
				return fmt.Errorf("%w: pool %q: ranges %s and %s overlap on %s",
					ErrInvalidPools, cur.pool.name, widest.Range, cur.Range, both)
			}
			a, b := widest, cur
			if cmp.Less(b.pool.name, a.pool.name) {
				a, b = b, a
			}
			return fmt.Errorf("%w: pools %q and %q overlap on %s (ranges %s and %s)",
				ErrInvalidPools, a.pool.name, b.pool.name, both, a.Range, b.Range)
		}
		if widest.Last.Less(cur.Last) || FamilyOf(cur.First) != FamilyOf(widest.Last) {
			widest = cur
		}
	}
	return nil
}

func minAddr(a, b netip.Addr) netip.Addr {
	if a.Less(b) {
		return a
	}
	return b
}

// usage returns p's accounting per family that has ranges.
func (p *pool) usage() map[Family]Usage {
	u := make(map[Family]Usage, numFamilies)
	for _, f := range []Family{FamilyV4, FamilyV6} {
		pf := p.family(f)
		if len(pf.ranges) == 0 {
			continue
		}
		u[f] = Usage{
			Total:     pf.total.uint64Sat(),
			Assigned:  pf.assigned,
			Available: pf.total.subSat(u128From(pf.assigned)).uint64Sat(),
		}
	}
	return u
}
