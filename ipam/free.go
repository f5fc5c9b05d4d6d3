package ipam

import (
	"net/netip"

	"github.com/google/btree"
)

// btreeDegree is the B-tree branching factor. Intervals are 32 bytes; 32
// keeps nodes around 2 KiB, a good fit for CPU caches, and the trees shallow
// (a million free intervals is 4 levels).
const btreeDegree = 32

// interval is a run of free addresses [first, last] of one family, as
// numbers: comparing two u128 is two integer comparisons, several times
// cheaper than netip.Addr.Compare, and the B-tree compares a lot.
//
// Both ends are allocatable (never a .0/.255 address in a pool that avoids
// those); an interval of such a pool may span excluded addresses in its
// interior, which is what lets a /16 with avoidBuggyIPs be one interval
// instead of 256.
type interval struct{ first, last u128 }

// intervalLess orders intervals by their last address. Intervals never
// overlap, so this is also the order of first addresses; keying by last means
// that taking the lowest address (the hot path) rewrites the minimum interval
// in place without changing its key.
func intervalLess(a, b interval) bool { return a.last.less(b.last) }

// freeSet is the set of free, allocatable addresses of one family of one
// pool, stored as maximal disjoint intervals. "Maximal" means two intervals
// are never adjacent (counting excluded addresses as gaps that do not
// separate), so a given set of free addresses has exactly one representation
// and an allocator rebuilt from scratch is indistinguishable from one that got
// there step by step.
type freeSet struct {
	tree   *btree.BTreeG[interval]
	family Family
	// avoidBuggy excludes IPv4 addresses ending in .0 or .255.
	avoidBuggy bool
	max        u128 // the family's highest address

	// hit and hitOK receive the item found by a one-item tree walk, and grab
	// is the bound method doing it. Binding once at construction keeps
	// lookups allocation-free: a closure per lookup would escape to the heap.
	hit   interval
	hitOK bool
	grab  btree.ItemIteratorG[interval]
}

func newFreeSet(f Family, avoidBuggy bool) *freeSet {
	s := &freeSet{
		tree:       btree.NewG(btreeDegree, intervalLess),
		family:     f,
		avoidBuggy: avoidBuggy && f == FamilyV4,
		max:        u128Max,
	}
	if f == FamilyV4 {
		s.max = u128From(1<<32 - 1)
	}
	s.grab = s.grabOne
	return s
}

func (s *freeSet) grabOne(iv interval) bool {
	s.hit, s.hitOK = iv, true
	return false
}

// isBuggyIPv4 reports whether ip is an IPv4 address ending in .0 or .255.
// Some consumer routers and firmwares treat those as network or broadcast
// addresses even inside larger subnets and drop traffic to them.
func isBuggyIPv4(ip netip.Addr) bool {
	if !ip.Is4() {
		return false
	}
	b := ip.As4()
	return b[3] == 0 || b[3] == 255
}

// skip reports whether v may never be handed out from this set.
func (s *freeSet) skip(v u128) bool {
	return s.avoidBuggy && (v.lo&0xff == 0 || v.lo&0xff == 0xff)
}

// nextN returns the lowest allocatable address above v; ok is false past
// the end of the address space.
func (s *freeSet) nextN(v u128) (u128, bool) {
	for {
		if v == s.max {
			return v, false
		}
		v = v.inc()
		if !s.skip(v) {
			return v, true
		}
	}
}

// prevN returns the highest allocatable address below v.
func (s *freeSet) prevN(v u128) (u128, bool) {
	for {
		if v == (u128{}) {
			return v, false
		}
		v = v.dec()
		if !s.skip(v) {
			return v, true
		}
	}
}

// adjacent reports whether b is the next allocatable address after a.
func (s *freeSet) adjacent(a, b u128) bool {
	n, ok := s.nextN(a)
	return ok && n == b
}

// trim shrinks [first, last] to allocatable end points; ok is false if no
// allocatable address remains.
func (s *freeSet) trim(first, last u128) (interval, bool) {
	ok := true
	if s.skip(first) {
		first, ok = s.nextN(first)
	}
	if ok && s.skip(last) {
		last, ok = s.prevN(last)
	}
	if !ok || last.less(first) {
		return interval{}, false
	}
	return interval{first, last}, true
}

// build fills an empty set from ranges sorted by First and non-overlapping,
// merging neighbours so the result is canonical.
func (s *freeSet) build(ranges []Range) {
	var cur interval
	have := false
	for _, r := range ranges {
		iv, ok := s.trim(addrU128(r.First), addrU128(r.Last))
		if !ok {
			continue
		}
		if have && s.adjacent(cur.last, iv.first) {
			cur.last = iv.last
			continue
		}
		if have {
			s.tree.ReplaceOrInsert(cur)
		}
		cur, have = iv, true
	}
	if have {
		s.tree.ReplaceOrInsert(cur)
	}
}

// lowest returns the lowest free address.
func (s *freeSet) lowest() (netip.Addr, bool) {
	iv, ok := s.tree.Min()
	if !ok {
		return netip.Addr{}, false
	}
	return u128Addr(iv.first, s.family), true
}

// atOrAboveN returns the interval with the smallest last >= v.
func (s *freeSet) atOrAboveN(v u128) (interval, bool) {
	s.hitOK = false
	s.tree.AscendGreaterOrEqual(interval{last: v}, s.grab)
	return s.hit, s.hitOK
}

// atOrBelowN returns the interval with the largest last <= v.
func (s *freeSet) atOrBelowN(v u128) (interval, bool) {
	s.hitOK = false
	s.tree.DescendLessOrEqual(interval{last: v}, s.grab)
	return s.hit, s.hitOK
}

// containingN returns the interval holding v, if v is free.
func (s *freeSet) containingN(v u128) (interval, bool) {
	iv, ok := s.atOrAboveN(v)
	if !ok || v.less(iv.first) {
		return interval{}, false
	}
	return iv, true
}

// contains reports whether ip is free.
func (s *freeSet) contains(ip netip.Addr) bool {
	if FamilyOf(ip) != s.family {
		return false
	}
	v := addrU128(ip)
	if s.skip(v) {
		return false
	}
	_, ok := s.containingN(v)
	return ok
}

// take marks ip as used. It reports false, changing nothing, if ip was not
// free.
func (s *freeSet) take(ip netip.Addr) bool {
	if FamilyOf(ip) != s.family {
		return false
	}
	v := addrU128(ip)
	if s.skip(v) {
		return false
	}
	iv, ok := s.containingN(v)
	if !ok {
		return false
	}
	if v == iv.last {
		s.tree.Delete(iv)
		if v != iv.first {
			p, _ := s.prevN(v) // exists: iv.first < v
			s.tree.ReplaceOrInsert(interval{iv.first, p})
		}
		return true
	}
	// The upper part keeps iv's key (its last), so this replaces iv.
	n, _ := s.nextN(v) // exists: v < iv.last
	s.tree.ReplaceOrInsert(interval{n, iv.last})
	if v != iv.first {
		p, _ := s.prevN(v)
		s.tree.ReplaceOrInsert(interval{iv.first, p})
	}
	return true
}

// put marks ip as free again, merging with its neighbours. Excluded
// addresses and addresses already free are ignored.
func (s *freeSet) put(ip netip.Addr) {
	if FamilyOf(ip) != s.family {
		return
	}
	v := addrU128(ip)
	if s.skip(v) {
		return
	}
	pred, hasPred := s.atOrBelowN(v)
	succ, hasSucc := s.atOrAboveN(v)
	if (hasPred && pred.last == v) || (hasSucc && !v.less(succ.first)) {
		return // already free; putting it twice must not corrupt the set
	}
	joinPred := hasPred && s.adjacent(pred.last, v)
	joinSucc := hasSucc && s.adjacent(v, succ.first)
	switch {
	case joinPred && joinSucc:
		s.tree.Delete(pred)
		s.tree.ReplaceOrInsert(interval{pred.first, succ.last})
	case joinPred:
		s.tree.Delete(pred)
		s.tree.ReplaceOrInsert(interval{pred.first, v})
	case joinSucc:
		s.tree.ReplaceOrInsert(interval{v, succ.last})
	default:
		s.tree.ReplaceOrInsert(interval{v, v})
	}
}

// intervals returns the free intervals as address ranges, for tests and
// diagnostics.
func (s *freeSet) intervals() []Range {
	var out []Range
	s.tree.Ascend(func(iv interval) bool {
		out = append(out, Range{u128Addr(iv.first, s.family), u128Addr(iv.last, s.family)})
		return true
	})
	return out
}

// count returns the number of free addresses, saturating. It walks every
// interval, so it is for tests and diagnostics only; Usage uses counters.
func (s *freeSet) count() u128 {
	var n u128
	s.tree.Ascend(func(iv interval) bool {
		n = n.addSat(s.allocatableIn(u128Addr(iv.first, s.family), u128Addr(iv.last, s.family)))
		return true
	})
	return n
}

// allocatableIn returns the number of allocatable addresses in [first, last].
func (s *freeSet) allocatableIn(first, last netip.Addr) u128 {
	n := rangeSize(first, last)
	if s.avoidBuggy {
		n = n.sub(u128From(buggyIn(first, last)))
	}
	return n
}

// buggyIn counts IPv4 addresses ending in .0 or .255 in [first, last].
func buggyIn(first, last netip.Addr) uint64 {
	f, l := addrU128(first).lo, addrU128(last).lo
	// upTo(n, r) counts x in [0, n] with x%256 == r.
	upTo := func(n uint64, r uint64) uint64 {
		if n < r {
			return 0
		}
		return (n-r)/256 + 1
	}
	count := func(r uint64) uint64 {
		c := upTo(l, r)
		if f > 0 {
			c -= upTo(f-1, r)
		}
		return c
	}
	return count(0) + count(255)
}
