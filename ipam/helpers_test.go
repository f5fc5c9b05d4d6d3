package ipam

import (
	"net/netip"
	"slices"
	"testing"
)

// mkPool builds a Pool from range strings.
func mkPool(name string, ranges ...string) Pool {
	p := Pool{Name: name}
	for _, r := range ranges {
		p.Ranges = append(p.Ranges, MustParseRange(r))
	}
	return p
}

func avoid(p Pool) Pool { p.AvoidBuggyIPs = true; return p }

// newAlloc returns an allocator with the given pools.
func newAlloc(t testing.TB, pools ...Pool) *Allocator {
	t.Helper()
	a := New()
	if err := a.SetPools(pools); err != nil {
		t.Fatalf("SetPools: %v", err)
	}
	mustCheck(t, a)
	return a
}

func mustCheck(t testing.TB, a *Allocator) {
	t.Helper()
	if err := checkInvariants(a); err != nil {
		t.Fatalf("invariants: %v\n%s", err, dump(a))
	}
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func svc(key string, ports ...Port) Service { return Service{Key: key, Ports: ports} }

func shared(key, sharingKey string, ports ...Port) Service {
	return Service{Key: key, SharingKey: sharingKey, Ports: ports}
}

func tcp(p int32) Port { return Port{Protocol: "TCP", Port: p} }
func udp(p int32) Port { return Port{Protocol: "UDP", Port: p} }

// v4 is a single-stack IPv4 request auto-allocating from candidates.
func v4(candidates ...string) Request {
	return Request{Families: []Family{FamilyV4}, Candidates: candidates}
}

func v6(candidates ...string) Request {
	return Request{Families: []Family{FamilyV6}, Candidates: candidates}
}

func dual(requireAll bool, candidates ...string) Request {
	return Request{Families: []Family{FamilyV4, FamilyV6}, RequireAll: requireAll, Candidates: candidates}
}

func withIPs(r Request, ips ...string) Request {
	for _, s := range ips {
		r.IPs = append(r.IPs, ip(s))
	}
	return r
}

func inPool(r Request, pool string) Request {
	r.Pool = pool
	r.Candidates = []string{pool}
	return r
}

// ensure calls Ensure, fails the test on error and checks invariants.
func ensure(t testing.TB, a *Allocator, s Service, r Request) []Holding {
	t.Helper()
	hs, err := a.Ensure(s, r)
	if err != nil {
		t.Fatalf("Ensure(%s, %+v): %v", s.Key, r, err)
	}
	mustCheck(t, a)
	return hs
}

// ensureFails calls Ensure, expects a non-partial error and an unchanged
// state, and returns the error.
func ensureFails(t testing.TB, a *Allocator, s Service, r Request) error {
	t.Helper()
	before := dump(a)
	hs, err := a.Ensure(s, r)
	if err == nil {
		t.Fatalf("Ensure(%s, %+v) = %v, want error", s.Key, r, hs)
	}
	if hs != nil {
		t.Errorf("Ensure failed with %v but returned holdings %v", err, hs)
	}
	if after := dump(a); after != before {
		t.Fatalf("failed Ensure changed the state:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	mustCheck(t, a)
	return err
}

func ipsOf(hs []Holding) []string {
	out := make([]string, len(hs))
	for i, h := range hs {
		out[i] = h.IP.String()
	}
	return out
}

func wantIPs(t testing.TB, hs []Holding, want ...string) {
	t.Helper()
	if got := ipsOf(hs); !slices.Equal(got, want) {
		t.Fatalf("got IPs %v, want %v", got, want)
	}
}

func wantErr(t testing.TB, err error, want string) {
	t.Helper()
	if err == nil {
		t.Fatalf("got no error, want %q", want)
	}
	if err.Error() != want {
		t.Fatalf("got error\n  %q\nwant\n  %q", err.Error(), want)
	}
}
