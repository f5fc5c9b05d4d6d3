package l2

import (
	"net"
	"net/netip"
	"slices"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/prometheus/client_golang/prometheus"
)

var (
	ourMAC     = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	foreignMAC = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x02}
	ourLL      = netip.MustParseAddr("fe80::1")
	foreignLL  = netip.MustParseAddr("fe80::2")

	announced4 = netip.MustParseAddr("198.18.0.100")
	probing4   = netip.MustParseAddr("198.18.0.101")
	unowned4   = netip.MustParseAddr("198.18.0.102")
	requester4 = netip.MustParseAddr("198.18.0.2")
	announced6 = netip.MustParseAddr("2001:db8:1::100")
	probing6   = netip.MustParseAddr("2001:db8:1::101")
	unowned6   = netip.MustParseAddr("2001:db8:1::102")
)

// testPhases is the owned set used by the decision tests and fuzz targets.
func testPhases(ip netip.Addr) phase {
	switch ip {
	case announced4, announced6:
		return phaseAnnouncing
	case probing4, probing6:
		return phaseProbing
	}
	return phaseNone
}

func mustARP(t testing.TB, op arp.Operation, srcMAC net.HardwareAddr, srcIP netip.Addr, dstMAC net.HardwareAddr, dstIP netip.Addr) []byte {
	t.Helper()
	f, err := arpFrame(op, srcMAC, srcIP, dstMAC, dstIP, ethernet.Broadcast)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestDecideARP(t *testing.T) {
	req := func(srcIP, dstIP netip.Addr) []byte {
		return mustARP(t, arp.OperationRequest, foreignMAC, srcIP, ethernetZero, dstIP)
	}
	reply := func(srcIP, dstIP netip.Addr) []byte {
		return mustARP(t, arp.OperationReply, foreignMAC, srcIP, ourMAC, dstIP)
	}
	set := func(b []byte, off int, v ...byte) []byte { b = slices.Clone(b); copy(b[off:], v); return b }
	good := req(requester4, announced4)
	zero := netip.IPv4Unspecified()

	type want struct {
		replyTo  netip.Addr // TPA of the expected reply; invalid = no reply
		conflict netip.Addr
	}
	cases := []struct {
		name  string
		frame []byte
		want  want
	}{
		{"request for announced IP", good, want{replyTo: requester4}},
		{"request from unowned sender IP for announced IP", req(unowned4, announced4), want{replyTo: unowned4}},
		{"probe for announced IP is answered (defence)", req(zero, announced4), want{replyTo: zero}},
		{"request for probing IP", req(requester4, probing4), want{}},
		{"request for unowned IP", req(requester4, unowned4), want{}},
		{"foreign probe for probing IP", req(zero, probing4), want{conflict: probing4}},
		{"foreign gratuitous ARP for announced IP", req(announced4, announced4), want{conflict: announced4}},
		{"foreign gratuitous ARP for probing IP", req(probing4, probing4), want{conflict: probing4}},
		{"reply to our probe", reply(probing4, zero), want{conflict: probing4}},
		{"foreign reply claiming announced IP", reply(announced4, requester4), want{conflict: announced4}},
		{"foreign request from announced IP for another", req(announced4, requester4), want{conflict: announced4}},
		{"reply for unowned IP", reply(unowned4, requester4), want{}},
		{"our own request (node kernel)", mustARP(t, arp.OperationRequest, ourMAC, requester4, ethernetZero, announced4), want{}},
		{"our own announcement looped", mustARP(t, arp.OperationRequest, ourMAC, announced4, ethernetZero, announced4), want{}},
		{"foreign Ethernet source with our MAC as sender", set(good, 14+8, ourMAC...), want{}},
		{"our Ethernet source with foreign sender", set(good, 6, ourMAC...), want{}},
		{"broadcast sender MAC", set(good, 14+8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), want{}},
		{"multicast sender MAC", set(good, 14+8, 0x01, 0, 0x5e, 0, 0, 1), want{}},
		{"zero sender MAC", set(good, 14+8, 0, 0, 0, 0, 0, 0), want{}},
		{"hardware type 6", set(good, 14, 0, 6), want{}},
		{"protocol type IPv6", set(good, 14+2, 0x86, 0xdd), want{}},
		{"hardware length 8", set(good, 14+4, 8), want{}},
		{"protocol length 16", set(good, 14+5, 16), want{}},
		{"operation 3", set(good, 14+6, 0, 3), want{}},
		{"not ARP ethertype", set(good, 12, 0x08, 0x00), want{}},
		{"truncated", good[:30], want{}},
		{"Ethernet header only", good[:14], want{}},
		{"short", good[:5], want{}},
		{"empty", nil, want{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := decideARP(c.frame, ourMAC, testPhases)
			if d.conflict != c.want.conflict {
				t.Errorf("conflict = %v, want %v", d.conflict, c.want.conflict)
			}
			if d.conflict.IsValid() && d.foreignMAC.String() != foreignMAC.String() {
				t.Errorf("foreign MAC = %v, want %v", d.foreignMAC, foreignMAC)
			}
			if !c.want.replyTo.IsValid() {
				if d.reply != nil || d.request {
					t.Errorf("reply = %x, request = %v, want none", d.reply, d.request)
				}
				return
			}
			if !d.request {
				t.Error("request not counted")
			}
			checkARPReply(t, d, ourMAC, c.want.replyTo, announced4)
		})
	}
}

// checkARPReply verifies that d carries a well-formed unicast ARP reply
// from us, for an IP we announce, to the requester.
func checkARPReply(t testing.TB, d arpDecision, ourMAC net.HardwareAddr, wantTPA, wantSPA netip.Addr) {
	t.Helper()
	var f ethernet.Frame
	if err := f.UnmarshalBinary(d.reply); err != nil {
		t.Fatalf("reply frame: %v", err)
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		t.Fatalf("reply packet: %v", err)
	}
	if p.Operation != arp.OperationReply || p.SenderHardwareAddr.String() != ourMAC.String() ||
		f.Source.String() != ourMAC.String() || f.EtherType != ethernet.EtherTypeARP {
		t.Errorf("reply %+v in %+v: want an ARP reply from %v", p, f, ourMAC)
	}
	if wantSPA.IsValid() && p.SenderIP != wantSPA {
		t.Errorf("reply sender IP %v, want %v", p.SenderIP, wantSPA)
	}
	if wantTPA.IsValid() && p.TargetIP != wantTPA {
		t.Errorf("reply target IP %v, want %v", p.TargetIP, wantTPA)
	}
	if !isUnicastMAC(d.replyTo) || f.Destination.String() != d.replyTo.String() || p.TargetHardwareAddr.String() != d.replyTo.String() {
		t.Errorf("reply to %v (Ethernet %v, ARP %v): want one unicast MAC", d.replyTo, f.Destination, p.TargetHardwareAddr)
	}
}

func mustNDP(t testing.TB, m ndp.Message) []byte {
	t.Helper()
	b, err := ndp.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDecideNDP(t *testing.T) {
	sll := func(mac net.HardwareAddr) []ndp.Option {
		return []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: mac}}
	}
	tll := func(mac net.HardwareAddr) []ndp.Option {
		return []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: mac}}
	}
	ns := func(target netip.Addr, opts []ndp.Option) []byte {
		return mustNDP(t, &ndp.NeighborSolicitation{TargetAddress: target, Options: opts})
	}
	na := func(target netip.Addr, opts []ndp.Option) []byte {
		return mustNDP(t, &ndp.NeighborAdvertisement{Solicited: true, Override: true, TargetAddress: target, Options: opts})
	}
	good := ns(announced6, sll(foreignMAC))
	code1 := slices.Clone(good)
	code1[1] = 1
	unspec := netip.IPv6Unspecified()
	global := netip.MustParseAddr("2001:db8:1::2")

	type want struct {
		dst       netip.Addr // reply destination; invalid = no reply
		solicited bool
		conflict  netip.Addr
		mac       net.HardwareAddr
	}
	cases := []struct {
		name string
		msg  []byte
		src  netip.Addr
		hop  int
		want want
	}{
		{"NS for announced IP", good, foreignLL, 255, want{dst: foreignLL, solicited: true}},
		{"NS from global source", good, global, 255, want{dst: global, solicited: true}},
		{"NS with zone on source", good, foreignLL.WithZone("eth0"), 255, want{dst: foreignLL, solicited: true}},
		{"NS without source option", ns(announced6, nil), foreignLL, 255, want{dst: foreignLL, solicited: true}},
		{"NS, hop limit unknown", good, foreignLL, -1, want{dst: foreignLL, solicited: true}},
		{"DAD NS for announced IP (defence)", ns(announced6, nil), unspec, 255, want{dst: allNodes}},
		{"DAD NS for probing IP", ns(probing6, nil), unspec, 255, want{conflict: probing6}},
		{"DAD NS with source option (invalid)", ns(probing6, sll(foreignMAC)), unspec, 255, want{}},
		{"NS for probing IP", ns(probing6, sll(foreignMAC)), foreignLL, 255, want{}},
		{"NS for unowned IP", ns(unowned6, sll(foreignMAC)), foreignLL, 255, want{}},
		{"NS hop limit 64", good, foreignLL, 64, want{}},
		{"NS code 1", code1, foreignLL, 255, want{}},
		{"NS from our own address", good, ourLL, 255, want{}},
		{"NS from the node kernel (our MAC)", ns(announced6, sll(ourMAC)), global, 255, want{}},
		{"NS from multicast source", good, allNodes, 255, want{}},
		{"NS from IPv4 source", good, netip.MustParseAddr("198.18.0.2"), 255, want{}},
		{"NA for probing IP", na(probing6, tll(foreignMAC)), foreignLL, 255, want{conflict: probing6, mac: foreignMAC}},
		{"NA for announced IP", na(announced6, tll(foreignMAC)), foreignLL, 255, want{conflict: announced6, mac: foreignMAC}},
		{"NA without target option", na(announced6, nil), foreignLL, 255, want{conflict: announced6}},
		{"NA with our MAC", na(announced6, tll(ourMAC)), foreignLL, 255, want{}},
		{"NA from our own address", na(announced6, tll(foreignMAC)), ourLL, 255, want{}},
		{"NA for unowned IP", na(unowned6, tll(foreignMAC)), foreignLL, 255, want{}},
		{"NA hop limit 1", na(probing6, tll(foreignMAC)), foreignLL, 1, want{}},
		{"router solicitation", mustNDP(t, &ndp.RouterSolicitation{}), foreignLL, 255, want{}},
		{"truncated NS", good[:10], foreignLL, 255, want{}},
		{"bad option length", append(ns(announced6, nil), 1, 0), foreignLL, 255, want{}},
		{"short", []byte{135, 0}, foreignLL, 255, want{}},
		{"empty", nil, foreignLL, 255, want{}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			d := decideNDP(c.msg, c.src, c.hop, ourLL, ourMAC, testPhases)
			if d.conflict != c.want.conflict || d.foreignMAC.String() != c.want.mac.String() {
				t.Errorf("conflict = %v (%v), want %v (%v)", d.conflict, d.foreignMAC, c.want.conflict, c.want.mac)
			}
			if !c.want.dst.IsValid() {
				if d.reply != nil || d.request {
					t.Errorf("reply = %+v, request = %v, want none", d.reply, d.request)
				}
				return
			}
			if !d.request {
				t.Error("request not counted")
			}
			if d.dst != c.want.dst {
				t.Errorf("reply to %v, want %v", d.dst, c.want.dst)
			}
			checkNA(t, d, ourMAC)
			if d.reply.Solicited != c.want.solicited {
				t.Errorf("Solicited = %v, want %v", d.reply.Solicited, c.want.solicited)
			}
		})
	}
}

// checkNA verifies that d's reply is a marshalable Override NA for an
// announced IP carrying our MAC.
func checkNA(t testing.TB, d ndpDecision, ourMAC net.HardwareAddr) {
	t.Helper()
	na := d.reply
	if !na.Override || na.Router || testPhases(na.TargetAddress) != phaseAnnouncing {
		t.Errorf("reply %+v: want Override, not Router, for an announced IP", na)
	}
	if got := linkLayerAddr(na.Options, ndp.Target); got.String() != ourMAC.String() {
		t.Errorf("reply target MAC %v, want %v", got, ourMAC)
	}
	if _, err := ndp.MarshalMessage(na); err != nil {
		t.Errorf("reply does not marshal: %v", err)
	}
	if d.dst.IsMulticast() && d.dst != allNodes || d.dst.IsUnspecified() {
		t.Errorf("reply to %v", d.dst)
	}
}

func TestOutgoingFrames(t *testing.T) {
	probe, err := arpProbe(ourMAC, announced4)
	if err != nil {
		t.Fatal(err)
	}
	garp, err := arpAnnouncement(ourMAC, announced4)
	if err != nil {
		t.Fatal(err)
	}
	// Seen from a foreign host (swap roles): our probe for an IP it
	// probes is a conflict for it, our announcement for an IP it
	// announces too. This is what makes two ironlb nodes notice each
	// other.
	foreignPhases := func(ip netip.Addr) phase {
		if ip == announced4 {
			return phaseProbing
		}
		return phaseNone
	}
	if d := decideARP(probe, foreignMAC, foreignPhases); d.conflict != announced4 || d.foreignMAC.String() != ourMAC.String() {
		t.Errorf("our probe seen by a prober: %+v", d)
	}
	if d := decideARP(garp, foreignMAC, foreignPhases); d.conflict != announced4 {
		t.Errorf("our announcement seen by a prober: %+v", d)
	}
	if d := decideARP(garp, ourMAC, testPhases); d.conflict.IsValid() || d.reply != nil {
		t.Errorf("our own announcement looped back: %+v", d)
	}
	na := mustNDP(t, ndpAnnouncement(ourMAC, announced6))
	if d := decideNDP(na, ourLL, 255, foreignLL, foreignMAC, testPhases); d.conflict != announced6 || d.foreignMAC.String() != ourMAC.String() {
		t.Errorf("our NA seen by another announcer: %+v", d)
	}
	probe6 := mustNDP(t, ndpProbe(ourMAC, announced6))
	d := decideNDP(probe6, ourLL, 255, foreignLL, foreignMAC, testPhases)
	if d.reply == nil || d.dst != ourLL || !d.reply.Solicited {
		t.Errorf("our NDP probe seen by the owner: %+v, want a solicited NA back", d)
	}
}

func TestAnnounceable(t *testing.T) {
	for _, c := range []struct {
		ip   string
		want bool
	}{
		{"198.18.0.1", true}, {"2001:db8::1", true}, {"0.0.0.0", false}, {"::", false},
		{"127.0.0.1", false}, {"::1", false}, {"224.0.0.1", false}, {"ff02::1", false},
		{"fe80::1", false}, {"169.254.1.1", false}, {"255.255.255.255", false},
	} {
		if got := announceable(netip.MustParseAddr(c.ip)); got != c.want {
			t.Errorf("announceable(%s) = %v, want %v", c.ip, got, c.want)
		}
	}
	if announceable(netip.Addr{}) {
		t.Error("zero Addr announceable")
	}
}

func TestNewMetricsRegisters(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	m.request(protoARP)
	m.response(protoNDP)
	m.gratuitous(protoARP)
	m.conflict(protoNDP)
	var nilMetrics *Metrics
	nilMetrics.request(protoARP) // must not panic
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
		if n := len(f.GetMetric()); n != 2 {
			t.Errorf("%s has %d series, want arp and ndp", f.GetName(), n)
		}
	}
	want := []string{"ironlb_l2_conflicts_total", "ironlb_l2_gratuitous_sent", "ironlb_l2_handovers_total", "ironlb_l2_requests_received", "ironlb_l2_responses_sent"}
	if !slices.Equal(names, want) {
		t.Errorf("registered %v, want %v", names, want)
	}
}
