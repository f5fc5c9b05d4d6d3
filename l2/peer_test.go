package l2

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
)

// testOptions are fast timings for tests; the latency test uses defaults.
func testOptions(t *testing.T) Options {
	return Options{
		Logger:             testr.New(t),
		GratuitousCount:    3,
		GratuitousInterval: 50 * time.Millisecond,
		ProbeTimeout:       100 * time.Millisecond,
	}
}

// testAnnouncer is an Announcer running in the node namespace.
type testAnnouncer struct {
	*Announcer
	done chan error // Run's result
}

// startAnnouncer creates the Announcer inside the node namespace (its
// sockets stay there) and runs it until the test ends.
func startAnnouncer(t *testing.T, tn *testNet, opts Options) *testAnnouncer {
	t.Helper()
	return runAnnouncer(t, newAnnouncer(t, tn, opts))
}

// runAnnouncer runs a until the test ends.
func runAnnouncer(t *testing.T, a *Announcer) *testAnnouncer {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ta := &testAnnouncer{Announcer: a, done: make(chan error, 1)}
	go func() { ta.done <- a.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-ta.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Errorf("Run did not return after cancel")
		}
	})
	return ta
}

func newAnnouncer(t *testing.T, tn *testNet, opts Options) *Announcer {
	t.Helper()
	var a *Announcer
	err := inNS(tn.node, func() error {
		var err error
		a, err = NewAnnouncer(tn.nodeIf, opts)
		return err
	})
	if err != nil {
		t.Fatalf("NewAnnouncer: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return a
}

// waitAnnouncing waits until Announcing reports ip (want) or not (!want).
func waitAnnouncing(t *testing.T, a *Announcer, ip netip.Addr, want bool, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := false
		for _, x := range a.Announcing() {
			got = got || x == ip
		}
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: announcing %v = %v, want %v (Announcing() = %v)", timeout, ip, got, want, a.Announcing())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// arpPeer is the client host's view of ARP: it sends requests and sees every
// ARP frame arriving on the client's interface. It reads through a packet
// socket and parses leniently, because arp.Client.Read gives up on the first
// frame it cannot parse and the garbage test sends plenty.
type arpPeer struct {
	conn *packet.Conn
	mac  net.HardwareAddr
	ip   netip.Addr
	seen chan arpSeen
}

type arpSeen struct {
	at  time.Time
	pkt *arp.Packet
}

func newARPPeer(t *testing.T, tn *testNet) *arpPeer {
	t.Helper()
	ifi := tn.clientInterface(t)
	var conn *packet.Conn
	err := inNS(tn.client, func() error {
		var err error
		conn, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
		return err
	})
	if err != nil {
		t.Fatalf("client ARP socket: %v", err)
	}
	p := &arpPeer{conn: conn, mac: ifi.HardwareAddr, ip: clientV4.Addr(), seen: make(chan arpSeen, 1024)}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		buf := make([]byte, 1514)
		for {
			n, _, err := conn.ReadFrom(buf)
			if err != nil {
				return
			}
			at := time.Now()
			var f ethernet.Frame
			if f.UnmarshalBinary(buf[:n]) != nil || f.EtherType != ethernet.EtherTypeARP {
				continue
			}
			pkt := new(arp.Packet)
			if pkt.UnmarshalBinary(f.Payload) != nil || pkt.IPLength != 4 || pkt.HardwareAddrLength != 6 {
				continue
			}
			select {
			case p.seen <- arpSeen{at: at, pkt: pkt}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-stopped
	})
	return p
}

// send writes an ARP packet from the client.
func (p *arpPeer) send(t *testing.T, op arp.Operation, srcIP netip.Addr, dstMAC net.HardwareAddr, dstIP netip.Addr, ethDst net.HardwareAddr) {
	t.Helper()
	f, err := arpFrame(op, p.mac, srcIP, dstMAC, dstIP, ethDst)
	if err != nil {
		t.Fatalf("build ARP frame: %v", err)
	}
	p.sendRaw(t, f, ethDst)
}

func (p *arpPeer) sendRaw(t *testing.T, frame []byte, ethDst net.HardwareAddr) {
	t.Helper()
	if _, err := p.conn.WriteTo(frame, &packet.Addr{HardwareAddr: ethDst}); err != nil {
		t.Fatalf("client send ARP: %v", err)
	}
}

// request broadcasts an ARP request for ip from the client's address.
func (p *arpPeer) request(t *testing.T, ip netip.Addr) time.Time {
	t.Helper()
	sent := time.Now()
	p.send(t, arp.OperationRequest, p.ip, ethernetZero, ip, ethernet.Broadcast)
	return sent
}

// next returns the first ARP packet matching match within timeout.
func (p *arpPeer) next(timeout time.Duration, match func(*arp.Packet) bool) (arpSeen, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case s := <-p.seen:
			if match(s.pkt) {
				return s, true
			}
		case <-timer.C:
			return arpSeen{}, false
		}
	}
}

// drain forgets everything seen so far.
func (p *arpPeer) drain() {
	for {
		select {
		case <-p.seen:
		default:
			return
		}
	}
}

func isReplyFor(ip netip.Addr) func(*arp.Packet) bool {
	return func(p *arp.Packet) bool { return p.Operation == arp.OperationReply && p.SenderIP == ip }
}

func isGratuitousFor(ip netip.Addr, mac net.HardwareAddr) func(*arp.Packet) bool {
	return func(p *arp.Packet) bool {
		return p.Operation == arp.OperationRequest && p.SenderIP == ip && p.TargetIP == ip &&
			p.SenderHardwareAddr.String() == mac.String()
	}
}

func isProbeFor(ip netip.Addr) func(*arp.Packet) bool {
	return func(p *arp.Packet) bool {
		return p.Operation == arp.OperationRequest && p.SenderIP == netip.IPv4Unspecified() && p.TargetIP == ip
	}
}

// ndpPeer is the client host's view of NDP, through mdlayher/ndp.
type ndpPeer struct {
	conn *ndp.Conn
	mac  net.HardwareAddr
	seen chan ndpSeen
}

type ndpSeen struct {
	at  time.Time
	src netip.Addr
	msg ndp.Message
}

func newNDPPeer(t *testing.T, tn *testNet) *ndpPeer {
	t.Helper()
	ifi := tn.clientInterface(t)
	var conn *ndp.Conn
	err := inNS(tn.client, func() error {
		var err error
		conn, _, err = ndp.Listen(ifi, ndp.LinkLocal)
		return err
	})
	if err != nil {
		t.Fatalf("client NDP socket: %v", err)
	}
	p := &ndpPeer{conn: conn, mac: ifi.HardwareAddr, seen: make(chan ndpSeen, 1024)}
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			m, _, src, err := conn.ReadFrom()
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					continue
				}
				return
			}
			select {
			case p.seen <- ndpSeen{at: time.Now(), src: src, msg: m}:
			default:
			}
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-stopped
	})
	return p
}

// solicit sends a multicast Neighbor Solicitation for ip, as a host
// resolving it would.
func (p *ndpPeer) solicit(t *testing.T, ip netip.Addr) {
	t.Helper()
	snm, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		t.Fatal(err)
	}
	ns := &ndp.NeighborSolicitation{
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: p.mac}},
	}
	if err := p.conn.WriteTo(ns, nil, snm); err != nil {
		t.Fatalf("client send NS: %v", err)
	}
}

// nextNA returns the first Neighbor Advertisement for target matching match.
func (p *ndpPeer) nextNA(timeout time.Duration, target netip.Addr, match func(*ndp.NeighborAdvertisement) bool) (*ndp.NeighborAdvertisement, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case s := <-p.seen:
			if na, ok := s.msg.(*ndp.NeighborAdvertisement); ok && na.TargetAddress == target && match(na) {
				return na, true
			}
		case <-timer.C:
			return nil, false
		}
	}
}

func (p *ndpPeer) drain() {
	for {
		select {
		case <-p.seen:
		default:
			return
		}
	}
}

// conflicts records OnConflict calls.
type conflicts chan conflictCall

type conflictCall struct {
	ip  netip.Addr
	mac net.HardwareAddr
}

func (c conflicts) record(ip netip.Addr, mac net.HardwareAddr) {
	select {
	case c <- conflictCall{ip, mac}:
	default:
	}
}
