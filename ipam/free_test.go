package ipam

import (
	"math/rand/v2"
	"net/netip"
	"testing"
)

// intervals lists a free set's intervals as strings.
func intervals(s *freeSet) []string {
	var out []string
	for _, iv := range s.intervals() {
		out = append(out, iv.First.String()+"-"+iv.Last.String())
	}
	return out
}

func TestFreeSetBuild(t *testing.T) {
	tests := []struct {
		name   string
		avoid  bool
		ranges []string
		want   []string
	}{
		{"one", false, []string{"10.0.0.0/30"}, []string{"10.0.0.0-10.0.0.3"}},
		{"adjacent ranges merge", false, []string{"10.0.0.0/30", "10.0.0.4/30"}, []string{"10.0.0.0-10.0.0.7"}},
		{"gap", false, []string{"10.0.0.0/30", "10.0.0.8/30"}, []string{"10.0.0.0-10.0.0.3", "10.0.0.8-10.0.0.11"}},
		{"avoid trims", true, []string{"10.0.0.0/24"}, []string{"10.0.0.1-10.0.0.254"}},
		{"avoid bridges .255/.0", true, []string{"10.0.0.0/23"}, []string{"10.0.0.1-10.0.1.254"}},
		{"avoid merges across excluded gap", true, []string{"10.0.0.1-10.0.0.254", "10.0.1.1-10.0.1.254"}, []string{"10.0.0.1-10.0.1.254"}},
		{"avoid drops all-buggy range", true, []string{"10.0.0.255-10.0.1.0", "10.0.2.5/32"}, []string{"10.0.2.5-10.0.2.5"}},
		{"avoid ignores IPv6", true, []string{"2001:db8::/127"}, []string{"2001:db8::-2001:db8::1"}},
		{"whole IPv4 space", false, []string{"0.0.0.0/0"}, []string{"0.0.0.0-255.255.255.255"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var rs []Range
			for _, r := range tt.ranges {
				rs = append(rs, MustParseRange(r))
			}
			s := newFreeSet(rs[0].Family(), tt.avoid)
			s.build(rs)
			got := intervals(s)
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("got %v, want %v", got, tt.want)
				}
			}
		})
	}
}

func TestFreeSetEdgesOfAddressSpace(t *testing.T) {
	for _, r := range []string{"0.0.0.0/0", "::/0", "255.255.255.254/31", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127"} {
		rg := MustParseRange(r)
		s := newFreeSet(rg.Family(), false)
		s.build([]Range{rg})
		for _, a := range []netip.Addr{rg.First, rg.Last, rg.First, rg.Last} {
			if s.contains(a) {
				if !s.take(a) {
					t.Fatalf("%s: take(%s) failed", r, a)
				}
			} else {
				s.put(a)
			}
		}
		if got := intervals(s); len(got) != 1 || got[0] != rg.First.String()+"-"+rg.Last.String() {
			t.Fatalf("%s: after take/put: %v", r, got)
		}
	}
}

// TestFreeSetModel drives a free set with random takes and puts and compares
// it with a plain set of addresses, including the canonical form.
func TestFreeSetModel(t *testing.T) {
	for _, avoid := range []bool{false, true} {
		rng := rand.New(rand.NewPCG(1, uint64(len(t.Name()))))
		ranges := []Range{
			MustParseRange("10.0.0.250-10.0.1.10"),
			MustParseRange("10.0.1.11-10.0.1.20"),
			MustParseRange("10.0.1.40-10.0.2.3"),
		}
		var all []netip.Addr
		for _, r := range ranges {
			for a := r.First; !r.Last.Less(a); a = a.Next() {
				all = append(all, a)
			}
		}
		s := newFreeSet(FamilyV4, avoid)
		s.build(ranges)
		free := map[netip.Addr]bool{}
		for _, a := range all {
			free[a] = !(avoid && isBuggyIPv4(a))
		}
		for step := range 20000 {
			a := all[rng.IntN(len(all))]
			if rng.IntN(2) == 0 {
				if got := s.take(a); got != free[a] {
					t.Fatalf("step %d: take(%s) = %v, want %v", step, a, got, free[a])
				}
				free[a] = false
			} else if !free[a] {
				s.put(a)
				free[a] = !(avoid && isBuggyIPv4(a))
			}
			if step%97 == 0 || step > 19900 {
				var lowest netip.Addr
				for _, b := range all {
					if s.contains(b) != free[b] {
						t.Fatalf("step %d (avoid=%v): contains(%s) = %v, want %v; %v", step, avoid, b, !free[b], free[b], intervals(s))
					}
					if free[b] && !lowest.IsValid() {
						lowest = b
					}
				}
				if got, _ := s.lowest(); got != lowest {
					t.Fatalf("lowest = %s, want %s", got, lowest)
				}
				// Canonical: a set built from scratch from the free
				// addresses has the same intervals.
				var fresh []Range
				for _, b := range all {
					if free[b] {
						fresh = append(fresh, Range{b, b})
					}
				}
				s2 := newFreeSet(FamilyV4, avoid)
				s2.build(fresh)
				if g, w := intervals(s), intervals(s2); len(g) != len(w) {
					t.Fatalf("not canonical: %v vs %v", g, w)
				} else {
					for i := range g {
						if g[i] != w[i] {
							t.Fatalf("not canonical: %v vs %v", g, w)
						}
					}
				}
			}
		}
	}
}
