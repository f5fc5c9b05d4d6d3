package membership

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestNew(t *testing.T) {
	key := testKey()
	tests := []struct {
		name    string
		cfg     Config
		wantErr bool
	}{
		{"defaults", Config{Self: "a", Bind: loopback0, Key: key}, false},
		{"no self", Config{Bind: loopback0, Key: key}, true},
		{"long self", Config{Self: string(make([]byte, maxNameLen+1)), Bind: loopback0, Key: key}, true},
		{"short key", Config{Self: "a", Bind: loopback0, Key: key[:MinKeyLen-1]}, true},
		{"no bind", Config{Self: "a", Key: key}, true},
		{"timeout not above interval", Config{Self: "a", Bind: loopback0, Key: key, Interval: time.Second, Timeout: time.Second}, true},
		{"negative interval", Config{Self: "a", Bind: loopback0, Key: key, Interval: -time.Second}, true},
		{"address not local", Config{Self: "a", Bind: netip.MustParseAddrPort("192.0.2.1:7946"), Key: key}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := New(tt.cfg)
			if (err != nil) != tt.wantErr {
				t.Fatalf("New: error %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			defer m.Close()
			if m.interval != DefaultInterval || m.timeout != DefaultTimeout {
				t.Errorf("interval %v, timeout %v: defaults not applied", m.interval, m.timeout)
			}
			if !m.Addr().Addr().IsLoopback() || m.Addr().Port() == 0 {
				t.Errorf("Addr() = %v", m.Addr())
			}
			if got := m.Alive(); !maps.Equal(got, map[string]bool{"a": true}) {
				t.Errorf("Alive() = %v, want only self", got)
			}
		})
	}
}

func TestSetPeers(t *testing.T) {
	h := newHarness(t)
	h.m.handle(h.pkt(msgHeartbeat, 1, 1, 0), h.now)
	if !h.m.IsAlive("p") {
		t.Fatal("p not alive")
	}
	drain(h.m.Changes())

	// Address change and invalid entries: p keeps its state.
	h.m.SetPeers(map[string]netip.AddrPort{
		"p":                       netip.MustParseAddrPort("[::ffff:127.0.0.2]:7946"),
		"self":                    netip.MustParseAddrPort("127.0.0.3:7946"),
		"":                        netip.MustParseAddrPort("127.0.0.4:7946"),
		"no-port":                 netip.AddrPortFrom(netip.MustParseAddr("127.0.0.5"), 0),
		"invalid":                 {},
		"q":                       netip.MustParseAddrPort("127.0.0.6:7946"),
		string(make([]byte, 254)): netip.MustParseAddrPort("127.0.0.7:7946"),
	})
	if !h.m.IsAlive("p") {
		t.Error("p lost its state on an address change")
	}
	if got := slices.Sorted(maps.Keys(h.m.peers)); !slices.Equal(got, []string{"p", "q"}) {
		t.Errorf("peers %v, want [p q]", got)
	}
	if got := h.m.peers["p"].addr; got != netip.MustParseAddrPort("127.0.0.2:7946") {
		t.Errorf("p's address %v, want it unmapped", got)
	}
	select {
	case <-h.m.Changes():
		t.Error("change notified though Alive did not change")
	default:
	}

	// Removal of an alive peer is a change.
	h.m.SetPeers(peerMap("q"))
	select {
	case <-h.m.Changes():
	default:
		t.Error("removing an alive peer not notified")
	}
	if got := h.m.Alive(); !maps.Equal(got, map[string]bool{"self": true}) {
		t.Errorf("Alive() = %v, want only self", got)
	}
	if got := allTransitions(h.m); got != 1 {
		t.Errorf("%v transitions, want 1 (removal is not one)", got)
	}
}

func TestMetricsRegistered(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	met := NewMetrics(reg)
	met.packet(resultOK)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range families {
		names = append(names, f.GetName())
	}
	want := []string{"ironlb_membership_packets_total", "ironlb_membership_peer_transitions_total", "ironlb_membership_peers_alive"}
	if !slices.Equal(names, want) {
		t.Errorf("metrics %v, want %v", names, want)
	}
	// Nil metrics are fine.
	var nilMet *Metrics
	nilMet.packet(resultOK)
	nilMet.transition(true)
	nilMet.peersAlive(1)
}

func TestRunTwice(t *testing.T) {
	m := newNode(t, "a", testKey()).m
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	errs := make(chan error, 2)
	for range 2 {
		go func() { errs <- m.Run(ctx) }()
	}
	failed := 0
	for range 2 {
		if err := <-errs; err != nil {
			failed++
		}
	}
	if failed != 1 {
		t.Errorf("%d of 2 concurrent Runs failed, want 1", failed)
	}
}

// A restarted speaker (same name, new incarnation, maybe a new port) must
// be accepted at once, whether or not its peers noticed it was gone:
// their state for its old incarnation must not lock it out.
func TestRestart(t *testing.T) {
	t.Parallel()
	for _, detected := range []bool{true, false} {
		t.Run(fmt.Sprint("detected=", detected), func(t *testing.T) {
			t.Parallel()
			nodes := cluster(t, "a", "b")
			b := nodes[1]
			waitAllAlive(t, nodes, time.Second)
			time.Sleep(2 * DefaultInterval) // out of the handshake
			nodes[0].crash(t)
			if detected {
				waitAlive(t, b, "a", false, time.Second)
			}
			a2 := newNode(t, "a", testKey())
			a2.m.SetPeers(map[string]netip.AddrPort{"b": b.m.Addr()})
			b.m.SetPeers(map[string]netip.AddrPort{"a": a2.m.Addr()})
			start := time.Now()
			a2.start(t)
			incOf := func() uint64 {
				b.m.mu.Lock()
				defer b.m.mu.Unlock()
				return b.m.peers["a"].inc
			}
			for incOf() != a2.m.inc || !b.m.IsAlive("a") || !a2.m.IsAlive("b") {
				if time.Since(start) > 2*DefaultInterval+DefaultInterval {
					t.Fatalf("restarted a not accepted after %v (b alive %v, a alive %v)", time.Since(start), b.m.IsAlive("a"), a2.m.IsAlive("b"))
				}
				time.Sleep(time.Millisecond)
			}
			t.Logf("restarted a accepted after %v", time.Since(start))
			if !detected && b.transitions("dead") != 0 {
				t.Error("b saw a die though it restarted within Timeout")
			}
		})
	}
}

func TestTimingScalesWithPeers(t *testing.T) {
	tests := []struct {
		peers             int
		interval, timeout time.Duration
	}{
		{0, 100 * time.Millisecond, 400 * time.Millisecond},
		{25, 100 * time.Millisecond, 400 * time.Millisecond},
		{49, 196 * time.Millisecond, 784 * time.Millisecond},
		{99, 396 * time.Millisecond, 1584 * time.Millisecond},
		{10, 100 * time.Millisecond, 400 * time.Millisecond}, // shrinks back
	}
	m, err := New(Config{Self: "self", Bind: loopback0, Key: testKey()})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for _, tt := range tests {
		peers := map[string]netip.AddrPort{}
		for i := range tt.peers {
			peers[fmt.Sprintf("p%d", i)] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(10000+i))
		}
		m.SetPeers(peers)
		if iv, to := m.Timing(); iv != tt.interval || to != tt.timeout {
			t.Errorf("%d peers: interval %v, timeout %v; want %v, %v", tt.peers, iv, to, tt.interval, tt.timeout)
		}
	}
}

// TestTimingStretchesRun checks that a running mesh really sends at the
// stretched interval: the budget is a rate, not a number on paper.
func TestTimingStretchesRun(t *testing.T) {
	t.Parallel()
	met := NewMetrics(nil)
	m, err := New(Config{Self: "self", Bind: loopback0, Key: testKey(), Metrics: met, MaxRate: 20})
	if err != nil {
		t.Fatal(err)
	}
	// Ten silent peers (bound sockets that never answer) at 20 packets/s:
	// one heartbeat each per 500 ms instead of per 100 ms.
	peers := map[string]netip.AddrPort{}
	var sinks []*net.UDPConn
	for i := range 10 {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback0))
		if err != nil {
			t.Fatal(err)
		}
		sinks = append(sinks, c)
		peers[fmt.Sprintf("p%d", i)] = c.LocalAddr().(*net.UDPAddr).AddrPort()
	}
	defer func() {
		for _, c := range sinks {
			c.Close()
		}
	}()
	m.SetPeers(peers)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx) }()
	var got atomic.Int64
	for _, c := range sinks {
		go func() {
			buf := make([]byte, 2048)
			for {
				if _, _, err := c.ReadFromUDPAddrPort(buf); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	time.Sleep(2 * time.Second)
	cancel()
	<-done
	// 2 s at 20/s is about 40, plus the first round and the leaving
	// messages (3 per peer); at the unstretched 100 ms it would be 200+.
	if n := got.Load(); n < 30 || n > 90 {
		t.Errorf("%d packets to 10 peers in 2 s at MaxRate 20, want about 40 (+30 leaving)", n)
	}
}

func TestSettled(t *testing.T) {
	t.Parallel()
	t.Run("every peer heard", func(t *testing.T) {
		t.Parallel()
		nodes := cluster(t, "a", "b", "c")
		start := time.Now()
		waitAllAlive(t, nodes, 2*time.Second)
		for _, n := range nodes {
			for !n.m.Settled() {
				select {
				case <-n.m.Changes():
				case <-time.After(2 * time.Second):
					t.Fatalf("%s not settled with every peer alive", n.name)
				}
			}
		}
		// Well before the detection period: it did not wait for it.
		if d := time.Since(start); d >= DefaultTimeout+DefaultInterval {
			t.Errorf("settled after %v, want before %v", d, DefaultTimeout+DefaultInterval)
		}
	})
	t.Run("a peer never heard", func(t *testing.T) {
		t.Parallel()
		a := newNode(t, "a", testKey())
		a.start(t)
		// No peer list yet: however long, not settled.
		time.Sleep(DefaultTimeout + 2*DefaultInterval)
		if a.m.Settled() {
			t.Fatal("settled before any peer list")
		}
		set := time.Now()
		a.m.SetPeers(map[string]netip.AddrPort{"ghost": netip.MustParseAddrPort("127.0.0.1:9")})
		for !a.m.Settled() {
			select {
			case <-a.m.Changes():
			case <-time.After(2 * time.Second):
				t.Fatal("not settled 2 s after the peer list")
			}
		}
		if d := time.Since(set); d < DefaultTimeout+DefaultInterval {
			t.Errorf("settled %v after the peer list, before the detection period %v", d, DefaultTimeout+DefaultInterval)
		}
		if a.m.IsAlive("ghost") {
			t.Error("ghost alive")
		}
	})
}
