package ipam

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
)

// fuzzLayouts are the pool configurations the fuzzer switches between. They
// are small (so checkInvariants can check address by address) and overlap
// each other in ways that shrink, grow, move ranges between pools, drop
// families and toggle avoidBuggyIPs. The last one is invalid and must be
// rejected without effect.
func fuzzLayouts() [][]Pool {
	return [][]Pool{
		{
			mkPool("a", "10.0.0.0/29", "2001:db8::/125"),
			mkPool("b", "10.0.1.0/30"),
			avoid(mkPool("c", "10.0.2.254-10.0.3.1", "2001:db8:1::/126")),
		},
		{ // shrink a and c, move part of a to b
			mkPool("a", "10.0.0.0/30", "2001:db8::/126"),
			mkPool("b", "10.0.1.0/30", "10.0.0.4/31"),
			avoid(mkPool("c", "10.0.2.254-10.0.3.0")),
		},
		{ // grow a, c changes ranges and loses avoidBuggyIPs, new d
			mkPool("a", "10.0.0.0/28", "2001:db8::/124"),
			mkPool("c", "10.0.1.0/30"),
			mkPool("d", "2001:db8:1::/126", "10.0.3.0/31"),
		},
		{}, // no pools at all
		{ // avoidBuggyIPs on a pool whose .0 may be held
			avoid(mkPool("a", "10.0.0.0/29")),
			mkPool("b", "2001:db8::/126", "10.0.1.0/30", "10.0.2.255-10.0.3.0"),
		},
		{ // invalid: overlap
			mkPool("a", "10.0.0.0/29"),
			mkPool("b", "10.0.0.4/30"),
		},
	}
}

// fuzzAddrs are the addresses requests and restores pick from: inside and
// outside every layout, including .0/.255 ones.
func fuzzAddrs() []netip.Addr {
	var out []netip.Addr
	add := func(first string, n int) {
		a := ip(first)
		for range n {
			out = append(out, a)
			a = a.Next()
		}
	}
	add("10.0.0.0", 16)
	add("10.0.1.0", 4)
	add("10.0.2.254", 4)
	add("2001:db8::", 16)
	add("2001:db8:1::", 4)
	add("10.9.9.9", 1)
	add("2001:db8:9::1", 1)
	return out
}

func fuzzPortSets() [][]Port {
	return [][]Port{
		{{"TCP", 80}},
		{{"TCP", 443}},
		{{"UDP", 53}, {"TCP", 8080}},
		{{"TCP", 80}, {"UDP", 53}},
	}
}

// fuzzer decodes operations from fuzz input.
type fuzzer struct {
	t       *testing.T
	data    []byte
	a       *Allocator
	layout  []Pool
	layouts [][]Pool
	addrs   []netip.Addr
	stats   map[string]int // outcome counts, to show the harness is not degenerate
}

func (fz *fuzzer) next() byte {
	if len(fz.data) == 0 {
		return 0
	}
	b := fz.data[0]
	fz.data = fz.data[1:]
	return b
}

func (fz *fuzzer) service() Service {
	idx := fz.next() % 6
	b := fz.next()
	return Service{
		Key:        fmt.Sprintf("ns/s%d", idx),
		SharingKey: []string{"", "k1", "k2", "k1"}[b&3],
		Ports:      fuzzPortSets()[(b>>2)&3],
		Local:      b&0x10 != 0,
		Selector:   []string{"app=x", "app=y"}[(b>>5)&1],
	}
}

func (fz *fuzzer) request() Request {
	var r Request
	b := fz.next()
	r.Families = [][]Family{{FamilyV4}, {FamilyV6}, {FamilyV4, FamilyV6}, {FamilyV6, FamilyV4}}[b&3]
	r.RequireAll = b&4 != 0
	names := []string{"a", "b", "c", "d", "x"}
	if b&8 != 0 {
		r.Pool = names[fz.next()%byte(len(names))]
		r.Candidates = []string{r.Pool}
	} else {
		c := fz.next()
		for i := range 3 {
			if c&(1<<i) != 0 {
				r.Candidates = append(r.Candidates, names[(c>>3+byte(i))%byte(len(names))])
			}
		}
	}
	if b&0x30 != 0 {
		for _, f := range r.Families {
			if b&0x40 != 0 && f == r.Families[0] {
				continue
			}
			for range 4 { // find an address of family f
				a := fz.addrs[int(fz.next())%len(fz.addrs)]
				if FamilyOf(a) == f {
					r.IPs = append(r.IPs, a)
					break
				}
			}
		}
	}
	return r
}

// expectedAuto computes, by brute force on the state before Ensure, the
// address auto allocation must pick for family f: the lowest compatible
// shared IP, else the lowest free address, of the first candidate pool that
// has either.
func expectedAuto(a *Allocator, s Service, f Family, candidates []string) (netip.Addr, bool) {
	for _, name := range candidates {
		p := a.pools[name]
		if p == nil {
			continue
		}
		if s.SharingKey != "" {
			var best netip.Addr
			for addr, st := range a.ips {
				if st.pool != p || FamilyOf(addr) != f || !p.allocatable(addr) {
					continue
				}
				ok := true
				for _, h := range st.holders {
					if _, _, c := conflict(&h.svc, &s); !c {
						ok = false
					}
				}
				if ok && (!best.IsValid() || addr.Less(best)) {
					best = addr
				}
			}
			if best.IsValid() {
				return best, true
			}
		}
		for _, r := range p.family(f).ranges {
			for addr := r.First; !r.Last.Less(addr); addr = addr.Next() {
				if a.ips[addr] == nil && p.allocatable(addr) {
					return addr, true
				}
			}
		}
	}
	return netip.Addr{}, false
}

func (fz *fuzzer) count(s Service, r Request, err error, partial bool) {
	if fz.stats == nil {
		return
	}
	kind := "single"
	if len(r.Families) > 1 {
		kind = "dual"
		if r.RequireAll {
			kind = "require-all"
		}
	}
	if len(r.IPs) > 0 {
		kind += "+ips"
	}
	if s.SharingKey != "" {
		kind += "+shared"
	}
	switch {
	case partial:
		kind += ": partial"
	case errors.Is(err, ErrConflict):
		kind += ": conflict"
	case err != nil:
		kind += ": error"
	default:
		kind += ": ok"
	}
	fz.stats[kind]++
}

func (fz *fuzzer) check(op string) {
	fz.t.Helper()
	if err := checkInvariants(fz.a); err != nil {
		fz.t.Fatalf("after %s: %v\n%s", op, err, dump(fz.a))
	}
	fz.checkRebuild(op)
}

// checkRebuild rebuilds a fresh allocator from the current layout and every
// service's current IPs, as the controller does at start-up, and compares.
func (fz *fuzzer) checkRebuild(op string) {
	fz.t.Helper()
	b := New()
	if err := b.SetPools(fz.layout); err != nil {
		fz.t.Fatalf("after %s: rebuild SetPools: %v", op, err)
	}
	for _, key := range fz.a.Services() {
		st := fz.a.services[key]
		var ips []netip.Addr
		for _, h := range st.holdings {
			ips = append(ips, h.IP)
		}
		if _, err := b.Restore(st.svc, ips); err != nil {
			fz.t.Fatalf("after %s: rebuild Restore(%s, %v): %v", op, key, ips, err)
		}
	}
	if err := checkInvariants(b); err != nil {
		fz.t.Fatalf("after %s: rebuilt allocator: %v", op, err)
	}
	if !slices.Equal(fz.a.Services(), b.Services()) {
		fz.t.Fatalf("after %s: rebuilt services %v, want %v", op, b.Services(), fz.a.Services())
	}
	for _, key := range fz.a.Services() {
		want, got := fz.a.Holdings(key), b.Holdings(key)
		// A restored orphan cannot know the pool it came from.
		for i := range want {
			if want[i].Orphan {
				want[i].Pool = ""
			}
		}
		if !slices.Equal(got, want) {
			fz.t.Fatalf("after %s: rebuilt holdings of %s = %v, want %v", op, key, got, want)
		}
	}
	if g, w := dumpPools(b), dumpPools(fz.a); g != w {
		fz.t.Fatalf("after %s: rebuilt pools differ:\n%s\nwant:\n%s", op, g, w)
	}
}

func (fz *fuzzer) ensure() {
	t := fz.t
	s, r := fz.service(), fz.request()
	op := fmt.Sprintf("Ensure(%+v, %+v)", s, r)
	before := dump(fz.a)
	prev := fz.a.Holdings(s.Key)

	// Brute-force oracle for the simple auto case: single family, nothing
	// held, nothing requested.
	var oracle netip.Addr
	haveOracle := false
	if len(r.Families) == 1 && len(prev) == 0 && len(r.IPs) == 0 {
		oracle, haveOracle = expectedAuto(fz.a, s, r.Families[0], r.Candidates)
	}

	hs, err := fz.a.Ensure(s, r)
	var pe *PartialError
	partial := errors.As(err, &pe)
	fz.count(s, r, err, partial)
	if err != nil && !partial {
		if hs != nil {
			t.Fatalf("%s: error %v with holdings %v", op, err, hs)
		}
		if after := dump(fz.a); after != before {
			t.Fatalf("%s failed (%v) but changed the state:\nbefore:\n%s\nafter:\n%s", op, err, before, after)
		}
		if haveOracle {
			t.Fatalf("%s failed (%v), but %s was available", op, err, oracle)
		}
		fz.check(op)
		return
	}
	if haveOracle && (len(hs) != 1 || hs[0].IP != oracle) {
		t.Fatalf("%s = %v, want lowest available %s", op, hs, oracle)
	}
	if partial {
		if r.RequireAll && len(r.Families) > 1 {
			t.Fatalf("%s: partial success with RequireAll: %v", op, err)
		}
		if len(hs) == 0 || len(hs)+len(pe.Missing) != len(r.Families) {
			t.Fatalf("%s: partial %v with holdings %v", op, err, hs)
		}
	} else if len(hs) != len(r.Families) {
		t.Fatalf("%s = %v: not every family", op, hs)
	}
	if got := fz.a.Holdings(s.Key); !slices.Equal(got, hs) {
		t.Fatalf("%s returned %v but holds %v", op, hs, got)
	}
	// Order and constraints.
	i := 0
	for _, f := range r.Families {
		if i < len(hs) && FamilyOf(hs[i].IP) == f {
			h := hs[i]
			i++
			for _, want := range r.IPs {
				if FamilyOf(want) == f && h.IP != want {
					t.Fatalf("%s: got %s, requested %s", op, h.IP, want)
				}
			}
			if r.Pool != "" && h.Pool != r.Pool {
				t.Fatalf("%s: %v not from the named pool", op, h)
			}
			if r.RequireAll && h.Pool != hs[0].Pool {
				t.Fatalf("%s: RequireAll holdings from two pools: %v", op, hs)
			}
			// An IP held before for this family and still acceptable
			// must not have moved.
			for _, p := range prev {
				if FamilyOf(p.IP) == f && p.IP != h.IP && fz.keepable(p, s, r) && !r.RequireAll {
					t.Fatalf("%s: moved %v to %v", op, p, h)
				}
			}
		}
	}
	if i != len(hs) {
		t.Fatalf("%s: holdings %v not in family order", op, hs)
	}
	fz.check(op)

	// Idempotence: the same call again changes nothing.
	mid := dump(fz.a)
	hs2, err2 := fz.a.Ensure(s, r)
	if !slices.Equal(hs2, hs) || (err2 == nil) != (err == nil) || dump(fz.a) != mid {
		t.Fatalf("%s not idempotent: %v, %v then %v, %v", op, hs, err, hs2, err2)
	}
}

// keepable says whether prev, held before, satisfied (s, r) by the rules of
// Ensure step 1, judged on the state after the call (which only differs in
// s's own holdings).
func (fz *fuzzer) keepable(prev Holding, s Service, r Request) bool {
	f := FamilyOf(prev.IP)
	if !slices.Contains(r.Families, f) {
		return false
	}
	for _, want := range r.IPs {
		if FamilyOf(want) == f && want != prev.IP {
			return false
		}
	}
	if r.Pool != "" && prev.Pool != r.Pool {
		return false
	}
	return fz.a.conflictAt(prev.IP, &s) == nil
}

func (fz *fuzzer) release() {
	t := fz.t
	key := fmt.Sprintf("ns/s%d", fz.next()%6)
	held := fz.a.Holdings(key)
	freed := fz.a.Release(key)
	op := fmt.Sprintf("Release(%s)", key)
	fz.check(op)
	if fz.a.Holdings(key) != nil {
		t.Fatalf("%s: still holds %v", op, fz.a.Holdings(key))
	}
	for _, h := range held {
		isFree := slices.Contains(freed, h.IP)
		if isFree != (fz.a.Users(h.IP) == nil) {
			t.Fatalf("%s: %s freed=%v but users %v", op, h.IP, isFree, fz.a.Users(h.IP))
		}
	}
	// A freed IP inside a pool can be had by a fresh non-sharing service.
	for _, addr := range freed {
		p := fz.a.poolOf(addr)
		if p == nil || !p.allocatable(addr) {
			continue
		}
		before := dump(fz.a)
		probe := Service{Key: "probe/x"}
		hs, err := fz.a.Ensure(probe, Request{Families: []Family{FamilyOf(addr)}, IPs: []netip.Addr{addr}})
		if err != nil || len(hs) != 1 || hs[0].IP != addr {
			t.Fatalf("%s freed %s, but a probe cannot have it: %v, %v", op, addr, hs, err)
		}
		if err := checkInvariants(fz.a); err != nil {
			t.Fatalf("probe for %s: %v", addr, err)
		}
		fz.a.Release(probe.Key)
		if after := dump(fz.a); after != before {
			t.Fatalf("probe for %s left traces:\n%s\nvs\n%s", addr, before, after)
		}
	}
}

func (fz *fuzzer) setPools() {
	i := int(fz.next()) % len(fz.layouts)
	before := dump(fz.a)
	err := fz.a.SetPools(fz.layouts[i])
	op := fmt.Sprintf("SetPools(layout %d)", i)
	if i == len(fz.layouts)-1 {
		if err == nil || !errors.Is(err, ErrInvalidPools) {
			fz.t.Fatalf("%s: invalid layout accepted: %v", op, err)
		}
		if dump(fz.a) != before {
			fz.t.Fatalf("%s: rejected layout changed the state", op)
		}
	} else if err != nil {
		fz.t.Fatalf("%s: %v", op, err)
	} else {
		fz.layout = fz.layouts[i]
	}
	fz.check(op)
}

func (fz *fuzzer) restore() {
	s := fz.service()
	var ips []netip.Addr
	for range fz.next() % 3 {
		ips = append(ips, fz.addrs[int(fz.next())%len(fz.addrs)])
	}
	op := fmt.Sprintf("Restore(%+v, %v)", s, ips)
	before := dump(fz.a)
	hs, err := fz.a.Restore(s, ips)
	if err != nil {
		if dump(fz.a) != before {
			fz.t.Fatalf("%s failed (%v) but changed the state", op, err)
		}
	} else {
		var got []netip.Addr
		for _, h := range hs {
			got = append(got, h.IP)
		}
		if want := slices.Compact(slices.Clone(ips)); !slices.Equal(got, want) {
			fz.t.Fatalf("%s = %v", op, hs)
		}
		mid := dump(fz.a)
		if hs2, err := fz.a.Restore(s, ips); err != nil || !slices.Equal(hs2, hs) || dump(fz.a) != mid {
			fz.t.Fatalf("%s not idempotent: %v, %v", op, hs2, err)
		}
	}
	fz.check(op)
}

func runFuzz(t *testing.T, data []byte) {
	newFuzzer(t, data).run()
}

func newFuzzer(t *testing.T, data []byte) *fuzzer {
	fz := &fuzzer{t: t, data: data, a: New(), layouts: fuzzLayouts(), addrs: fuzzAddrs()}
	fz.layout = fz.layouts[0]
	if err := fz.a.SetPools(fz.layout); err != nil {
		t.Fatalf("SetPools: %v", err)
	}
	return fz
}

// maxFuzzOps bounds one input's run. Every operation is followed by full
// consistency checks, so long runs would slow the fuzzer (and its input
// minimization) down more than they find.
const maxFuzzOps = 150

func (fz *fuzzer) run() {
	for n := 0; len(fz.data) > 0 && n < maxFuzzOps; n++ {
		switch fz.next() % 8 {
		case 0, 1, 2, 3:
			fz.ensure()
		case 4, 5:
			fz.release()
		case 6:
			fz.setPools()
		case 7:
			fz.restore()
		}
	}
}

func FuzzOperations(f *testing.F) {
	f.Add([]byte{})
	// Fill pool a with v4 services, shrink, grow, release.
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0, 1, 0, 2, 2, 0, 0, 1, 6, 1, 0, 3, 0, 1, 6, 2, 4, 1, 4, 0})
	// Sharing services, dual stack RequireAll and PreferDualStack.
	f.Add([]byte{0, 0, 1, 6, 0, 1, 1, 5, 6, 0, 1, 2, 9, 2, 0, 0, 2, 0x15, 3, 0, 4, 0, 6, 3, 4, 2})
	// Requested IPs, named pools, restores of orphans.
	f.Add([]byte{0, 3, 0, 0x38, 0, 7, 1, 0, 0x28, 1, 20, 7, 4, 1, 2, 3, 40, 6, 3, 7, 5, 0, 2, 1, 30, 4, 4})
	// Invalid layout, avoidBuggyIPs layout, empty layout.
	f.Add([]byte{6, 5, 0, 0, 0, 0, 0, 6, 4, 0, 1, 0, 0, 0, 6, 3, 4, 0, 6, 0, 0, 2, 3, 2, 0, 7})
	f.Fuzz(runFuzz)
}

// TestOperationsRandom runs the fuzz harness on pseudo-random inputs, so
// that plain "go test" exercises it beyond the seed corpus, and checks that
// the inputs reach every kind of outcome.
func TestOperationsRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	stats := map[string]int{}
	for range 120 {
		data := make([]byte, 50+rng.IntN(600))
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		fz := newFuzzer(t, data)
		fz.stats = stats
		fz.run()
	}
	for _, kind := range []string{
		"single: ok", "single: error", "single+shared: ok", "single+ips: conflict",
		"dual: ok", "dual: partial", "require-all: ok", "require-all: error", "require-all+ips: ok",
		"dual+ips+shared: partial",
	} {
		if stats[kind] == 0 {
			t.Errorf("no %q outcome", kind)
		}
	}
	if t.Failed() || testing.Verbose() {
		t.Logf("outcomes: %v", stats)
	}
}
