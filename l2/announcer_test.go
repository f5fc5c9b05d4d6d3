package l2

import (
	"errors"
	"net"
	"net/netip"
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
