package l2

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

// Test case 5 (IPv4): the client holds the IP, so its kernel answers the
// probe: the node must not announce, must report the client's MAC, and must
// take the IP once the client lets it go.
func TestConflictARP(t *testing.T) {
	tn := newTestNet(t)
	ch := tn.clientNetlink(t)
	held := netip.PrefixFrom(vip4, 32)
	addAddr(t, ch, tn.clientIf, held)

	got := make(conflicts, 16)
	opts := testOptions(t)
	opts.OnConflict = got.record
	opts.Metrics = NewMetrics(nil)
	a := startAnnouncer(t, tn, opts)
	peer := newARPPeer(t, tn)

	a.Set([]netip.Addr{vip4})
	select {
	case c := <-got:
		if c.ip != vip4 || c.mac.String() != tn.clientMAC.String() {
			t.Errorf("OnConflict(%v, %v), want (%v, %v)", c.ip, c.mac, vip4, tn.clientMAC)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("OnConflict not called")
	}
	if s, ok := peer.next(2*opts.ProbeTimeout, isGratuitousFor(vip4, tn.nodeMAC)); ok {
		t.Errorf("node announced a conflicting IP at %v", s.at)
	}
	if ips := a.Announcing(); len(ips) != 0 {
		t.Errorf("Announcing() = %v during conflict, want none", ips)
	}
	if n := counter(t, opts.Metrics.Conflicts, protoARP); n < 1 {
		t.Errorf("conflicts_total{arp} = %v, want >= 1", n)
	}

	// The client gives the IP up: the next probe (after a 1s backoff) finds
	// it free.
	delAddr(t, ch, tn.clientIf, held)
	waitAnnouncing(t, a.Announcer, vip4, true, 3*time.Second)
}

// Test case 5 (IPv6): the client's kernel holds the IP and answers the
// node's solicitation.
func TestConflictNDP(t *testing.T) {
	tn := newTestNet(t)
	ch := tn.clientNetlink(t)
	addAddr(t, ch, tn.clientIf, netip.PrefixFrom(vip6, 128))

	got := make(conflicts, 16)
	opts := testOptions(t)
	opts.OnConflict = got.record
	a := startAnnouncer(t, tn, opts)
	peer := newNDPPeer(t, tn)

	a.Set([]netip.Addr{vip6})
	select {
	case c := <-got:
		if c.ip != vip6 || c.mac.String() != tn.clientMAC.String() {
			t.Errorf("OnConflict(%v, %v), want (%v, %v)", c.ip, c.mac, vip6, tn.clientMAC)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("OnConflict not called")
	}
	fromNode := func(na *ndp.NeighborAdvertisement) bool {
		return linkLayerAddr(na.Options, ndp.Target).String() == tn.nodeMAC.String()
	}
	if _, ok := peer.nextNA(2*opts.ProbeTimeout, vip6, fromNode); ok {
		t.Error("node advertised a conflicting IP")
	}
	if ips := a.Announcing(); len(ips) != 0 {
		t.Errorf("Announcing() = %v during conflict, want none", ips)
	}
}

// Test case 5, while announcing: a foreign gratuitous ARP for an announced
// IP is reported (once per defend interval) and defended, and the IP stays
// announced.
func TestConflictWhileAnnouncing(t *testing.T) {
	tn := newTestNet(t)
	got := make(conflicts, 16)
	opts := testOptions(t)
	opts.OnConflict = got.record
	a := startAnnouncer(t, tn, opts)
	peer := newARPPeer(t, tn)

	a.Set([]netip.Addr{vip4})
	waitAnnouncing(t, a.Announcer, vip4, true, 2*time.Second)
	time.Sleep(time.Duration(opts.GratuitousCount) * opts.GratuitousInterval) // let the takeover burst end
	peer.drain()

	claim := func() {
		peer.send(t, arp.OperationRequest, vip4, ethernetZero, vip4, ethernet.Broadcast)
	}
	claim()
	select {
	case c := <-got:
		if c.ip != vip4 || c.mac.String() != tn.clientMAC.String() {
			t.Errorf("OnConflict(%v, %v), want (%v, %v)", c.ip, c.mac, vip4, tn.clientMAC)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("OnConflict not called")
	}
	if _, ok := peer.next(time.Second, isGratuitousFor(vip4, tn.nodeMAC)); !ok {
		t.Error("IP not defended with a gratuitous ARP")
	}
	claim()
	select {
	case c := <-got:
		t.Errorf("second OnConflict(%v, %v) within the defend interval", c.ip, c.mac)
	case <-time.After(300 * time.Millisecond):
	}
	if ips := a.Announcing(); !slices.Equal(ips, []netip.Addr{vip4}) {
		t.Errorf("Announcing() = %v, want [%v]", ips, vip4)
	}
}

// Test case 6: malformed ARP frames and ICMPv6 messages, and well-formed
// ones that must be ignored, do not stop the announcer, which still answers
// afterwards and answered none of the bad ones.
func TestGarbageDoesNotStopAnswering(t *testing.T) {
	tn := newTestNet(t)
	a := startAnnouncer(t, tn, testOptions(t))
	arpPeer := newARPPeer(t, tn)
	ndpPeer := newNDPPeer(t, tn)
	a.Set([]netip.Addr{vip4, vip6})
	waitAnnouncing(t, a.Announcer, vip4, true, 2*time.Second)
	waitAnnouncing(t, a.Announcer, vip6, true, 2*time.Second)
	time.Sleep(200 * time.Millisecond) // let the takeover bursts end
	arpPeer.drain()
	ndpPeer.drain()

	// ARP garbage, sent with the client's MAC as Ethernet source.
	bcast := ethernet.Broadcast
	eth := func(payload ...byte) []byte {
		f := append(slices.Clone([]byte(bcast)), arpPeer.mac...)
		f = append(f, 0x08, 0x06)
		return append(f, payload...)
	}
	good, err := arpFrame(arp.OperationRequest, arpPeer.mac, clientV4.Addr(), ethernetZero, vip4, bcast)
	if err != nil {
		t.Fatal(err)
	}
	mutate := func(fn func(f []byte)) []byte { f := slices.Clone(good); fn(f); return f }
	frames := [][]byte{
		eth(),                                             // header only
		eth(0, 1, 8, 0, 6, 4, 0),                          // truncated ARP header
		eth(0, 1, 8, 0, 255, 255, 0, 1, 1, 2, 3),          // huge lengths, truncated
		good[:30],                                         // truncated addresses
		mutate(func(f []byte) { f[14+5] = 16 }),           // IPv6-sized protocol address
		mutate(func(f []byte) { f[14+1] = 6 }),            // hardware type 6
		mutate(func(f []byte) { f[14+7] = 3 }),            // operation 3
		mutate(func(f []byte) { copy(f[14+8:], bcast) }),  // broadcast sender MAC
		mutate(func(f []byte) { f[12], f[13] = 0x81, 0 }), // VLAN tag where ARP was
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 50 {
		f := eth(make([]byte, rng.IntN(60))...)
		for i := 14; i < len(f); i++ {
			f[i] = byte(rng.Uint32())
		}
		frames = append(frames, f)
	}
	for _, f := range frames {
		arpPeer.sendRaw(t, f, bcast)
	}

	// ICMPv6 garbage to the VIP's solicited-node group, through a raw
	// socket (the kernel fills in the checksum).
	ifi := tn.clientInterface(t)
	var ic *icmp.PacketConn
	if err := inNS(tn.client, func() (err error) {
		ic, err = icmp.ListenPacket("ip6:ipv6-icmp", tn.clientLL.String()+"%"+tn.clientIf)
		return err
	}); err != nil {
		t.Fatalf("client ICMPv6 socket: %v", err)
	}
	defer ic.Close()
	snm, _ := ndp.SolicitedNodeMulticast(vip6)
	ns, err := ndp.MarshalMessage(&ndp.NeighborSolicitation{
		TargetAddress: vip6,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}},
	})
	if err != nil {
		t.Fatal(err)
	}
	target := vip6.As16()
	msgs := []struct {
		b   []byte
		hop int
	}{
		{[]byte{135, 0, 0, 0}, 255},                                                    // NS without body
		{append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, target[:8]...), 255},                 // truncated target
		{append(append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, target[:]...), 1, 0), 255},    // zero-length option
		{append(append([]byte{135, 0, 0, 0, 0, 0, 0, 0}, target[:]...), 1, 9, 1), 255}, // option past the end
		{append(append([]byte{136, 0, 0, 0, 0, 0, 0, 0}, target[:]...), 2, 1, 1), 255}, // truncated NA option
		{mutateBytes(ns, func(b []byte) { b[1] = 1 }), 255},                            // code 1
		{ns, 64}, // valid, but from off-link (hop limit 64)
	}
	for range 20 {
		// At least the 4-byte ICMPv6 header: the kernel refuses to
		// checksum less.
		b := make([]byte, 4+rng.IntN(40))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		b[0] = byte(135 + rng.IntN(2))
		msgs = append(msgs, struct {
			b   []byte
			hop int
		}{b, 255})
	}
	pc := ic.IPv6PacketConn()
	for _, m := range msgs {
		cm := &ipv6.ControlMessage{HopLimit: m.hop, IfIndex: ifi.Index}
		if _, err := pc.WriteTo(m.b, cm, &net.IPAddr{IP: snm.AsSlice(), Zone: tn.clientIf}); err != nil {
			t.Fatalf("client send ICMPv6: %v", err)
		}
	}

	// None of it may have been answered...
	if s, ok := arpPeer.next(200*time.Millisecond, isReplyFor(vip4)); ok {
		t.Errorf("garbage ARP answered: %+v", s.pkt)
	}
	if na, ok := ndpPeer.nextNA(200*time.Millisecond, vip6, func(*ndp.NeighborAdvertisement) bool { return true }); ok {
		t.Errorf("garbage NDP answered: %+v", na)
	}
	select {
	case err := <-a.done:
		t.Fatalf("Run returned after garbage: %v", err)
	default:
	}
	// ...and the announcer still answers.
	arpPeer.request(t, vip4)
	if _, ok := arpPeer.next(time.Second, isReplyFor(vip4)); !ok {
		t.Error("ARP not answered after garbage")
	}
	ndpPeer.solicit(t, vip6)
	if _, ok := ndpPeer.nextNA(time.Second, vip6, func(na *ndp.NeighborAdvertisement) bool { return na.Solicited }); !ok {
		t.Error("NDP not answered after garbage")
	}
}

func mutateBytes(b []byte, fn func([]byte)) []byte {
	b = slices.Clone(b)
	fn(b)
	return b
}

// A peer node (IsPeer) still answering for an IP is an ownership change in
// flight: the peer is yielding until the new owner announces, so the
// probe's claim from it is taken over at once, never reported as a
// conflict, and its further claims are defended, not reported either.
func TestPeerClaimIsNotAConflict(t *testing.T) {
	tn := newTestNet(t)
	ch := tn.clientNetlink(t)
	held := netip.PrefixFrom(vip4, 32)
	addAddr(t, ch, tn.clientIf, held)

	got := make(conflicts, 16)
	opts := testOptions(t)
	opts.OnConflict = got.record
	opts.IsPeer = func(mac net.HardwareAddr) bool { return mac.String() == tn.clientMAC.String() }
	a := startAnnouncer(t, tn, opts)

	start := time.Now()
	a.Set([]netip.Addr{vip4})
	waitAnnouncing(t, a.Announcer, vip4, true, time.Second)
	if d := time.Since(start); d > 3*defaultProbeTimeout {
		t.Errorf("took over from a peer after %s, want within the probe (%s)", d, defaultProbeTimeout)
	}
	// The "peer" (this host's kernel) keeps answering: defended, never
	// reported.
	time.Sleep(1500 * time.Millisecond)
	select {
	case c := <-got:
		t.Fatalf("OnConflict(%v, %v) for a peer", c.ip, c.mac)
	default:
	}
	if ips := a.Announcing(); !slices.Equal(ips, []netip.Addr{vip4}) {
		t.Errorf("Announcing() = %v while a peer also claims it, want [%v]", ips, vip4)
	}
	delAddr(t, ch, tn.clientIf, held)
}
