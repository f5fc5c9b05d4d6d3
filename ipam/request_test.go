package ipam

import (
	"errors"
	"net/netip"
	"slices"
	"testing"
)

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
