package l2

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
)

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
