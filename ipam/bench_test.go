package ipam

import (
	"fmt"
	"net/netip"
	"testing"
)

// benchCase is a pool with some addresses already held.
type benchCase struct {
	name  string
	cidr  string
	used  int // addresses held before timing
	every int // held addresses are spread: one every `every` addresses
}

// benchCases spread the held addresses so that the free set is fragmented
// into about `used` intervals: that is the worst case for the B-tree, and
// what a long-lived cluster's churn produces.
func benchCases() []benchCase {
	return []benchCase{
		{name: "24-empty", cidr: "10.0.0.0/24"},
		{name: "16-1%", cidr: "10.0.0.0/16", used: 655, every: 100},
		{name: "16-50%", cidr: "10.0.0.0/16", used: 32768, every: 2},
		// 99%: every address but one in each run of 100 is held; the
		// free set is ~655 single addresses plus the tail.
		{name: "16-99%", cidr: "10.0.0.0/16", used: 64880, every: 0},
		{name: "64-empty", cidr: "2001:db8::/64"},
		{name: "64-1M-used", cidr: "2001:db8::/64", used: 1 << 20, every: 1 << 20},
	}
}

// setup builds an allocator for c. Held addresses are restored rather than
// ensured one by one: it is the same state and much faster to build.
func (c benchCase) setup(b *testing.B) *Allocator {
	b.Helper()
	r := MustParseRange(c.cidr)
	a := New()
	if err := a.SetPools([]Pool{{Name: "p", Ranges: []Range{r}}}); err != nil {
		b.Fatal(err)
	}
	addr := r.First
	for i := 0; i < c.used; i++ {
		if c.every == 0 {
			// Skip one address in every 100 (99% used).
			if i%99 == 0 {
				addr = addr.Next()
			}
		}
		if _, err := a.Restore(Service{Key: fmt.Sprintf("fill/%d", i)}, []netip.Addr{addr}); err != nil {
			b.Fatal(err)
		}
		step := c.every
		if step == 0 {
			step = 1
		}
		addr = u128Addr(addrU128(addr).addSat(u128From(uint64(step))), r.Family())
	}
	return a
}

// BenchmarkAllocateRelease measures one auto allocation plus its release,
// so usage stays constant: the cost must not depend on pool size or fill.
func BenchmarkAllocateRelease(b *testing.B) {
	for _, c := range benchCases() {
		var a *Allocator // built once per case, reused across b.N rounds
		b.Run(c.name, func(b *testing.B) {
			if a == nil {
				a = c.setup(b)
			}
			f := FamilyOf(MustParseRange(c.cidr).First)
			s := Service{Key: "bench/svc", Ports: []Port{{"TCP", 80}}}
			req := Request{Families: []Family{f}, Candidates: []string{"p"}}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Ensure(s, req); err != nil {
					b.Fatal(err)
				}
				a.Release(s.Key)
			}
		})
	}
}

// BenchmarkEnsureRequested measures allocating a specific, free IP in the
// middle of the pool (which splits a free interval) plus its release.
func BenchmarkEnsureRequested(b *testing.B) {
	for _, c := range benchCases() {
		var a *Allocator
		b.Run(c.name, func(b *testing.B) {
			if a == nil {
				a = c.setup(b)
			}
			r := MustParseRange(c.cidr)
			target := middleFree(a, r)
			s := Service{Key: "bench/svc", Ports: []Port{{"TCP", 80}}}
			req := Request{Families: []Family{r.Family()}, IPs: []netip.Addr{target}}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := a.Ensure(s, req); err != nil {
					b.Fatal(err)
				}
				a.Release(s.Key)
			}
		})
	}
}

// middleFree returns the first free address at or above the middle of r, so
// that the requested IP is far from the lowest free one and usually splits
// an interval.
func middleFree(a *Allocator, r Range) netip.Addr {
	lo, hi := addrU128(r.First), addrU128(r.Last)
	half := hi.sub(lo)
	half = u128{hi: half.hi >> 1, lo: half.lo>>1 | half.hi<<63}
	mid := u128Addr(lo.addSat(half), r.Family())
	fs := a.pools["p"].family(r.Family()).free
	iv, ok := fs.atOrAboveN(addrU128(mid))
	if !ok {
		panic("no free address above the middle")
	}
	if first := u128Addr(iv.first, r.Family()); mid.Less(first) {
		return first
	}
	return mid
}
