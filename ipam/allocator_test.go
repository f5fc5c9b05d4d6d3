package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

func TestLowestFirst(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/30"))
	wantIPs(t, ensure(t, a, svc("ns/a"), v4("a")), "10.0.0.0")
	wantIPs(t, ensure(t, a, svc("ns/b"), v4("a")), "10.0.0.1")
	wantIPs(t, ensure(t, a, svc("ns/c"), v4("a")), "10.0.0.2")
	if freed := a.Release("ns/a"); !slices.Equal(freed, []netip.Addr{ip("10.0.0.0")}) {
		t.Fatalf("Release freed %v", freed)
	}
	mustCheck(t, a)
	wantIPs(t, ensure(t, a, svc("ns/d"), v4("a")), "10.0.0.0")
	wantIPs(t, ensure(t, a, svc("ns/e"), v4("a")), "10.0.0.3")
	err := ensureFails(t, a, svc("ns/f"), v4("a"))
	wantErr(t, err, `pool "a": no free IPv4 address`)
	if !errors.Is(err, ErrNoFreeAddress) {
		t.Errorf("errors.Is(%v, ErrNoFreeAddress) = false", err)
	}
	// Ensure is idempotent: the same request keeps the same IP.
	wantIPs(t, ensure(t, a, svc("ns/b"), v4("a")), "10.0.0.1")
	wantIPs(t, ensure(t, a, svc("ns/b"), v4("a")), "10.0.0.1")
}

func TestLowestFirstIPv6(t *testing.T) {
	a := newAlloc(t, mkPool("a", "2001:db8::/64"))
	wantIPs(t, ensure(t, a, svc("ns/a"), v6("a")), "2001:db8::")
	wantIPs(t, ensure(t, a, svc("ns/b"), v6("a")), "2001:db8::1")
	err := ensureFails(t, a, svc("ns/c"), v4("a"))
	wantErr(t, err, `pool "a": no free IPv4 address`)
}

func TestAvoidBuggyIPs(t *testing.T) {
	a := newAlloc(t, avoid(mkPool("a", "10.0.0.254-10.0.1.1")), mkPool("b", "10.0.2.0/31"))
	wantIPs(t, ensure(t, a, svc("ns/a"), v4("a")), "10.0.0.254")
	wantIPs(t, ensure(t, a, svc("ns/b"), v4("a")), "10.0.1.1")
	wantErr(t, ensureFails(t, a, svc("ns/c"), v4("a")), `pool "a": no free IPv4 address`)
	// A pool without the option hands out .0.
	wantIPs(t, ensure(t, a, svc("ns/c"), v4("b")), "10.0.2.0")

	err := ensureFails(t, a, svc("ns/d"), withIPs(v4(), "10.0.1.0"))
	wantErr(t, err, `10.0.1.0 is excluded from pool "a" by avoidBuggyIPs (no addresses ending in .0 or .255)`)
	if !errors.Is(err, ErrNotInPool) {
		t.Errorf("not ErrNotInPool: %v", err)
	}
	u, _ := a.Usage("a")
	if want := (Usage{Total: 2, Assigned: 2, Available: 0}); u[FamilyV4] != want {
		t.Errorf("Usage = %+v, want %+v", u[FamilyV4], want)
	}
	// Released addresses come back in order.
	a.Release("ns/a")
	mustCheck(t, a)
	wantIPs(t, ensure(t, a, svc("ns/e"), v4("a")), "10.0.0.254")
}

func TestAvoidBuggyIPsRestored(t *testing.T) {
	// A .0 address restored from a Service status stays held (it works
	// for that service) but is never handed out again.
	a := newAlloc(t, avoid(mkPool("a", "10.0.0.0/30")))
	hs, err := a.Restore(svc("ns/old"), []netip.Addr{ip("10.0.0.0")})
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
	if want := []Holding{{IP: ip("10.0.0.0"), Pool: "a"}}; !slices.Equal(hs, want) {
		t.Fatalf("Restore = %v, want %v", hs, want)
	}
	if n := a.InUse("a"); n != 1 {
		t.Errorf("InUse = %d, want 1", n)
	}
	u, _ := a.Usage("a")
	if want := (Usage{Total: 3, Assigned: 0, Available: 3}); u[FamilyV4] != want {
		t.Errorf("Usage = %+v, want %+v", u[FamilyV4], want)
	}
	if freed := a.Release("ns/old"); len(freed) != 1 {
		t.Errorf("Release freed %v", freed)
	}
	mustCheck(t, a)
	wantIPs(t, ensure(t, a, svc("ns/a"), v4("a")), "10.0.0.1")
}
