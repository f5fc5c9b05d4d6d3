package bgp_test

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/bgp"
	"github.com/ironlb/ironlb/bgp/bgptest"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netlab"
)

// TestVRF puts the node's uplink into a Linux VRF, as nodes that keep
// their BGP fabric apart from the management network do: the default VRF
// then has no route to the router. A peer naming a VRF the node lacks, or
// a device that is no VRF, is left out with VRFNotFound; the peer in the
// default VRF never connects; the peer in the uplink's VRF establishes,
// with BFD once the node lets default-VRF sockets hear the VRF
// (udp_l3mdev_accept; refused with BFDNeedsL3mdevAccept before), and its
// route is installed via the node's address in that VRF. The last part needs a kernel with VRF devices (CONFIG_NET_VRF) and
// says so when it has none.
func TestVRF(t *testing.T) {
	l := newLab(t, 1, func(nodes []*netlab.Host) []neighbor {
		return []neighbor{{addr: nodes[0].IPv4.Addr(), asn: nodeASN, bfd: true}}
	})
	n1 := l.nodes[0]
	sp := l.speaker(n1)
	prefix := netip.MustParsePrefix("198.18.21.50/32")
	must(t, sp.SetRoutes(bgp.Route{Prefix: prefix, Peers: []string{"rtr"}}))
	p := l.peer("rtr", false)
	p.BFD = &bgp.BFD{ReceiveInterval: 100 * time.Millisecond, TransmitInterval: 100 * time.Millisecond, DetectMultiplier: 3}

	for vrf, want := range map[string]string{"blue": `VRF "blue" does not exist`, "eth0": `"eth0" is a veth device on this node, not a VRF`} {
		p.VRF = vrf
		if err := sp.SetPeers(p); err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("peer in VRF %s: error %v, want %q", vrf, err, want)
		}
		wantStatus(t, sp, "rtr", v1beta1.ReasonVRFNotFound)
	}

	if out, err := n1.In("ip", "link", "add", "blue", "type", "vrf", "table", "10"); err != nil {
		t.Skipf("this kernel has no VRF devices (CONFIG_NET_VRF; `ip link add blue type vrf` says %q): a session inside a VRF cannot be tried here", strings.TrimSpace(out))
	}
	for _, c := range [][]string{{"ip", "link", "set", "blue", "up"}, {"ip", "link", "set", "eth0", "master", "blue"}} {
		if out, err := n1.In(c...); err != nil {
			t.Fatalf("%v: %v %s", c, err, out)
		}
	}
	p.VRF = ""
	must(t, sp.SetPeers(p))
	time.Sleep(3 * time.Second) // three connect retries
	if ns, err := l.rtr.Neighbors(); err != nil || ns[n1.IPv4.Addr()].Established() {
		t.Fatalf("a session from the default VRF came up (%v): the VRF does not isolate the test", err)
	}

	// GoBGP's BFD listens in the default VRF: without l3mdev_accept the
	// peer is refused, saying which sysctl; with it BFD comes up.
	p.VRF = "blue"
	if err := sp.SetPeers(p); err == nil || !strings.Contains(err.Error(), "net.ipv4.udp_l3mdev_accept=1") {
		t.Fatalf("BFD in a VRF without udp_l3mdev_accept: error %v", err)
	}
	wantStatus(t, sp, "rtr", v1beta1.ReasonBFDNeedsL3mdevAccept)
	if out, err := n1.In("sysctl", "-qw", "net.ipv4.udp_l3mdev_accept=1"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	start := time.Now()
	must(t, sp.SetPeers(p))
	ctx := ctxT(t, 20*time.Second)
	must(t, sp.WaitEstablished(ctx, "rtr"))
	t.Logf("session in VRF blue established %v after SetPeers", time.Since(start).Round(time.Millisecond))
	if _, err := l.rtr.WaitRoute(ctx, prefix, frr.NextHops(n1.IPv4.Addr())); err != nil {
		t.Fatal(err)
	}
	if _, err := frr.Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		st, err := sp.Status()
		return len(st) == 1 && st[0].BFDState == "up" && st[0].Error == "", err
	}); err != nil {
		st, _ := sp.Status()
		t.Fatalf("BFD in VRF blue: %v (status %+v)", err, st)
	}
}

// TestUnnumberedECMP cables two nodes to the router over point-to-point
// links that have nothing but IPv6 link-local addresses, with the router
// peering by interface (FRR's "neighbor IFACE interface"): each speaker
// finds the router on its link, and the router installs one IPv4 and one
// IPv6 route over both nodes, each through the node's link-local address
// (RFC 8950 for IPv4). Before the links exist a speaker reports
// InterfaceNotFound.
func TestUnnumberedECMP(t *testing.T) {
	const uplink = "up0"
	l := newLab(t, 2, func(nodes []*netlab.Host) []neighbor {
		return []neighbor{{iface: "n1", asn: nodeASN}, {iface: "n2", asn: nodeASN}}
	})
	v4 := netip.MustParsePrefix("198.18.21.60/32")
	v6 := netip.MustParsePrefix("2001:db8:21::60/128")
	p := bgp.PeerSpec{Name: "tor", Interface: uplink, MyASN: nodeASN, PeerASN: routerASN, ConnectTime: time.Second}
	var sps []*bgptest.Proc
	for _, h := range l.nodes {
		sp := l.speaker(h)
		must(t, sp.SetRoutes(bgp.Route{Prefix: v4, Peers: []string{"tor"}}, bgp.Route{Prefix: v6, Peers: []string{"tor"}}))
		sps = append(sps, sp)
	}
	if err := sps[0].SetPeers(p); err == nil || !strings.Contains(err.Error(), `interface "up0" does not exist`) {
		t.Fatalf("unnumbered peer without its interface: error %v", err)
	}
	wantStatus(t, sps[0], "tor", v1beta1.ReasonInterfaceNotFound)

	var lls []netip.Addr
	for i := range l.nodes {
		name := fmt.Sprintf("n%d", i+1) // the node's name in the lab, and the router's link to it
		if err := l.net.AddP2P("rtr", name, name, uplink); err != nil {
			t.Fatal(err)
		}
	}
	for _, h := range l.nodes {
		var ll netip.Addr
		if _, err := frr.Poll(ctxT(t, 5*time.Second), 20*time.Millisecond, func() (bool, error) {
			var err error
			ll, err = linkLocal(h, uplink)
			return err == nil, nil
		}); err != nil {
			t.Fatalf("%s: %s got no link-local address", h.Name, uplink)
		}
		lls = append(lls, ll)
	}
	start := time.Now()
	ctx := ctxT(t, 30*time.Second)
	for _, sp := range sps {
		// The first try may come before the router has said hello on
		// the new link; the speaker retries as the node's pass would.
		if _, err := frr.Poll(ctx, 200*time.Millisecond, func() (bool, error) { return sp.SetPeers(p) == nil, nil }); err != nil {
			st, _ := sp.Status()
			t.Fatalf("unnumbered peer never configured: %+v", st)
		}
	}
	for _, sp := range sps {
		if err := sp.WaitEstablished(ctx, "tor"); err != nil {
			raw, _ := l.rtr.Vtysh("show bgp neighbors n1")
			nd, _ := l.net.Hosts["rtr"].In("ip", "-6", "neigh")
			ad, _ := l.net.Hosts["rtr"].In("ip", "-6", "addr")
			ss, _ := l.net.Hosts["rtr"].In("ss", "-tan")
			t.Fatalf("%v\n%s\nrouter's neighbours:\n%s\n%s\n%s", err, raw, nd, ad, ss)
		}
	}
	t.Logf("unnumbered sessions established %v after the links came up", time.Since(start).Round(time.Millisecond))
	for _, prefix := range []netip.Prefix{v4, v6} {
		d, err := l.rtr.WaitRoute(ctx, prefix, frr.NextHops(lls...))
		if err != nil {
			rs, _ := l.rtr.Routes(frr.FamilyOf(prefix))
			raw, _ := l.rtr.Vtysh("show bgp neighbors n1")
			t.Fatalf("%s: %v; routes %v\n%s", prefix, err, rs[prefix], raw)
		}
		t.Logf("%s installed over both nodes (%v) %v after the sessions came up", prefix, lls, d)
	}
	ns, err := l.rtr.NeighborsByName()
	must(t, err)
	for _, name := range []string{"n1", "n2"} {
		if n := ns[name]; !n.Established() || !n.Address.IsLinkLocalUnicast() {
			t.Errorf("router's neighbor %s: %+v, want established over a link-local address", name, n)
		}
	}
}

// wantStatus waits for the speaker to report peer as left out for reason.
func wantStatus(t *testing.T, sp *bgptest.Proc, peer, reason string) {
	t.Helper()
	st, err := sp.Status()
	must(t, err)
	for _, s := range st {
		if s.Name == peer {
			if s.Reason != reason || s.Error == "" {
				t.Fatalf("peer %s: reason %q error %q, want %s", peer, s.Reason, s.Error, reason)
			}
			t.Logf("peer %s left out: %s", peer, s.Error)
			return
		}
	}
	t.Fatalf("peer %s not in status %+v", peer, st)
}

// linkLocal is the IPv6 link-local address of h's link.
func linkLocal(h *netlab.Host, link string) (netip.Addr, error) {
	return netlab.InNS(h.Name, func() (netip.Addr, error) {
		ifi, err := net.InterfaceByName(link)
		if err != nil {
			return netip.Addr{}, err
		}
		addrs, err := ifi.Addrs()
		if err != nil {
			return netip.Addr{}, err
		}
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.IsLinkLocalUnicast() {
				ip, _ := netip.AddrFromSlice(n.IP)
				return ip, nil
			}
		}
		return netip.Addr{}, errors.New(link + " has no link-local address")
	})
}
