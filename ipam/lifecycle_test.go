package ipam

import (
	"errors"
	"math"
	"net/netip"
	"slices"
	"strings"
	"testing"
)

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
