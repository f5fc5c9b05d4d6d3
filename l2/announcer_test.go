package l2

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"github.com/vishvananda/netlink"
	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv6"
)

var (
	vip4      = netip.MustParseAddr("198.18.0.100")
	otherVIP4 = netip.MustParseAddr("198.18.0.101")
	vip6      = netip.MustParseAddr("2001:db8:1::100")
	otherVIP6 = netip.MustParseAddr("2001:db8:1::101")
)

func counter(t *testing.T, v *prometheus.CounterVec, proto string) float64 {
	t.Helper()
	var m dto.Metric
	if err := v.WithLabelValues(proto).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// Test case 1: an owned IP is resolved to the node's MAC by an ordinary ARP
// client; an IP the node does not own is not answered.
func TestARPAnswersOwnedIPs(t *testing.T) {
	tn := newTestNet(t)
	opts := testOptions(t)
	opts.Metrics = NewMetrics(nil)
	a := startAnnouncer(t, tn, opts)
	a.Set([]netip.Addr{vip4})
	waitAnnouncing(t, a.Announcer, vip4, true, 2*time.Second)

	ifi := tn.clientInterface(t)
	var c *arp.Client
	if err := inNS(tn.client, func() (err error) { c, err = arp.Dial(ifi); return err }); err != nil {
		t.Fatalf("arp.Dial: %v", err)
	}
	defer c.Close()

	if err := c.SetReadDeadline(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	mac, err := c.Resolve(vip4)
	if err != nil {
		t.Fatalf("resolve %v: %v", vip4, err)
	}
	if mac.String() != tn.nodeMAC.String() {
		t.Errorf("resolve %v = %v, want node MAC %v", vip4, mac, tn.nodeMAC)
	}

	if err := c.SetReadDeadline(time.Now().Add(300 * time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	if mac, err := c.Resolve(otherVIP4); err == nil {
		t.Errorf("resolve non-owned %v = %v, want no answer", otherVIP4, mac)
	} else if ne := (net.Error)(nil); !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("resolve non-owned %v: %v, want a timeout", otherVIP4, err)
	}

	if got := counter(t, opts.Metrics.RequestsReceived, protoARP); got < 1 {
		t.Errorf("requests_received{arp} = %v, want >= 1", got)
	}
	if got := counter(t, opts.Metrics.ResponsesSent, protoARP); got < 1 {
		t.Errorf("responses_sent{arp} = %v, want >= 1", got)
	}
}

// Test case 2: a takeover is an RFC 5227 probe, then after ProbeTimeout
// exactly GratuitousCount gratuitous ARPs with the node's MAC.
func TestGratuitousARPOnTakeover(t *testing.T) {
	tn := newTestNet(t)
	opts := testOptions(t)
	opts.Metrics = NewMetrics(nil)
	a := startAnnouncer(t, tn, opts)
	peer := newARPPeer(t, tn)

	setAt := time.Now()
	a.Set([]netip.Addr{vip4})
	probe, ok := peer.next(time.Second, isProbeFor(vip4))
	if !ok {
		t.Fatal("no ARP probe seen")
	}
	if got := probe.pkt.SenderHardwareAddr.String(); got != tn.nodeMAC.String() {
		t.Errorf("probe sender MAC = %v, want %v", got, tn.nodeMAC)
	}
	var garps []time.Time
	for range opts.GratuitousCount {
		s, ok := peer.next(time.Second, isGratuitousFor(vip4, tn.nodeMAC))
		if !ok {
			t.Fatalf("saw %d gratuitous ARPs, want %d", len(garps), opts.GratuitousCount)
		}
		garps = append(garps, s.at)
	}
	if _, ok := peer.next(3*opts.GratuitousInterval, isGratuitousFor(vip4, tn.nodeMAC)); ok {
		t.Errorf("more than %d gratuitous ARPs", opts.GratuitousCount)
	}
	// The probe window and the spacing must be respected. Only lower
	// bounds from the Set call are checked: receive timestamps can be late
	// (a busy test machine delays the reader) but never early.
	if d := garps[0].Sub(setAt); d < opts.ProbeTimeout*8/10 {
		t.Errorf("first gratuitous ARP %v after Set, want >= ProbeTimeout %v", d, opts.ProbeTimeout)
	}
	last := opts.ProbeTimeout + time.Duration(opts.GratuitousCount-1)*opts.GratuitousInterval
	if d := garps[len(garps)-1].Sub(setAt); d < last*8/10 {
		t.Errorf("last gratuitous ARP %v after Set, want >= %v", d, last)
	}
	if got := counter(t, opts.Metrics.GratuitousSent, protoARP); got != float64(opts.GratuitousCount) {
		t.Errorf("gratuitous_sent{arp} = %v, want %d", got, opts.GratuitousCount)
	}
}

// Test case 3: after Set(nil) the IP is no longer answered, and taking it
// back works.
func TestReleaseStopsAnswering(t *testing.T) {
	tn := newTestNet(t)
	a := startAnnouncer(t, tn, testOptions(t))
	peer := newARPPeer(t, tn)

	a.Set([]netip.Addr{vip4})
	waitAnnouncing(t, a.Announcer, vip4, true, 2*time.Second)
	peer.request(t, vip4)
	if _, ok := peer.next(time.Second, isReplyFor(vip4)); !ok {
		t.Fatal("no reply while announcing")
	}

	a.Set(nil)
	if got := a.Announcing(); len(got) != 0 {
		t.Errorf("Announcing() after Set(nil) = %v, want none", got)
	}
	peer.drain()
	peer.request(t, vip4)
	if s, ok := peer.next(300*time.Millisecond, isReplyFor(vip4)); ok {
		t.Errorf("reply from %v after release", s.pkt.SenderHardwareAddr)
	}

	a.Set([]netip.Addr{vip4})
	waitAnnouncing(t, a.Announcer, vip4, true, 2*time.Second)
	peer.drain()
	peer.request(t, vip4)
	if _, ok := peer.next(time.Second, isReplyFor(vip4)); !ok {
		t.Fatal("no reply after taking the IP back")
	}
}

// Test case 4: IPv6. Set is called before Run (the IP must be probed once
// Run starts); takeover sends unsolicited NAs, a solicitation gets a
// solicited NA with the node's MAC, a non-owned IP gets nothing.
func TestNDP(t *testing.T) {
	tn := newTestNet(t)
	opts := testOptions(t)
	opts.Metrics = NewMetrics(nil)
	a := newAnnouncer(t, tn, opts)
	peer := newNDPPeer(t, tn)
	a.Set([]netip.Addr{vip6})
	runAnnouncer(t, a)

	for i := range opts.GratuitousCount {
		na, ok := peer.nextNA(time.Second, vip6, func(na *ndp.NeighborAdvertisement) bool { return !na.Solicited })
		if !ok {
			t.Fatalf("saw %d unsolicited NAs, want %d", i, opts.GratuitousCount)
		}
		if !na.Override || na.Router {
			t.Errorf("unsolicited NA flags: override=%v router=%v, want override only", na.Override, na.Router)
		}
		if got := linkLayerAddr(na.Options, ndp.Target); got.String() != tn.nodeMAC.String() {
			t.Errorf("unsolicited NA target MAC = %v, want %v", got, tn.nodeMAC)
		}
	}
	waitAnnouncing(t, a, vip6, true, time.Second)

	peer.drain()
	peer.solicit(t, vip6)
	na, ok := peer.nextNA(time.Second, vip6, func(na *ndp.NeighborAdvertisement) bool { return na.Solicited })
	if !ok {
		t.Fatal("no solicited NA")
	}
	if !na.Override {
		t.Error("solicited NA without Override")
	}
	if got := linkLayerAddr(na.Options, ndp.Target); got.String() != tn.nodeMAC.String() {
		t.Errorf("solicited NA target MAC = %v, want %v", got, tn.nodeMAC)
	}

	peer.solicit(t, otherVIP6)
	if _, ok := peer.nextNA(300*time.Millisecond, otherVIP6, func(*ndp.NeighborAdvertisement) bool { return true }); ok {
		t.Errorf("NA for non-owned %v", otherVIP6)
	}

	a.Set(nil)
	peer.drain()
	peer.solicit(t, vip6)
	if _, ok := peer.nextNA(300*time.Millisecond, vip6, func(*ndp.NeighborAdvertisement) bool { return true }); ok {
		t.Errorf("NA for %v after release", vip6)
	}

	for _, c := range []struct {
		v    *prometheus.CounterVec
		name string
		want float64
	}{
		{opts.Metrics.GratuitousSent, "gratuitous_sent", float64(opts.GratuitousCount)},
		{opts.Metrics.RequestsReceived, "requests_received", 1},
		{opts.Metrics.ResponsesSent, "responses_sent", 1},
	} {
		if got := counter(t, c.v, protoNDP); got != c.want {
			t.Errorf("%s{ndp} = %v, want %v", c.name, got, c.want)
		}
	}
}

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

// Without IPv6 on the interface the announcer still serves IPv4.
func TestIPv4OnlyInterface(t *testing.T) {
	tn := newTestNet(t)
	if err := inNS(tn.node, func() error {
		return sysctl("net/ipv6/conf/"+tn.nodeIf+"/disable_ipv6", "1")
	}); err != nil {
		t.Fatal(err)
	}
	a := startAnnouncer(t, tn, testOptions(t))
	a.Set([]netip.Addr{vip4, vip6})
	waitAnnouncing(t, a.Announcer, vip4, true, 2*time.Second)
	time.Sleep(200 * time.Millisecond)
	if got := a.Announcing(); !slices.Equal(got, []netip.Addr{vip4}) {
		t.Errorf("Announcing() = %v, want only %v", got, vip4)
	}
}

// NewAnnouncer refuses interfaces it cannot announce on, naming the
// interface and the reason.
func TestNewAnnouncerRejectsUnusableInterfaces(t *testing.T) {
	tn := newTestNet(t)
	nh := netlinkHandle(t, tn.node)
	if err := nh.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: "xdown"}, PeerName: "xnoarp"}); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	noarp, err := nh.LinkByName("xnoarp")
	if err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetARPOff(noarp); err != nil {
		t.Fatal(err)
	}
	if err := nh.LinkSetUp(noarp); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		ifname, reason string
		unusable       bool
	}{
		{"lo", "loopback", true},
		{"xdown", "down", true},
		{"xnoarp", "NOARP", true},
		{"nonexistent0", "no such network interface", false},
	}
	if err := nh.LinkAdd(&netlink.Bond{LinkAttrs: netlink.LinkAttrs{Name: "xbond"}, Mode: netlink.BOND_MODE_ACTIVE_BACKUP}); err == nil {
		bond, _ := nh.LinkByName("xbond")
		slave, _ := nh.LinkByName("xdown")
		if err := nh.LinkSetMaster(slave, bond); err != nil {
			t.Fatalf("enslave: %v", err)
		}
		_ = nh.LinkSetUp(bond)
		_ = nh.LinkSetUp(slave)
		cases[1] = struct {
			ifname, reason string
			unusable       bool
		}{"xdown", "bond", true}
	} else {
		t.Logf("no bonding in this kernel (%v): bond slave case not tested", err)
	}
	for _, c := range cases {
		err := inNS(tn.node, func() error {
			a, err := NewAnnouncer(c.ifname, Options{})
			if err == nil {
				a.Close()
			}
			return err
		})
		if err == nil {
			t.Errorf("NewAnnouncer(%q) succeeded", c.ifname)
			continue
		}
		if !strings.Contains(err.Error(), c.ifname) || !strings.Contains(err.Error(), c.reason) {
			t.Errorf("NewAnnouncer(%q) = %q, want interface name and %q", c.ifname, err, c.reason)
		}
		if errors.Is(err, ErrUnusableInterface) != c.unusable {
			t.Errorf("NewAnnouncer(%q): errors.Is(ErrUnusableInterface) = %v, want %v", c.ifname, !c.unusable, c.unusable)
		}
	}
}

// Set may race with the read loops and itself; run with -race.
func TestConcurrentSet(t *testing.T) {
	tn := newTestNet(t)
	a := startAnnouncer(t, tn, testOptions(t))
	peer := newARPPeer(t, tn)
	stop := make(chan struct{})
	done := make(chan struct{})
	req, err := arpFrame(arp.OperationRequest, peer.mac, peer.ip, ethernetZero, vip4, ethernet.Broadcast)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				return
			default:
			}
			_, _ = peer.conn.WriteTo(req, &packet.Addr{HardwareAddr: ethernet.Broadcast})
			time.Sleep(time.Millisecond)
		}
	}()
	sets := [][]netip.Addr{{vip4}, {vip4, vip6}, nil, {vip6}, {vip4, otherVIP4, otherVIP6}}
	for i := range 200 {
		a.Set(sets[i%len(sets)])
		_ = a.Announcing()
	}
	close(stop)
	<-done
	a.Set([]netip.Addr{vip4})
	waitAnnouncing(t, a.Announcer, vip4, true, 2*time.Second)
	if got := a.Announcing(); !slices.Equal(got, []netip.Addr{vip4}) {
		t.Errorf("Announcing() = %v, want [%v]", got, vip4)
	}
}

// Close stops a running Run cleanly, nothing is announced afterwards, and
// Run cannot be restarted.
func TestCloseStopsRun(t *testing.T) {
	tn := newTestNet(t)
	a := newAnnouncer(t, tn, testOptions(t))
	done := make(chan error, 1)
	go func() { done <- a.Run(t.Context()) }()
	a.Set([]netip.Addr{vip4, vip6})
	waitAnnouncing(t, a, vip4, true, 2*time.Second)
	waitAnnouncing(t, a, vip6, true, 2*time.Second)

	if err := a.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close = %v, want nil", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after Close")
	}
	if got := a.Announcing(); len(got) != 0 {
		t.Errorf("Announcing() after Close = %v, want none", got)
	}
	if err := a.Run(t.Context()); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Run after Close = %v, want net.ErrClosed", err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

// A takeover from a peer known gone skips the probe: the first frame is
// the gratuitous ARP, well before ProbeTimeout.
func TestTakeoverSkipsProbe(t *testing.T) {
	tn := newTestNet(t)
	opts := testOptions(t)
	a := startAnnouncer(t, tn, opts)
	peer := newARPPeer(t, tn)

	setAt := time.Now()
	a.Update([]netip.Addr{vip4}, Moves{Takeover: func(netip.Addr) bool { return true }})
	s, ok := peer.next(time.Second, func(p *arp.Packet) bool {
		return isProbeFor(vip4)(p) || isGratuitousFor(vip4, tn.nodeMAC)(p)
	})
	if !ok {
		t.Fatal("nothing announced")
	}
	if isProbeFor(vip4)(s.pkt) {
		t.Fatal("a takeover was probed first")
	}
	if d := s.at.Sub(setAt); d >= opts.ProbeTimeout {
		t.Errorf("first gratuitous ARP %v after a takeover Update, want well under ProbeTimeout %v", d, opts.ProbeTimeout)
	}
	// A later re-acquisition (release, then a plain Set) probes again.
	a.Set(nil)
	a.Set([]netip.Addr{vip4})
	if _, ok := peer.next(time.Second, isProbeFor(vip4)); !ok {
		t.Fatal("a plain Set did not probe")
	}
}

// yieldAll says every address leaving the set moves to a live peer.
func yieldAll(netip.Addr) bool { return true }

// announcingBoth starts an announcer answering for vip4 and otherVIP4,
// its gratuitous bursts sent, and a peer on the LAN.
func announcingBoth(t *testing.T, tn *testNet, opts Options) (*testAnnouncer, *arpPeer) {
	t.Helper()
	a := startAnnouncer(t, tn, opts)
	peer := newARPPeer(t, tn)
	a.Set([]netip.Addr{vip4, otherVIP4})
	waitAnnouncing(t, a.Announcer, vip4, true, 2*time.Second)
	waitAnnouncing(t, a.Announcer, otherVIP4, true, 2*time.Second)
	time.Sleep(time.Duration(opts.GratuitousCount) * opts.GratuitousInterval)
	return a, peer
}

// A yielded IP (moved to a live node) keeps being answered until the new
// owner announces it, is then withdrawn without a defence, and is released
// anyway when nobody takes it over within YieldTimeout.
func TestYield(t *testing.T) {
	tn := newTestNet(t)
	got := make(conflicts, 16)
	opts := testOptions(t)
	opts.OnConflict = got.record
	opts.Metrics = NewMetrics(nil)
	opts.YieldTimeout = 500 * time.Millisecond
	a, peer := announcingBoth(t, tn, opts)
	a.Update(nil, Moves{Yield: yieldAll})
	peer.drain()
	peer.request(t, vip4)
	if _, ok := peer.next(time.Second, isReplyFor(vip4)); !ok {
		t.Fatal("a yielding IP was not answered")
	}

	// The new owner (the client's MAC here) announces vip4.
	peer.drain()
	peer.send(t, arp.OperationRequest, vip4, ethernetZero, vip4, ethernet.Broadcast)
	waitAnnouncing(t, a.Announcer, vip4, false, time.Second)
	if _, ok := peer.next(300*time.Millisecond, isGratuitousFor(vip4, tn.nodeMAC)); ok {
		t.Error("a yielding IP was defended against its new owner")
	}
	select {
	case c := <-got:
		t.Errorf("OnConflict(%v, %v) for a handover", c.ip, c.mac)
	default:
	}
	if n := counter(t, opts.Metrics.Handovers, protoARP); n != 1 {
		t.Errorf("handovers_total{arp} = %v, want 1", n)
	}

	// Nobody announces otherVIP4: released after YieldTimeout.
	waitAnnouncing(t, a.Announcer, otherVIP4, false, 2*opts.YieldTimeout)
	peer.drain()
	peer.request(t, otherVIP4)
	if _, ok := peer.next(300*time.Millisecond, isReplyFor(otherVIP4)); ok {
		t.Error("answered after the yield timed out")
	}

	// Wanted back while yielding: kept, never withdrawn.
	a.Set([]netip.Addr{vip4})
	waitAnnouncing(t, a.Announcer, vip4, true, 2*time.Second)
	a.Update(nil, Moves{Yield: yieldAll})
	a.Set([]netip.Addr{vip4})
	time.Sleep(2 * opts.YieldTimeout)
	if ips := a.Announcing(); !slices.Equal(ips, []netip.Addr{vip4}) {
		t.Errorf("Announcing() = %v after a cancelled yield, want [%v]", ips, vip4)
	}
}

// The new owner's announcement can reach this node just before its own
// view of the cluster moves the address away: the claim is defended (a
// peer with another view), and the yield that follows must not wait for
// another claim that may never come (the new owner's burst is over): the
// address is released at once, not after YieldTimeout.
func TestYieldAfterPeerClaim(t *testing.T) {
	tn := newTestNet(t)
	opts := testOptions(t)
	opts.YieldTimeout = 3 * time.Second
	opts.IsPeer = func(mac net.HardwareAddr) bool { return mac.String() == tn.clientMAC.String() }
	a, peer := announcingBoth(t, tn, opts)
	// The peer announces vip4 once; this node still wants it and defends.
	peer.drain()
	peer.send(t, arp.OperationRequest, vip4, ethernetZero, vip4, ethernet.Broadcast)
	if _, ok := peer.next(time.Second, isGratuitousFor(vip4, tn.nodeMAC)); !ok {
		t.Fatal("a peer's claim while wanted was not defended")
	}
	// Then the plan moves both away: vip4 goes at once, otherVIP4 (no
	// claim) is yielded.
	start := time.Now()
	a.Update(nil, Moves{Yield: yieldAll})
	if d := time.Since(start); slices.Contains(a.Announcing(), vip4) {
		t.Fatalf("vip4 still announced %s after a yield that its new owner's claim preceded", d)
	}
	peer.drain()
	peer.request(t, vip4)
	if _, ok := peer.next(300*time.Millisecond, isReplyFor(vip4)); ok {
		t.Error("vip4 answered after its yield, its new owner having announced")
	}
	if !slices.Contains(a.Announcing(), otherVIP4) {
		t.Error("otherVIP4, claimed by nobody, was not yielded (kept answered until a claim or YieldTimeout)")
	}
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

// Announced addresses hold no goroutine once their gratuitous burst is
// sent (a node may answer for thousands), yet are still answered, still
// defended against claims (TestConflictWhileAnnouncing, TestYield claim
// parked addresses), and released with their IPv6 groups left.
func TestAnnouncedAddressesPark(t *testing.T) {
	tn := newTestNet(t)
	opts := testOptions(t)
	a := startAnnouncer(t, tn, opts)
	arpPeer := newARPPeer(t, tn)
	ndpPeer := newNDPPeer(t, tn)
	base := runtime.NumGoroutine()

	var ips []netip.Addr
	for i := range 200 {
		ips = append(ips, netip.AddrFrom4([4]byte{198, 18, 1 + byte(i/250), 1 + byte(i%250)}))
	}
	for i := range 20 {
		ips = append(ips, netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: 0x10 + byte(i)}))
	}
	groups := func() int {
		a.groupMu.Lock()
		defer a.groupMu.Unlock()
		return len(a.groups)
	}
	a.Set(ips)
	deadline := time.Now().Add(5 * time.Second)
	for len(a.Announcing()) < len(ips) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d addresses announced after 5s", len(a.Announcing()), len(ips))
		}
		time.Sleep(10 * time.Millisecond)
	}
	waitGoroutines := func(what string) {
		t.Helper()
		deadline := time.Now().Add(2 * time.Second)
		for {
			n := runtime.NumGoroutine() - base
			if n <= 5 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d goroutines more than before", what, n)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitGoroutines(fmt.Sprintf("%d addresses announced", len(ips)))
	if n := groups(); n != 20 {
		t.Errorf("%d solicited-node groups joined, want 20", n)
	}

	arpPeer.request(t, ips[150])
	if _, ok := arpPeer.next(time.Second, isReplyFor(ips[150])); !ok {
		t.Errorf("parked %v not answered", ips[150])
	}
	ndpPeer.solicit(t, ips[210])
	if _, ok := ndpPeer.nextNA(time.Second, ips[210], func(na *ndp.NeighborAdvertisement) bool { return na.Solicited }); !ok {
		t.Errorf("parked %v not answered", ips[210])
	}

	a.Set(nil)
	if got := a.Announcing(); len(got) != 0 {
		t.Errorf("Announcing() after Set(nil) = %d addresses, want none", len(got))
	}
	arpPeer.drain()
	arpPeer.request(t, ips[150])
	if _, ok := arpPeer.next(300*time.Millisecond, isReplyFor(ips[150])); ok {
		t.Errorf("%v answered after release", ips[150])
	}
	waitGoroutines("released")
	if n := groups(); n != 0 {
		t.Errorf("%d solicited-node groups still joined after release, want 0", n)
	}
}
