package l2

import (
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
)

// TestTakeoverAndReleaseLatency measures, with the default Options, over 20
// takeovers of a fresh IP each:
//   - Set([ip]) to the first gratuitous ARP / unsolicited NA seen by the
//     client (dominated by the 200ms probe);
//   - Set(nil) to the last ARP reply the client receives while it sends a
//     request every 2ms (what was already in flight when Set was called).
//
// Run with -v to see the numbers.
func TestTakeoverAndReleaseLatency(t *testing.T) {
	if testing.Short() {
		t.Skip("measurement")
	}
	tn := newTestNet(t)
	opts := Options{Logger: testr.NewWithOptions(t, testr.Options{Verbosity: 0})}
	a := startAnnouncer(t, tn, opts)
	arpPeer := newARPPeer(t, tn)
	ndpPeer := newNDPPeer(t, tn)
	probe := opts.withDefaults().ProbeTimeout

	const runs = 20
	var takeover4, takeover6, release4, setNil []time.Duration
	for i := range runs {
		vip := netip.AddrFrom4([4]byte{198, 18, 0, byte(10 + i)})
		arpPeer.drain()
		start := time.Now()
		a.Set([]netip.Addr{vip})
		s, ok := arpPeer.next(2*time.Second, isGratuitousFor(vip, tn.nodeMAC))
		if !ok {
			t.Fatalf("run %d: no gratuitous ARP for %v", i, vip)
		}
		takeover4 = append(takeover4, s.at.Sub(start))
		waitAnnouncing(t, a.Announcer, vip, true, time.Second)

		d, err := measureRelease(a.Announcer, arpPeer, vip)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		release4 = append(release4, d.lastReply)
		setNil = append(setNil, d.setCall)
	}
	for i := range runs {
		vip := netip.AddrFrom16([16]byte{0x20, 0x01, 0x0d, 0xb8, 0, 1, 15: byte(10 + i)})
		ndpPeer.drain()
		start := time.Now()
		a.Set([]netip.Addr{vip})
		if _, ok := ndpPeer.nextNA(2*time.Second, vip, func(na *ndp.NeighborAdvertisement) bool { return !na.Solicited }); !ok {
			t.Fatalf("run %d: no unsolicited NA for %v", i, vip)
		}
		takeover6 = append(takeover6, time.Since(start))
		a.Set(nil)
	}

	for i, d := range takeover6 {
		if d > 2*probe {
			// Seen (1.3-1.7s) only while other processes on the machine
			// were creating and deleting namespaces in a loop; the ARP
			// runs were unaffected. Logged to collect more evidence.
			t.Logf("IPv6 run %d took %v", i, d)
		}
	}
	t.Logf("Set -> first gratuitous ARP (ProbeTimeout %v): %s", probe, percentiles(takeover4))
	t.Logf("Set -> first unsolicited NA  (ProbeTimeout %v): %s", probe, percentiles(takeover6))
	t.Logf("Set(nil) call duration:                        %s", percentiles(setNil))
	t.Logf("Set(nil) -> last ARP reply received (0 = none after Set): %s", percentiles(release4))

	// Loose bounds: catch a broken implementation, not a slow machine.
	if p := pct(takeover4, 99); p < probe*8/10 || p > probe+500*time.Millisecond {
		t.Errorf("takeover p99 %v, want about ProbeTimeout %v", p, probe)
	}
	// A reply read late by a busy client counts as late here, hence the
	// generous bound; TestReleaseStopsAnswering checks the behaviour.
	if p := pct(release4, 99); p > 250*time.Millisecond {
		t.Errorf("release p99 %v, want well under 250ms", p)
	}
}

type releaseTiming struct {
	setCall   time.Duration // how long Set(nil) took
	lastReply time.Duration // last reply seen after Set(nil) was called, 0 if none
}

// measureRelease has the peer send a request for vip every 2ms, calls
// Set(nil) once replies flow, and reports how long after the call the last
// reply arrived.
func measureRelease(a *Announcer, peer *arpPeer, vip netip.Addr) (releaseTiming, error) {
	req, err := arpFrame(arp.OperationRequest, peer.mac, peer.ip, ethernetZero, vip, ethernet.Broadcast)
	if err != nil {
		return releaseTiming{}, err
	}
	peer.drain()
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		tick := time.NewTicker(2 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = peer.conn.WriteTo(req, &packet.Addr{HardwareAddr: ethernet.Broadcast})
			}
		}
	}()
	defer func() { close(stop); <-stopped }()

	if _, ok := peer.next(time.Second, isReplyFor(vip)); !ok {
		return releaseTiming{}, fmt.Errorf("no reply for %v before release", vip)
	}
	t0 := time.Now()
	a.Set(nil)
	var r releaseTiming
	r.setCall = time.Since(t0)
	end := time.After(100 * time.Millisecond)
	for {
		select {
		case s := <-peer.seen:
			if isReplyFor(vip)(s.pkt) && s.at.After(t0) {
				r.lastReply = max(r.lastReply, s.at.Sub(t0))
			}
		case <-end:
			return r, nil
		}
	}
}

func pct(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	i := (len(s)*p + 99) / 100 // nearest rank
	return s[max(i-1, 0)]
}

func percentiles(d []time.Duration) string {
	r := func(x time.Duration) time.Duration { return x.Round(time.Microsecond) }
	return fmt.Sprintf("p50 %v  p99 %v  min %v  max %v  (n=%d)",
		r(pct(d, 50)), r(pct(d, 99)), r(slices.Min(d)), r(slices.Max(d)), len(d))
}
