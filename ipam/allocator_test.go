package ipam

import (
	"errors"
	"math"
	"net/netip"
	"slices"
	"strings"
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

func TestRequestedIP(t *testing.T) {
	type holder struct {
		svc Service
		ip  string
	}
	local := func(s Service, sel string) Service { s.Local, s.Selector = true, sel; return s }
	tests := []struct {
		name    string
		holders []holder
		svc     Service
		ip      string
		pool    string
		err     string
		is      error
		users   []string
	}{
		{name: "free", svc: svc("ns/b"), ip: "10.0.0.5", users: []string{"ns/b"}},
		{
			name:    "held by compatible",
			holders: []holder{{shared("ns/a", "k", tcp(80)), "10.0.0.5"}},
			svc:     shared("ns/b", "k", tcp(443)), ip: "10.0.0.5",
			users: []string{"ns/a", "ns/b"},
		},
		{
			name:    "held by compatible Local services with the same selector",
			holders: []holder{{local(shared("ns/a", "k", tcp(80)), "app=x"), "10.0.0.5"}},
			svc:     local(shared("ns/b", "k", tcp(443)), "app=x"), ip: "10.0.0.5",
			users: []string{"ns/a", "ns/b"},
		},
		{
			name:    "key mismatch: newcomer does not share",
			holders: []holder{{shared("ns/a", "k", tcp(80)), "10.0.0.5"}},
			svc:     svc("ns/b", tcp(443)), ip: "10.0.0.5",
			err: `IP 10.0.0.5 is held by ns/a, which does not share with ns/b (sharing key "k" vs "")`,
			is:  ErrConflict,
		},
		{
			name:    "key mismatch: holder does not share",
			holders: []holder{{svc("ns/a", tcp(80)), "10.0.0.5"}},
			svc:     shared("ns/b", "k", tcp(443)), ip: "10.0.0.5",
			err: `IP 10.0.0.5 is held by ns/a, which does not share with ns/b (sharing key "" vs "k")`,
			is:  ErrConflict,
		},
		{
			name:    "key mismatch: different keys",
			holders: []holder{{shared("ns/a", "k1", tcp(80)), "10.0.0.5"}},
			svc:     shared("ns/b", "k2", tcp(443)), ip: "10.0.0.5",
			err: `IP 10.0.0.5 is held by ns/a, which does not share with ns/b (sharing key "k1" vs "k2")`,
		},
		{
			name:    "port overlap",
			holders: []holder{{shared("ns/a", "k", tcp(80), udp(53)), "10.0.0.5"}},
			svc:     shared("ns/b", "k", tcp(443), udp(53)), ip: "10.0.0.5",
			err: `IP 10.0.0.5 is held by ns/a: port UDP/53 is used by both`,
			is:  ErrConflict,
		},
		{
			name:    "same port number, other protocol",
			holders: []holder{{shared("ns/a", "k", tcp(53)), "10.0.0.5"}},
			svc:     shared("ns/b", "k", udp(53)), ip: "10.0.0.5",
			users: []string{"ns/a", "ns/b"},
		},
		{
			name:    "Local selector mismatch",
			holders: []holder{{local(shared("ns/a", "k", tcp(80)), "app=x"), "10.0.0.5"}},
			svc:     local(shared("ns/b", "k", tcp(443)), "app=y"), ip: "10.0.0.5",
			err: `IP 10.0.0.5 is held by ns/a: externalTrafficPolicy Local requires both services to select the same pods (selector "app=x" vs "app=y")`,
			is:  ErrConflict,
		},
		{
			name:    "Local newcomer, Cluster holder with other pods",
			holders: []holder{{shared("ns/a", "k", tcp(80)), "10.0.0.5"}},
			svc:     local(shared("ns/b", "k", tcp(443)), "app=y"), ip: "10.0.0.5",
			err: `IP 10.0.0.5 is held by ns/a: externalTrafficPolicy Local requires both services to select the same pods (selector "" vs "app=y")`,
		},
		{
			name: "must be compatible with every holder",
			holders: []holder{
				{shared("ns/a", "k", tcp(80)), "10.0.0.5"},
				{shared("ns/c", "k", tcp(443)), "10.0.0.5"},
				{shared("ns/d", "k", udp(1)), "10.0.0.5"},
			},
			svc: shared("ns/b", "k", tcp(443), udp(1)), ip: "10.0.0.5",
			err: `IP 10.0.0.5 is held by ns/c: port TCP/443 is used by both (also incompatible with ns/d)`,
		},
		{
			name: "not inside any pool", svc: svc("ns/b"), ip: "10.9.9.9",
			err: "10.9.9.9 is not inside any pool", is: ErrNotInPool,
		},
		{
			name: "outside the named pool", svc: svc("ns/b"), ip: "10.0.0.5", pool: "b",
			err: `10.0.0.5 is in pool "a", not in the requested pool "b"`, is: ErrNotInPool,
		},
		{name: "inside the named pool", svc: svc("ns/b"), ip: "10.0.1.1", pool: "b", users: []string{"ns/b"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAlloc(t, mkPool("a", "10.0.0.0/24"), mkPool("b", "10.0.1.0/24"))
			for _, h := range tt.holders {
				ensure(t, a, h.svc, withIPs(v4(), h.ip))
			}
			req := withIPs(v4("a", "b"), tt.ip)
			if tt.pool != "" {
				req = inPool(req, tt.pool)
			}
			if tt.err != "" {
				err := ensureFails(t, a, tt.svc, req)
				wantErr(t, err, tt.err)
				if tt.is != nil && !errors.Is(err, tt.is) {
					t.Errorf("errors.Is(%v, %v) = false", err, tt.is)
				}
				var ce *ConflictError
				if errors.Is(err, ErrConflict) && (!errors.As(err, &ce) || ce.IP != ip(tt.ip) || ce.Service != tt.svc.Key) {
					t.Errorf("conflict error %#v lacks details", ce)
				}
				return
			}
			wantIPs(t, ensure(t, a, tt.svc, req), tt.ip)
			if got := a.Users(ip(tt.ip)); !slices.Equal(got, tt.users) {
				t.Errorf("Users = %v, want %v", got, tt.users)
			}
		})
	}
}

func TestRequestValidation(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24", "2001:db8::/120"))
	tests := []struct {
		name string
		svc  Service
		req  Request
		err  string
	}{
		{"no key", Service{}, v4("a"), "service has an empty key"},
		{"no family", svc("ns/a"), Request{Candidates: []string{"a"}}, "a request wants one or two address families, not 0"},
		{"bad family", svc("ns/a"), Request{Families: []Family{7}}, "unknown address family Family(7)"},
		{"family twice", svc("ns/a"), Request{Families: []Family{FamilyV4, FamilyV4}}, "address family IPv4 is listed twice"},
		{"IP of unwanted family", svc("ns/a"), withIPs(v4("a"), "2001:db8::1"),
			"requested IP 2001:db8::1 is IPv6, but the service's families are IPv4"},
		{"two IPs of one family", svc("ns/a"), withIPs(dual(false, "a"), "10.0.0.1", "10.0.0.2"),
			"two IPv4 addresses requested (10.0.0.1 and 10.0.0.2); at most one per family"},
		{"mapped IP", svc("ns/a"), withIPs(v6("a"), "::ffff:10.0.0.1"),
			"IP ::ffff:10.0.0.1 is IPv4-mapped IPv6; write it as 10.0.0.1"},
		{"zero IP", svc("ns/a"), Request{Families: []Family{FamilyV4}, IPs: []netip.Addr{{}}}, "invalid (zero) IP address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := ensureFails(t, a, tt.svc, tt.req)
			wantErr(t, err, tt.err)
			if !errors.Is(err, ErrInvalidRequest) {
				t.Errorf("not ErrInvalidRequest: %v", err)
			}
		})
	}
}

func TestNamedPool(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24"), mkPool("b", "10.0.1.0/31"))
	wantIPs(t, ensure(t, a, svc("ns/a"), inPool(v4(), "b")), "10.0.1.0")
	wantIPs(t, ensure(t, a, svc("ns/b"), inPool(v4(), "b")), "10.0.1.1")
	// The named pool is a hard constraint: pool a has room, but no.
	wantErr(t, ensureFails(t, a, svc("ns/c"), inPool(v4(), "b")), `pool "b": no free IPv4 address`)
	// Candidates other than the named pool are ignored.
	req := inPool(v4(), "b")
	req.Candidates = []string{"a", "b"}
	wantErr(t, ensureFails(t, a, svc("ns/c"), req), `pool "b": no free IPv4 address`)
	// Unknown pool.
	err := ensureFails(t, a, svc("ns/c"), inPool(v4(), "nope"))
	wantErr(t, err, `pool "nope" does not exist`)
	if !errors.Is(err, ErrUnknownPool) {
		t.Errorf("not ErrUnknownPool: %v", err)
	}
	// Switching a service to another named pool moves it and frees the old IP.
	wantIPs(t, ensure(t, a, svc("ns/b"), inPool(v4(), "a")), "10.0.0.0")
	wantIPs(t, ensure(t, a, svc("ns/c"), inPool(v4(), "b")), "10.0.1.1")
}

func TestCandidateOrder(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/31"), mkPool("b", "10.0.1.0/31"), mkPool("c", "10.0.2.0/24"))
	wantIPs(t, ensure(t, a, svc("ns/1"), v4("b", "a")), "10.0.1.0")
	wantIPs(t, ensure(t, a, svc("ns/2"), v4("b", "a")), "10.0.1.1")
	wantIPs(t, ensure(t, a, svc("ns/3"), v4("b", "a")), "10.0.0.0")
	wantIPs(t, ensure(t, a, svc("ns/4"), v4("b", "a")), "10.0.0.1")
	err := ensureFails(t, a, svc("ns/5"), v4("b", "a"))
	wantErr(t, err, `no pool has a free IPv4 address (tried "b", "a")`)
	if !errors.Is(err, ErrNoFreeAddress) {
		t.Errorf("not ErrNoFreeAddress: %v", err)
	}
	err = ensureFails(t, a, svc("ns/5"), v4("b", "x"))
	wantErr(t, err, `no pool has a free IPv4 address (pool "b": no free IPv4 address; pool "x" does not exist)`)
	if !errors.Is(err, ErrNoFreeAddress) || !errors.Is(err, ErrUnknownPool) {
		t.Errorf("not ErrNoFreeAddress and ErrUnknownPool: %v", err)
	}
	err = ensureFails(t, a, svc("ns/5"), v4())
	wantErr(t, err, "no pool may be used to allocate an IPv4 address")
	if !errors.Is(err, ErrNoCandidates) {
		t.Errorf("not ErrNoCandidates: %v", err)
	}
	wantIPs(t, ensure(t, a, svc("ns/5"), v4("b", "a", "c")), "10.0.2.0")
	// A kept IP is not moved to a now-preferred pool.
	a.Release("ns/1")
	wantIPs(t, ensure(t, a, svc("ns/5"), v4("b", "a", "c")), "10.0.2.0")
}

func TestDualStackRequireAll(t *testing.T) {
	pools := []Pool{
		mkPool("v4only", "10.0.0.0/24"),
		mkPool("both", "10.0.1.0/24", "2001:db8:1::/120"),
		mkPool("tiny", "10.0.2.0/32", "2001:db8:2::/127"),
	}
	t.Run("both from one pool", func(t *testing.T) {
		a := newAlloc(t, pools...)
		hs := ensure(t, a, svc("ns/a"), dual(true, "v4only", "both"))
		want := []Holding{{IP: ip("10.0.1.0"), Pool: "both"}, {IP: ip("2001:db8:1::"), Pool: "both"}}
		if !slices.Equal(hs, want) {
			t.Fatalf("got %v, want %v", hs, want)
		}
		// Holdings follow the order of Families.
		r := dual(true, "v4only", "both")
		r.Families = []Family{FamilyV6, FamilyV4}
		wantIPs(t, ensure(t, a, svc("ns/a"), r), "2001:db8:1::", "10.0.1.0")
	})
	t.Run("atomic failure when the only candidate lacks a family", func(t *testing.T) {
		a := newAlloc(t, pools...)
		ensure(t, a, svc("ns/x"), v4("v4only"))
		err := ensureFails(t, a, svc("ns/a"), dual(true, "v4only"))
		wantErr(t, err, `RequireDualStack: pool "v4only": no free IPv6 address`)
		if !errors.Is(err, ErrDualStack) || !errors.Is(err, ErrNoFreeAddress) {
			t.Errorf("not ErrDualStack and ErrNoFreeAddress: %v", err)
		}
		// Pool "both" has IPv6 but is not a candidate: still nothing.
		if a.Holdings("ns/a") != nil {
			t.Fatal("partial dual-stack allocation")
		}
	})
	t.Run("falls back to a pool with both", func(t *testing.T) {
		a := newAlloc(t, pools...)
		ensure(t, a, svc("ns/x"), v6("tiny"))
		ensure(t, a, svc("ns/y"), v6("tiny"))
		// tiny has an IPv4 address but no IPv6 left: both come from "both".
		wantIPs(t, ensure(t, a, svc("ns/a"), dual(true, "tiny", "both")), "10.0.1.0", "2001:db8:1::")
		err := ensureFails(t, a, svc("ns/b"), dual(true, "tiny", "v4only"))
		wantErr(t, err, `RequireDualStack: no candidate pool can provide IPv4, IPv6 (pool "tiny": no free IPv6 address; pool "v4only": no free IPv6 address)`)
	})
	t.Run("kept IP anchors the pool", func(t *testing.T) {
		a := newAlloc(t, pools...)
		wantIPs(t, ensure(t, a, svc("ns/a"), v4("v4only")), "10.0.0.0")
		// Upgrading to RequireAll: v4only cannot pair the kept IPv4.
		err := ensureFails(t, a, svc("ns/a"), dual(true, "v4only", "both"))
		wantErr(t, err, `RequireDualStack: the IPv4 address 10.0.0.0 is from pool "v4only", so IPv6 must be too: pool "v4only": no free IPv6 address`)
		if got := a.Holdings("ns/a"); len(got) != 1 || got[0].IP != ip("10.0.0.0") {
			t.Fatalf("holdings changed: %v", got)
		}
		// In a pool with both families the kept IP is paired.
		wantIPs(t, ensure(t, a, svc("ns/b"), v4("both")), "10.0.1.0")
		wantIPs(t, ensure(t, a, svc("ns/b"), dual(true, "v4only", "both")), "10.0.1.0", "2001:db8:1::")
	})
	t.Run("requested IPs must share a pool", func(t *testing.T) {
		a := newAlloc(t, pools...)
		err := ensureFails(t, a, svc("ns/a"), withIPs(dual(true, "both"), "10.0.0.7", "2001:db8:1::7"))
		wantErr(t, err, `RequireDualStack: 2001:db8:1::7 is in pool "both", but the IPv4 address 10.0.0.7 is from pool "v4only"`)
		wantIPs(t, ensure(t, a, svc("ns/a"), withIPs(dual(true, "both"), "10.0.1.7", "2001:db8:1::7")), "10.0.1.7", "2001:db8:1::7")
		// One requested, the other auto-allocated from the same pool.
		wantIPs(t, ensure(t, a, svc("ns/b"), withIPs(dual(true, "v4only", "both"), "2001:db8:1::9")), "10.0.1.0", "2001:db8:1::9")
	})
	t.Run("kept IPs from two pools", func(t *testing.T) {
		a := newAlloc(t, pools...)
		ensure(t, a, svc("ns/a"), withIPs(dual(false), "10.0.0.1", "2001:db8:1::1"))
		// RequireAll now: the first family's pool wins; IPv6 is re-planned
		// from v4only, which has none: fail, keep both.
		err := ensureFails(t, a, svc("ns/a"), dual(true, "v4only", "both"))
		if !errors.Is(err, ErrDualStack) {
			t.Fatalf("not ErrDualStack: %v", err)
		}
		// IPv6 first: v6 kept in "both", IPv4 re-planned from "both".
		r := dual(true, "v4only", "both")
		r.Families = []Family{FamilyV6, FamilyV4}
		wantIPs(t, ensure(t, a, svc("ns/a"), r), "2001:db8:1::1", "10.0.1.0")
		if users := a.Users(ip("10.0.0.1")); users != nil {
			t.Errorf("old IPv4 still held by %v", users)
		}
	})
}

func TestPreferDualStackPartial(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24"))
	hs, err := a.Ensure(svc("ns/a"), dual(false, "a"))
	mustCheck(t, a)
	var pe *PartialError
	if !errors.As(err, &pe) {
		t.Fatalf("got %v, want *PartialError", err)
	}
	wantErr(t, err, `partial allocation: IPv6 unavailable: pool "a": no free IPv6 address`)
	if len(pe.Missing) != 1 || pe.Missing[0].Family != FamilyV6 || !errors.Is(err, ErrNoFreeAddress) {
		t.Fatalf("bad partial error %+v", pe)
	}
	wantIPs(t, hs, "10.0.0.0")
	if got := a.Holdings("ns/a"); !slices.Equal(got, hs) {
		t.Fatalf("partial holdings not committed: %v", got)
	}

	// Later the pool gains IPv6: the retry keeps the IPv4 and adds IPv6.
	if err := a.SetPools([]Pool{mkPool("a", "10.0.0.0/24", "2001:db8::/64")}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
	wantIPs(t, ensure(t, a, svc("ns/a"), dual(false, "a")), "10.0.0.0", "2001:db8::")

	// Nothing at all: a plain error, nothing changed.
	b := newAlloc(t, mkPool("a", "10.0.0.0/32"))
	ensure(t, b, svc("ns/x"), v4("a"))
	err = ensureFails(t, b, svc("ns/a"), dual(false, "a"))
	wantErr(t, err, `IPv4 unavailable: pool "a": no free IPv4 address; IPv6 unavailable: pool "a": no free IPv6 address`)
	if errors.As(err, &pe) {
		t.Errorf("total failure reported as partial")
	}

	// Partial with a requested IP that conflicts.
	c := newAlloc(t, mkPool("a", "10.0.0.0/24", "2001:db8::/120"))
	ensure(t, c, svc("ns/x"), withIPs(v6(), "2001:db8::5"))
	hs, err = c.Ensure(svc("ns/a"), withIPs(dual(false, "a"), "2001:db8::5"))
	mustCheck(t, c)
	if !errors.As(err, &pe) || !errors.Is(err, ErrConflict) {
		t.Fatalf("got %v, want partial conflict", err)
	}
	wantIPs(t, hs, "10.0.0.0")
}

func TestKeepOnReconfigure(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/29"), mkPool("b", "10.0.1.0/30"))
	ensure(t, a, svc("ns/low"), v4("a"))                                 // 10.0.0.0
	ensure(t, a, svc("ns/high"), withIPs(inPool(v4(), "a"), "10.0.0.6")) // 10.0.0.6

	// Shrink a: 10.0.0.6 is outside, an orphan still held.
	if err := a.SetPools([]Pool{mkPool("a", "10.0.0.0/30"), mkPool("b", "10.0.1.0/30")}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
	orphan := []Holding{{IP: ip("10.0.0.6"), Pool: "a", Orphan: true}}
	if got := a.Holdings("ns/high"); !slices.Equal(got, orphan) {
		t.Fatalf("after shrink: %v, want %v", got, orphan)
	}
	if n := a.InUse("a"); n != 1 {
		t.Errorf("InUse(a) = %d, want 1 (orphans are not in the pool)", n)
	}
	// The same request (named pool a, requested IP) keeps the orphan.
	if got := ensure(t, a, svc("ns/high"), withIPs(inPool(v4(), "a"), "10.0.0.6")); !slices.Equal(got, orphan) {
		t.Fatalf("Ensure moved the orphan: %v", got)
	}
	// So does an auto request: the IP never moves on its own.
	if got := ensure(t, a, svc("ns/high"), v4("a", "b")); !slices.Equal(got, orphan) {
		t.Fatalf("Ensure moved the orphan: %v", got)
	}
	// Nobody else can request it: it is in no pool.
	wantErr(t, ensureFails(t, a, svc("ns/other"), withIPs(v4(), "10.0.0.6")), "10.0.0.6 is not inside any pool")

	// Moving 10.0.0.4/30 to pool b re-attributes the orphan to b...
	if err := a.SetPools([]Pool{mkPool("a", "10.0.0.0/30"), mkPool("b", "10.0.1.0/30", "10.0.0.4/30")}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
	if got, want := a.Holdings("ns/high"), []Holding{{IP: ip("10.0.0.6"), Pool: "b"}}; !slices.Equal(got, want) {
		t.Fatalf("after move: %v, want %v", got, want)
	}
	// ...and the named-pool request for a no longer accepts it.
	wantIPs(t, ensure(t, a, svc("ns/high"), inPool(v4(), "a")), "10.0.0.1")

	// Grow a back over 10.0.0.4/30: a held IP there is re-attributed.
	ensure(t, a, svc("ns/mid"), withIPs(v4(), "10.0.0.5"))
	if err := a.SetPools([]Pool{mkPool("a", "10.0.0.0/29"), mkPool("b", "10.0.1.0/30")}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
	if got, want := a.Holdings("ns/mid"), []Holding{{IP: ip("10.0.0.5"), Pool: "a"}}; !slices.Equal(got, want) {
		t.Fatalf("after grow: %v, want %v", got, want)
	}
	u, _ := a.Usage("a")
	if want := (Usage{Total: 8, Assigned: 3, Available: 5}); u[FamilyV4] != want {
		t.Errorf("Usage(a) = %+v, want %+v", u[FamilyV4], want)
	}
	// Held IPs are excluded from the rebuilt free set.
	wantIPs(t, ensure(t, a, svc("ns/new"), v4("a")), "10.0.0.2")

	// Removing every pool orphans everything; releasing an orphan frees
	// nothing anyone could take.
	if err := a.SetPools(nil); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
	for _, k := range a.Services() {
		for _, h := range a.Holdings(k) {
			if !h.Orphan {
				t.Errorf("%s: %v not orphaned", k, h)
			}
		}
	}
	if freed := a.Release("ns/mid"); !slices.Equal(freed, []netip.Addr{ip("10.0.0.5")}) {
		t.Errorf("Release = %v", freed)
	}
	mustCheck(t, a)
}

func TestEnsureFailureLeavesStateUnchanged(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/30", "2001:db8::/127"), mkPool("b", "10.0.1.0/32"))
	ensure(t, a, shared("ns/a", "k", tcp(80)), withIPs(dual(true, "a"), "10.0.0.1", "2001:db8::1"))
	ensure(t, a, shared("ns/b", "k", tcp(443)), withIPs(v4("a"), "10.0.0.1"))
	ensure(t, a, svc("ns/c"), v4("b"))
	failing := []struct {
		svc Service
		req Request
	}{
		// ns/b changes its ports to collide and asks for a taken IP.
		{shared("ns/b", "k", tcp(80)), withIPs(v4("a"), "10.0.1.0")},
		// ns/b moves to a full pool.
		{shared("ns/b", "k", tcp(443)), inPool(v4(), "b")},
		// ns/a wants dual stack from b, which has no IPv6.
		{shared("ns/a", "k", tcp(80)), inPool(dual(true), "b")},
		// ns/a's requested IPv6 is outside every pool.
		{shared("ns/a", "k", tcp(80)), withIPs(dual(true, "a"), "10.0.0.1", "2001:db8::9")},
		// A new service asks for too much.
		{svc("ns/d"), withIPs(v4("a"), "10.0.0.1")},
		{svc("ns/d"), inPool(dual(false), "b")},
		// Invalid requests.
		{svc("ns/a"), Request{}},
	}
	for _, f := range failing {
		ensureFails(t, a, f.svc, f.req)
	}
	// The changed-but-failed request did not update ns/b's ports: a
	// service on TCP/80 still conflicts with ns/a only.
	if got := a.Users(ip("10.0.0.1")); !slices.Equal(got, []string{"ns/a", "ns/b"}) {
		t.Fatalf("Users = %v", got)
	}
}

func TestEnsureReleasesDroppedIPs(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24", "2001:db8::/120"))
	ensure(t, a, svc("ns/a"), withIPs(dual(false, "a"), "10.0.0.5", "2001:db8::5"))
	// New requested IPv4: the old one is released, IPv6 stays.
	wantIPs(t, ensure(t, a, svc("ns/a"), withIPs(dual(false, "a"), "10.0.0.6", "2001:db8::5")), "10.0.0.6", "2001:db8::5")
	if a.Users(ip("10.0.0.5")) != nil {
		t.Error("10.0.0.5 still held")
	}
	// Requesting only an IPv4 keeps the auto-allocated... here, previously
	// requested IPv6: a family without a requested IP keeps what it has.
	wantIPs(t, ensure(t, a, svc("ns/a"), withIPs(dual(false, "a"), "10.0.0.6")), "10.0.0.6", "2001:db8::5")
	// Dropping a family releases it.
	wantIPs(t, ensure(t, a, svc("ns/a"), v4("a")), "10.0.0.6")
	if a.Users(ip("2001:db8::5")) != nil {
		t.Error("2001:db8::5 still held")
	}
	u, _ := a.Usage("a")
	if u[FamilyV6].Assigned != 0 || u[FamilyV4].Assigned != 1 {
		t.Errorf("Usage = %+v", u)
	}
}

func TestSharing(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24"), mkPool("b", "10.0.1.0/24"))
	wantIPs(t, ensure(t, a, svc("ns/plain"), v4("a")), "10.0.0.0")
	wantIPs(t, ensure(t, a, shared("ns/s1", "k", tcp(80)), v4("a")), "10.0.0.1")
	// Same key, disjoint ports: shares.
	wantIPs(t, ensure(t, a, shared("ns/s2", "k", tcp(443)), v4("a")), "10.0.0.1")
	// Port overlap with s2: next free.
	wantIPs(t, ensure(t, a, shared("ns/s3", "k", tcp(443)), v4("a")), "10.0.0.2")
	// Compatible with both 10.0.0.1 and 10.0.0.2: lowest wins.
	wantIPs(t, ensure(t, a, shared("ns/s4", "k", udp(53)), v4("a")), "10.0.0.1")
	// Compatible with 10.0.0.2 only (s1 and s2 use 80/443 on .1).
	wantIPs(t, ensure(t, a, shared("ns/s5", "k", tcp(80)), v4("a")), "10.0.0.2")
	// Other key: no sharing.
	wantIPs(t, ensure(t, a, shared("ns/o1", "other", tcp(8080)), v4("a")), "10.0.0.3")
	// Sharing is per candidate pool: in pool b there is nothing to share.
	wantIPs(t, ensure(t, a, shared("ns/s6", "k", tcp(9)), v4("b")), "10.0.1.0")
	// Local with a different selector than the Cluster holders: not shared.
	l := shared("ns/l1", "k", tcp(7))
	l.Local, l.Selector = true, "app=l"
	wantIPs(t, ensure(t, a, l, v4("a")), "10.0.0.4")
	if got := a.Users(ip("10.0.0.1")); !slices.Equal(got, []string{"ns/s1", "ns/s2", "ns/s4"}) {
		t.Errorf("Users(10.0.0.1) = %v", got)
	}
	// Released only when the last sharer leaves.
	if freed := a.Release("ns/s1"); freed != nil {
		t.Errorf("Release(s1) freed %v", freed)
	}
	a.Release("ns/s2")
	if freed := a.Release("ns/s4"); !slices.Equal(freed, []netip.Addr{ip("10.0.0.1")}) {
		t.Errorf("Release(s4) freed %v", freed)
	}
	mustCheck(t, a)
	wantIPs(t, ensure(t, a, svc("ns/next"), v4("a")), "10.0.0.1")
}

func TestSharingKeptIPBecomesIncompatible(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24"))
	wantIPs(t, ensure(t, a, shared("ns/a", "k", tcp(80)), v4("a")), "10.0.0.0")
	wantIPs(t, ensure(t, a, shared("ns/b", "k", tcp(443)), v4("a")), "10.0.0.0")
	// b now also wants port 80: it can no longer share and moves.
	wantIPs(t, ensure(t, a, shared("ns/b", "k", tcp(443), tcp(80)), v4("a")), "10.0.0.1")
	// b changes its sharing key: the sharing index follows.
	wantIPs(t, ensure(t, a, shared("ns/b", "k2", tcp(443), tcp(80)), v4("a")), "10.0.0.1")
	wantIPs(t, ensure(t, a, shared("ns/c", "k2", tcp(22)), v4("a")), "10.0.0.1")
	wantIPs(t, ensure(t, a, shared("ns/d", "k", tcp(22)), v4("a")), "10.0.0.0")
	// b stops sharing: c holds it too, so b must move.
	wantIPs(t, ensure(t, a, svc("ns/b", tcp(443), tcp(80)), v4("a")), "10.0.0.2")
}

func TestRestore(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24", "2001:db8::/120"))
	s := shared("ns/a", "k", tcp(80))
	hs, err := a.Restore(s, []netip.Addr{ip("10.0.0.9"), ip("2001:db8:ffff::1")})
	if err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
	want := []Holding{{IP: ip("10.0.0.9"), Pool: "a"}, {IP: ip("2001:db8:ffff::1"), Orphan: true}}
	if !slices.Equal(hs, want) {
		t.Fatalf("Restore = %v, want %v", hs, want)
	}
	// Idempotent.
	before := dump(a)
	if hs, err = a.Restore(s, []netip.Addr{ip("10.0.0.9"), ip("2001:db8:ffff::1")}); err != nil || !slices.Equal(hs, want) {
		t.Fatalf("second Restore = %v, %v", hs, err)
	}
	if dump(a) != before {
		t.Fatalf("second Restore changed the state")
	}
	// Compatible sharer.
	if _, err := a.Restore(shared("ns/b", "k", tcp(443)), []netip.Addr{ip("10.0.0.9")}); err != nil {
		t.Fatal(err)
	}
	// Conflicting one: error, nothing changed.
	before = dump(a)
	_, err = a.Restore(shared("ns/c", "k", tcp(443)), []netip.Addr{ip("2001:db8::3"), ip("10.0.0.9")})
	wantErr(t, err, "restoring ns/c: IP 10.0.0.9 is held by ns/b: port TCP/443 is used by both")
	if !errors.Is(err, ErrConflict) {
		t.Errorf("not ErrConflict: %v", err)
	}
	_, err = a.Restore(svc("ns/c"), []netip.Addr{ip("10.0.0.10"), ip("10.0.0.11")})
	wantErr(t, err, "restoring ns/c: two IPv4 addresses (10.0.0.10 and 10.0.0.11); a service holds at most one per family")
	if dump(a) != before {
		t.Fatalf("failed Restore changed the state")
	}
	mustCheck(t, a)
	// The restored IPs are not handed out again.
	wantIPs(t, ensure(t, a, svc("ns/d"), withIPs(v4("a"), "10.0.0.8")), "10.0.0.8")
	wantErr(t, ensureFails(t, a, svc("ns/e"), withIPs(v4("a"), "10.0.0.9")),
		`IP 10.0.0.9 is held by ns/a, which does not share with ns/e (sharing key "k" vs "") (also incompatible with ns/b)`)
	// Restore replaces what the service held.
	if _, err := a.Restore(s, []netip.Addr{ip("10.0.0.20")}); err != nil {
		t.Fatal(err)
	}
	mustCheck(t, a)
	if got := a.Users(ip("10.0.0.9")); !slices.Equal(got, []string{"ns/b"}) {
		t.Errorf("Users(10.0.0.9) = %v", got)
	}
	// An orphan keeps its pool name across Restore.
	b := newAlloc(t, mkPool("a", "10.0.0.0/24"))
	ensure(t, b, svc("ns/a"), v4("a"))
	if err := b.SetPools(nil); err != nil {
		t.Fatal(err)
	}
	hs, err = b.Restore(svc("ns/a"), []netip.Addr{ip("10.0.0.0")})
	if err != nil || !slices.Equal(hs, []Holding{{IP: ip("10.0.0.0"), Pool: "a", Orphan: true}}) {
		t.Fatalf("Restore of an orphan = %v, %v", hs, err)
	}
	mustCheck(t, b)
}

func TestRelease(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24", "2001:db8::/64"))
	ensure(t, a, svc("ns/a"), dual(true, "a"))
	if freed := a.Release("ns/a"); !slices.Equal(freed, []netip.Addr{ip("10.0.0.0"), ip("2001:db8::")}) {
		t.Fatalf("Release = %v", freed)
	}
	mustCheck(t, a)
	if a.Release("ns/a") != nil || a.Release("ns/never") != nil {
		t.Fatal("Release of nothing freed something")
	}
	if a.Holdings("ns/a") != nil || len(a.Services()) != 0 {
		t.Fatal("released service still listed")
	}
	u, _ := a.Usage("a")
	if u[FamilyV4].Assigned != 0 || u[FamilyV6].Assigned != 0 {
		t.Fatalf("Usage after release: %+v", u)
	}
}

func TestSetPoolsValidation(t *testing.T) {
	tests := []struct {
		name  string
		pools []Pool
		err   string
	}{
		{"empty name", []Pool{mkPool("a", "10.0.0.0/24"), mkPool("", "10.0.1.0/24")}, "pool #2 has an empty name"},
		{"duplicate", []Pool{mkPool("a", "10.0.0.0/24"), mkPool("a", "10.0.1.0/24")}, `pool name "a" is used twice`},
		{"reversed range", []Pool{{Name: "a", Ranges: []Range{{ip("10.0.0.9"), ip("10.0.0.1")}}}},
			`pool "a": range #1 (10.0.0.9-10.0.0.1): first address 10.0.0.9 is after last address 10.0.0.1`},
		{"mixed range", []Pool{{Name: "a", Ranges: []Range{{ip("10.0.0.1"), ip("2001:db8::1")}}}},
			`pool "a": range #1 (10.0.0.1-2001:db8::1): mixes IPv4 (10.0.0.1) and IPv6 (2001:db8::1)`},
		{"zero range", []Pool{{Name: "a", Ranges: []Range{{}}}}, `pool "a": range #1 (invalid IP-invalid IP): missing first or last address`},
		{"overlap within", []Pool{mkPool("a", "10.0.0.0/24", "10.0.0.128/25")},
			`pool "a": ranges 10.0.0.0/24 and 10.0.0.128/25 overlap on 10.0.0.128/25`},
		{"overlap across", []Pool{mkPool("b", "10.0.0.100-10.0.1.5"), mkPool("a", "10.0.0.0/24")},
			`pools "a" and "b" overlap on 10.0.0.100-10.0.0.255 (ranges 10.0.0.0/24 and 10.0.0.100-10.0.1.5)`},
		{"overlap hidden behind a wide range", []Pool{mkPool("a", "10.0.0.0/16"), mkPool("b", "10.0.1.0/24"), mkPool("c", "10.0.200.0/24")},
			`pools "a" and "b" overlap on 10.0.1.0/24 (ranges 10.0.0.0/16 and 10.0.1.0/24)`},
		{"overlap IPv6", []Pool{mkPool("a", "2001:db8::/64"), mkPool("b", "2001:db8::ff/128")},
			`pools "a" and "b" overlap on 2001:db8::ff/128 (ranges 2001:db8::/64 and 2001:db8::ff/128)`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := newAlloc(t, mkPool("old", "10.9.0.0/24"))
			ensure(t, a, svc("ns/a"), v4("old"))
			before := dump(a)
			err := a.SetPools(tt.pools)
			wantErr(t, err, "invalid pool configuration: "+tt.err)
			if !errors.Is(err, ErrInvalidPools) {
				t.Errorf("not ErrInvalidPools")
			}
			if dump(a) != before {
				t.Fatalf("rejected SetPools changed the state")
			}
		})
	}
	// Adjacent and cross-family ranges are fine.
	newAlloc(t, mkPool("a", "10.0.0.0/24", "2001:db8::/64"), mkPool("b", "10.0.1.0/24", "2001:db8:0:1::/64"), Pool{Name: "empty"})
}

func TestUsage(t *testing.T) {
	a := newAlloc(t,
		mkPool("v4", "10.0.0.0/24"),
		avoid(mkPool("buggy", "10.0.1.0/24", "10.0.2.0/23")),
		mkPool("v6", "2001:db8::/64"),
		mkPool("v6big", "2001:db8:1::/48"),
		mkPool("mixed", "10.1.0.0/30", "2001:db8:2::/126"),
		Pool{Name: "empty"},
	)
	tests := []struct {
		pool string
		want map[Family]Usage
	}{
		{"v4", map[Family]Usage{FamilyV4: {256, 0, 256}}},
		{"buggy", map[Family]Usage{FamilyV4: {254 * 3, 0, 254 * 3}}},
		{"v6", map[Family]Usage{FamilyV6: {math.MaxUint64, 0, math.MaxUint64}}},
		{"v6big", map[Family]Usage{FamilyV6: {math.MaxUint64, 0, math.MaxUint64}}},
		{"mixed", map[Family]Usage{FamilyV4: {4, 0, 4}, FamilyV6: {4, 0, 4}}},
		{"empty", map[Family]Usage{}},
	}
	check := func() {
		t.Helper()
		for _, tt := range tests {
			got, ok := a.Usage(tt.pool)
			if !ok || len(got) != len(tt.want) {
				t.Fatalf("Usage(%s) = %v, %v; want %v", tt.pool, got, ok, tt.want)
			}
			for f, w := range tt.want {
				if got[f] != w {
					t.Errorf("Usage(%s)[%s] = %+v, want %+v", tt.pool, f, got[f], w)
				}
			}
		}
	}
	check()
	if _, ok := a.Usage("nope"); ok {
		t.Error("Usage of an unknown pool")
	}
	for i := range 3 {
		ensure(t, a, svc("ns/v4-"+string(rune('a'+i))), v4("v4"))
		ensure(t, a, svc("ns/v6-"+string(rune('a'+i))), v6("v6"))
		ensure(t, a, svc("ns/v6big-"+string(rune('a'+i))), v6("v6big"))
	}
	ensure(t, a, svc("ns/m"), dual(true, "mixed"))
	tests[0].want[FamilyV4] = Usage{256, 3, 253}
	// 2^64 - 3 fits in a uint64 exactly.
	tests[2].want[FamilyV6] = Usage{math.MaxUint64, 3, math.MaxUint64 - 2}
	tests[3].want[FamilyV6] = Usage{math.MaxUint64, 3, math.MaxUint64}
	tests[4].want = map[Family]Usage{FamilyV4: {4, 1, 3}, FamilyV6: {4, 1, 3}}
	check()
	if a.InUse("v4") != 3 || a.InUse("mixed") != 2 || a.InUse("empty") != 0 || a.InUse("nope") != 0 {
		t.Errorf("InUse: %d %d", a.InUse("v4"), a.InUse("mixed"))
	}
}

func TestServicesAndUsers(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24"))
	for _, k := range []string{"ns/c", "ns/a", "ns/b"} {
		ensure(t, a, shared(k, "k", tcp(int32(len(k)+int(k[3])))), v4("a"))
	}
	if got := a.Services(); !slices.Equal(got, []string{"ns/a", "ns/b", "ns/c"}) {
		t.Errorf("Services = %v", got)
	}
	if got := a.Users(ip("10.0.0.0")); !slices.Equal(got, []string{"ns/a", "ns/b", "ns/c"}) {
		t.Errorf("Users = %v", got)
	}
	if got := a.Users(ip("10.0.0.1")); got != nil {
		t.Errorf("Users of a free IP = %v", got)
	}
}

func TestCallerSliceReuse(t *testing.T) {
	// The allocator must not alias the caller's Ports slice.
	a := newAlloc(t, mkPool("a", "10.0.0.0/24"))
	ports := []Port{tcp(80)}
	ensure(t, a, Service{Key: "ns/a", SharingKey: "k", Ports: ports}, v4("a"))
	ports[0] = tcp(443)
	err := ensureFails(t, a, shared("ns/b", "k", tcp(80)), withIPs(v4("a"), "10.0.0.0"))
	if !strings.Contains(err.Error(), "port TCP/80 is used by both") {
		t.Fatalf("got %v", err)
	}
}

func TestDualStackRequireAllAnchorEdgeCases(t *testing.T) {
	a := newAlloc(t, mkPool("a", "10.0.0.0/24", "2001:db8::/120"), mkPool("b", "10.0.1.0/24", "2001:db8:1::/120"))
	ensure(t, a, svc("ns/a"), v4("a"))
	// The kept IPv4's pool is not a candidate any more.
	wantErr(t, ensureFails(t, a, svc("ns/a"), dual(true, "b")),
		`RequireDualStack: the IPv4 address 10.0.0.0 is from pool "a", which is not a candidate for auto allocation`)
	// The kept IPv4 is an orphan of a deleted pool.
	if err := a.SetPools([]Pool{mkPool("b", "10.0.1.0/24", "2001:db8:1::/120")}); err != nil {
		t.Fatal(err)
	}
	err := ensureFails(t, a, svc("ns/a"), dual(true, "a", "b"))
	wantErr(t, err, "RequireDualStack: the IPv4 address 10.0.0.0 is not inside any pool, so no pool can pair it with an IPv6 address")
	if !errors.Is(err, ErrDualStack) {
		t.Errorf("not ErrDualStack: %v", err)
	}
	// PreferDualStack pairs it with anything.
	wantIPs(t, ensure(t, a, svc("ns/a"), dual(false, "a", "b")), "10.0.0.0", "2001:db8:1::")
	// RequireAll with a single family is plain single stack.
	wantErr(t, ensureFails(t, a, svc("ns/x"), Request{Families: []Family{FamilyV4}, RequireAll: true, Candidates: []string{"a"}}),
		`pool "a" does not exist`)
	// No candidates at all.
	wantErr(t, ensureFails(t, a, svc("ns/x"), dual(true)), "no pool may be used to allocate an IPv4 address")
	// Unknown and duplicate candidates.
	wantErr(t, ensureFails(t, a, svc("ns/x"), dual(true, "x", "x")), `RequireDualStack: pool "x" does not exist`)
	wantIPs(t, ensure(t, a, svc("ns/x"), dual(true, "x", "b", "b")), "10.0.1.0", "2001:db8:1::1")
}
