package bgp_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/bgp"
	"github.com/ironlb/ironlb/bgp/bgptest"
	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netlab"
)

// TestNextHops announces IPv4 and IPv6 routes over an eBGP IPv4 and an
// eBGP IPv6 session and checks the next hop FRR installs for each
// combination: always the node's address of the route's family.
func TestNextHops(t *testing.T) {
	l := newLab(t, 1, func(nodes []*netlab.Host) []neighbor {
		return []neighbor{{addr: nodes[0].IPv4.Addr(), asn: nodeASN}, {addr: nodes[0].IPv6.Addr(), asn: nodeASN}}
	})
	n1 := l.nodes[0]
	sp := l.speaker(n1)
	start := time.Now()
	must(t, sp.SetRoutes(
		route("198.18.21.1/32", "v4"),
		route("2001:db8:21::1/128", "v6"),
		route("198.18.21.2/32", "v6"),
		route("2001:db8:21::2/128", "v4"),
	))
	must(t, sp.SetPeers(l.peer("v4", false), l.peer("v6", true)))
	ctx := ctxT(t, 20*time.Second)
	must(t, sp.WaitEstablished(ctx, "v4", "v6"))
	t.Logf("sessions established %v after SetPeers", time.Since(start).Round(time.Millisecond))
	for _, c := range []struct {
		prefix string
		nh     netip.Addr
	}{
		{"198.18.21.1/32", n1.IPv4.Addr()},
		{"2001:db8:21::1/128", n1.IPv6.Addr()},
		// Cross-family: the node's address of the route's family.
		{"198.18.21.2/32", n1.IPv4.Addr()},
		{"2001:db8:21::2/128", n1.IPv6.Addr()},
	} {
		p := netip.MustParsePrefix(c.prefix)
		d, err := l.rtr.WaitRoute(ctx, p, frr.NextHops(c.nh))
		if err != nil {
			paths, _ := l.rtr.BGPPrefix(p)
			t.Fatalf("%v; bgp paths %+v", err, paths)
		}
		t.Logf("%s installed via %s %v after the sessions came up", p, c.nh, d)
	}
}

// TestIBGPAttributes checks local preference (iBGP) and standard and
// large communities as FRR sees them, with a prefix whose peers get
// different attributes, and that eBGP sessions carry no local preference.
func TestIBGPAttributes(t *testing.T) {
	l := newLab(t, 1, func(nodes []*netlab.Host) []neighbor {
		return []neighbor{{addr: nodes[0].IPv4.Addr(), asn: routerASN}, {addr: nodes[0].IPv6.Addr(), asn: nodeASN}}
	})
	sp := l.speaker(l.nodes[0])
	ibgp := l.peer("ibgp", false)
	ibgp.MyASN = routerASN
	ebgp := l.peer("ebgp", true)
	lp := uint32(250)
	a := netip.MustParsePrefix("198.18.21.10/32")
	items := []bgp.Item{{IP: a.Addr(), Advertisements: []*config.BGPAdvertisement{
		{Name: "both", AggregationLength: 32, AggregationLengthV6: 128, LocalPref: &lp, Communities: []config.Community{{Value: [3]uint32{64512<<16 | 100}}, {Large: true, Value: [3]uint32{64512, 1, 2}}}},
		{Name: "ibgp-only", AggregationLength: 32, AggregationLengthV6: 128, Peers: map[string]bool{"ibgp": true}, Communities: []config.Community{{Value: [3]uint32{64512<<16 | 200}}}},
	}}}
	routes, err := bgp.Build(items, []bgp.PeerSpec{ibgp, ebgp})
	must(t, err)
	t.Logf("routes: %v", routes)
	must(t, sp.SetRoutes(routes...))
	must(t, sp.SetPeers(ibgp, ebgp))
	ctx := ctxT(t, 20*time.Second)
	must(t, sp.WaitEstablished(ctx, "ibgp", "ebgp"))
	want := map[netip.Addr]frr.Path{
		l.nodes[0].IPv4.Addr(): {LocalPref: 250, Communities: "64512:100 64512:200", LargeCommunities: "64512:1:2"},
		l.nodes[0].IPv6.Addr(): {LocalPref: -1, Communities: "64512:100", LargeCommunities: "64512:1:2"},
	}
	var paths []frr.Path
	_, err = frr.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		var err error
		paths, err = l.rtr.BGPPrefix(a)
		return len(paths) == 2, err
	})
	if err != nil {
		t.Fatalf("paths for %s: %v (have %+v)", a, err, paths)
	}
	for _, p := range paths {
		w, ok := want[p.From]
		if !ok || p.LocalPref != w.LocalPref || p.Communities != w.Communities || p.LargeCommunities != w.LargeCommunities {
			raw, _ := l.rtr.Vtysh("show bgp ipv4 unicast " + a.String() + " json")
			t.Errorf("path from %s: localpref %d communities %q large %q, want %+v\n%s", p.From, p.LocalPref, p.Communities, p.LargeCommunities, w, raw)
		}
	}
}

// TestPassword: the right MD5 password establishes, a wrong one never
// does (and FRR shows the session down).
func TestPassword(t *testing.T) {
	l := newLab(t, 2, func(nodes []*netlab.Host) []neighbor {
		return []neighbor{
			{addr: nodes[0].IPv4.Addr(), asn: nodeASN, password: "s3cret"},
			{addr: nodes[1].IPv4.Addr(), asn: nodeASN, password: "s3cret"},
		}
	})
	good, bad := l.speaker(l.nodes[0]), l.speaker(l.nodes[1])
	pg, pb := l.peer("rtr", false), l.peer("rtr", false)
	pg.Password, pb.Password = "s3cret", "wrong"
	for _, c := range []struct {
		sp *bgptest.Proc
		p  bgp.PeerSpec
	}{{good, pg}, {bad, pb}} {
		must(t, c.sp.SetRoutes())
		must(t, c.sp.SetPeers(c.p))
	}
	ctx := ctxT(t, 15*time.Second)
	must(t, good.WaitEstablished(ctx, "rtr"))
	time.Sleep(4 * time.Second) // two connect attempts of the wrong one
	st, err := bad.Status()
	must(t, err)
	if len(st) != 1 || st[0].Established() {
		t.Errorf("wrong password: speaker status %+v, want not established", st)
	}
	ns, err := l.rtr.Neighbors()
	must(t, err)
	if n := ns[l.nodes[1].IPv4.Addr()]; n.Established() {
		t.Errorf("wrong password: FRR shows %+v", n)
	}
	if n := ns[l.nodes[0].IPv4.Addr()]; !n.Established() {
		t.Errorf("right password: FRR shows %+v", n)
	}
}

// TestECMPAndWithdraw: three nodes announce the same /32; FRR installs
// three next hops; withdrawing from one node removes it quickly, and
// SetPeers with an unrelated change leaves the other sessions alone.
func TestECMPAndWithdraw(t *testing.T) {
	l := newLab(t, 3, func(nodes []*netlab.Host) []neighbor {
		var ns []neighbor
		for _, n := range nodes {
			ns = append(ns, neighbor{addr: n.IPv4.Addr(), asn: nodeASN})
		}
		// An extra neighbor for the unrelated-change check.
		return append(ns, neighbor{addr: nodes[0].IPv6.Addr(), asn: nodeASN})
	})
	vip := netip.MustParsePrefix("198.18.21.20/32")
	var sps []*bgptest.Proc
	var nhs []netip.Addr
	ctx := ctxT(t, 30*time.Second)
	for _, n := range l.nodes {
		sp := l.speaker(n)
		must(t, sp.SetRoutes(route(vip.String(), "rtr")))
		must(t, sp.SetPeers(l.peer("rtr", false)))
		sps = append(sps, sp)
		nhs = append(nhs, n.IPv4.Addr())
	}
	for _, sp := range sps {
		must(t, sp.WaitEstablished(ctx, "rtr"))
	}
	d, err := l.rtr.WaitRoute(ctx, vip, frr.NextHops(nhs...))
	must(t, err)
	t.Logf("ECMP route with 3 next hops installed %v after the last session came up", d)

	// Withdraw from node 3.
	start := time.Now()
	must(t, sps[2].SetRoutes())
	_, err = l.rtr.WaitRoute(ctx, vip, frr.NextHops(nhs[:2]...))
	must(t, err)
	t.Logf("withdrawal from one node reflected in zebra after %v", time.Since(start))
	// Announce again: propagation time.
	start = time.Now()
	must(t, sps[2].SetRoutes(route(vip.String(), "rtr")))
	_, err = l.rtr.WaitRoute(ctx, vip, frr.NextHops(nhs...))
	must(t, err)
	t.Logf("announcement from one node installed in zebra after %v", time.Since(start))

	// Unrelated change on node 1: add a second session; the first one
	// must not be reset.
	before, err := l.rtr.Neighbors()
	must(t, err)
	st0, err := sps[0].Status()
	must(t, err)
	time.Sleep(1100 * time.Millisecond) // the speaker's uptimes have 1s resolution
	must(t, sps[0].SetPeers(l.peer("rtr", false), l.peer("rtr6", true)))
	must(t, sps[0].WaitEstablished(ctx, "rtr", "rtr6"))
	after, err := l.rtr.Neighbors()
	must(t, err)
	st1, err := sps[0].Status()
	must(t, err)
	a4 := l.nodes[0].IPv4.Addr()
	if before[a4].Connections != after[a4].Connections || before[a4].Connections == 0 || !after[a4].Established() {
		t.Errorf("FRR session with node 1 was reset by an unrelated change: %+v -> %+v", before[a4], after[a4])
	}
	if !st0[0].Since.Equal(st1[0].Since) {
		t.Errorf("speaker session rtr was reset by an unrelated change: %+v -> %+v", st0, st1)
	}
	// Routes are unchanged too.
	rs, err := l.rtr.Routes(frr.IPv4)
	must(t, err)
	if !frr.NextHops(nhs...)(rs[vip]) {
		t.Errorf("after the unrelated change: next hops %v, want %v", rs[vip], nhs)
	}

	// A route restricted to the new peer only: the IPv4 session must not
	// get it.
	only6 := netip.MustParsePrefix("198.18.21.21/32")
	must(t, sps[0].SetRoutes(route(vip.String(), "rtr"), route(only6.String(), "rtr6")))
	_, err = frr.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
		ps, err := l.rtr.BGPPrefix(only6)
		return len(ps) == 1, err
	})
	must(t, err)
	ps, err := l.rtr.BGPPrefix(only6)
	must(t, err)
	if len(ps) != 1 || ps[0].From != l.nodes[0].IPv6.Addr() {
		t.Errorf("route restricted to peer rtr6: FRR has paths %+v, want one from %s", ps, l.nodes[0].IPv6.Addr())
	}
}

// TestBFD: with BFD 300ms x3, a node that vanishes (link down, speaker
// killed: no TCP FIN ever reaches the router) is withdrawn by FRR within
// about a second, instead of the BGP hold time.
func TestBFD(t *testing.T) {
	l := newLab(t, 1, func(nodes []*netlab.Host) []neighbor {
		return []neighbor{{addr: nodes[0].IPv4.Addr(), asn: nodeASN, bfd: true}}
	})
	n1 := l.nodes[0]
	sp := l.speaker(n1)
	vip := netip.MustParsePrefix("198.18.21.30/32")
	p := l.peer("rtr", false)
	p.BFD = &bgp.BFD{ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 300 * time.Millisecond, DetectMultiplier: 3}
	must(t, sp.SetRoutes(route(vip.String(), "rtr")))
	must(t, sp.SetPeers(p))
	ctx := ctxT(t, 30*time.Second)
	must(t, sp.WaitEstablished(ctx, "rtr"))
	_, err := l.rtr.WaitRoute(ctx, vip, frr.NextHops(n1.IPv4.Addr()))
	must(t, err)
	d, err := frr.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		ps, err := l.rtr.BFDPeers()
		for _, p := range ps {
			if p.Peer == n1.IPv4.Addr() && p.Status == "up" {
				return true, err
			}
		}
		return false, err
	})
	must(t, err)
	t.Logf("BFD up in FRR %v after the BGP session", d)
	_, err = frr.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		st, err := sp.Status()
		return len(st) == 1 && st[0].BFDState == "up", err
	})
	must(t, err)

	start := time.Now()
	_, err = n1.In("ip", "link", "set", "eth0", "down")
	must(t, err)
	sp.Kill()
	d, err = l.rtr.WaitRoute(ctx, vip, frr.NextHops())
	must(t, err)
	d = time.Since(start)
	t.Logf("node lost: route withdrawn by FRR after %v (BFD 300ms x3)", d)
	if d > 2*time.Second {
		t.Errorf("withdrawal took %v, want about 1s with BFD", d)
	}
	ns, err := l.rtr.Neighbors()
	must(t, err)
	t.Logf("FRR neighbor after the loss: %+v", ns[n1.IPv4.Addr()])
}

// TestGracefulRestart: with graceful restart, a speaker that crashes
// (SIGKILL) or stops (SIGTERM) and comes back within the restart time
// never makes FRR withdraw its route: FRR keeps it as stale and refreshes
// it when the new speaker has sent its table.
func TestGracefulRestart(t *testing.T) {
	l := newLab(t, 1, func(nodes []*netlab.Host) []neighbor {
		return []neighbor{{addr: nodes[0].IPv4.Addr(), asn: nodeASN}}
	})
	n1 := l.nodes[0]
	vip := netip.MustParsePrefix("198.18.21.40/32")
	p := l.peer("rtr", false)
	p.GracefulRestart = true
	p.RestartTime = 60 * time.Second
	ctx := ctxT(t, 60*time.Second)
	start := func() *bgptest.Proc {
		sp := l.speaker(n1)
		must(t, sp.SetRoutes(route(vip.String(), "rtr")))
		must(t, sp.SetPeers(p))
		must(t, sp.WaitEstablished(ctx, "rtr"))
		return sp
	}
	sp := start()
	_, err := l.rtr.WaitRoute(ctx, vip, frr.NextHops(n1.IPv4.Addr()))
	must(t, err)

	for _, how := range []string{"SIGKILL", "SIGTERM"} {
		// Watch the route continuously during the restart.
		stop := make(chan struct{})
		gaps := make(chan []string, 1)
		go func() {
			var g []string
			for {
				select {
				case <-stop:
					gaps <- g
					return
				case <-time.After(10 * time.Millisecond):
				}
				rs, err := l.rtr.Routes(frr.IPv4)
				if err != nil || len(rs[vip]) == 0 {
					g = append(g, fmt.Sprintf("%s: route missing (%v)", time.Now().Format("15:04:05.000"), err))
				}
			}
		}()
		t0 := time.Now()
		if how == "SIGKILL" {
			sp.Kill()
		} else {
			sp.Stop()
		}
		_, err := frr.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
			ps, err := l.rtr.BGPPrefix(vip)
			return len(ps) == 1 && ps[0].Stale, err
		})
		must(t, err)
		t.Logf("%s: FRR marked the route stale after %v", how, time.Since(t0))
		sp = start()
		t.Logf("%s: new speaker established %v after the old one ended", how, time.Since(t0))
		_, err = frr.Poll(ctx, 20*time.Millisecond, func() (bool, error) {
			ps, err := l.rtr.BGPPrefix(vip)
			return len(ps) == 1 && !ps[0].Stale, err
		})
		must(t, err)
		t.Logf("%s: route refreshed (not stale) %v after the old speaker ended", how, time.Since(t0))
		close(stop)
		if g := <-gaps; len(g) > 0 {
			t.Errorf("%s: the route disappeared from FRR's RIB during the restart:\n%s", how, strings.Join(g, "\n"))
		}
	}
}
