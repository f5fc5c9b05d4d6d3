package membership

import (
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// These tests run real meshes over UDP on 127.0.0.1, with the default
// Interval (100 ms) and Timeout (400 ms). Their timing assertions leave
// room for a loaded 2-core machine but stay well inside the bounds that
// matter: a crash must be detected within 1 s but not before Timeout−2×
// Interval (it would mean a live peer can be declared dead), a graceful
// leave well before any timeout could have fired.

var loopback0 = netip.MustParseAddrPort("127.0.0.1:0")

func counterValue(c prometheus.Counter) float64 {
	var d dto.Metric
	if err := c.Write(&d); err != nil {
		panic(err)
	}
	return d.GetCounter().GetValue()
}

func gaugeValue(g prometheus.Gauge) float64 {
	var d dto.Metric
	if err := g.Write(&d); err != nil {
		panic(err)
	}
	return d.GetGauge().GetValue()
}

// node is a mesh under test.
type node struct {
	name   string
	m      *Mesh
	met    *Metrics
	faults *faults

	cancel context.CancelFunc
	done   chan error
}

func newNode(t testing.TB, name string, key []byte) *node {
	t.Helper()
	met := NewMetrics(nil)
	f := &faults{}
	m, err := New(Config{Self: name, Bind: loopback0, Key: key, Metrics: met, Faults: f})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return &node{name: name, m: m, met: met, faults: f}
}

// faults are a node's simulated crash or partition (Config.Faults).
type faults struct{ dropIn, dropOut, skipLeave atomic.Bool }

func (f *faults) DropIn() bool    { return f.dropIn.Load() }
func (f *faults) DropOut() bool   { return f.dropOut.Load() }
func (f *faults) SkipLeave() bool { return f.skipLeave.Load() }

func (n *node) packets(result string) float64 {
	return counterValue(n.met.Packets.WithLabelValues(result))
}

func (n *node) transitions(to string) float64 {
	return counterValue(n.met.Transitions.WithLabelValues(to))
}

// start runs the mesh until the test ends or stop/crash is called.
func (n *node) start(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	n.cancel, n.done = cancel, make(chan error, 1)
	go func() { n.done <- n.m.Run(ctx) }()
	t.Cleanup(func() { n.stop(t) })
}

// stop cancels Run (which sends the leaving message) and waits for it.
func (n *node) stop(t testing.TB) {
	n.cancel()
	select {
	case err, ok := <-n.done:
		if ok && err != nil {
			t.Errorf("%s: Run: %v", n.name, err)
		}
		if ok {
			close(n.done)
		}
	case <-time.After(2 * time.Second):
		t.Errorf("%s: Run did not return", n.name)
	}
}

// crash silences the node at once and stops it without a leaving message.
func (n *node) crash(t testing.TB) {
	n.faults.dropOut.Store(true)
	n.faults.skipLeave.Store(true)
	n.stop(t)
}

// connect makes every node a peer of every other.
func connect(nodes ...*node) {
	all := make(map[string]netip.AddrPort)
	for _, n := range nodes {
		all[n.name] = n.m.Addr()
	}
	for _, n := range nodes {
		n.m.SetPeers(all) // self included: it must be ignored
	}
}

func cluster(t testing.TB, names ...string) []*node {
	t.Helper()
	var nodes []*node
	for _, name := range names {
		nodes = append(nodes, newNode(t, name, testKey()))
	}
	connect(nodes...)
	for _, n := range nodes {
		n.start(t)
	}
	return nodes
}

// waitAlive waits until n sees peer as alive (or not), using Changes, and
// returns when it saw it. It fails the test after limit.
func waitAlive(t testing.TB, n *node, peer string, want bool, limit time.Duration) (time.Time, bool) {
	t.Helper()
	timeout := time.After(limit)
	for {
		if n.m.IsAlive(peer) == want {
			return time.Now(), true
		}
		select {
		case <-n.m.Changes():
		case <-timeout:
			t.Errorf("%s: %s alive is not %v after %v", n.name, peer, want, limit)
			return time.Now(), false
		}
	}
}

// waitAllAlive waits until every node sees all the others, and returns how
// long that took.
func waitAllAlive(t testing.TB, nodes []*node, limit time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for _, n := range nodes {
		for _, p := range nodes {
			waitAlive(t, n, p.name, true, limit-time.Since(start))
		}
	}
	return time.Since(start)
}

func drain(ch <-chan struct{}) {
	select {
	case <-ch:
	default:
	}
}

func percentile(ds []time.Duration, p float64) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(p*float64(len(s))+0.999999) - 1
	return s[max(0, min(i, len(s)-1))]
}

func TestMeshesSeeEachOther(t *testing.T) {
	t.Parallel()
	names := []string{"node-a", "node-b", "node-c"}
	nodes := cluster(t, names...)
	took := waitAllAlive(t, nodes, 2*DefaultInterval+DefaultInterval)
	t.Logf("3 meshes all alive after %v", took)
	for _, n := range nodes {
		want := map[string]bool{"node-a": true, "node-b": true, "node-c": true}
		if got := n.m.Alive(); !maps.Equal(got, want) {
			t.Errorf("%s: Alive() = %v, want %v", n.name, got, want)
		}
		if got := gaugeValue(n.met.PeersAlive); got != 2 {
			t.Errorf("%s: peers_alive %v, want 2", n.name, got)
		}
	}
	// A few heartbeats in, nothing has flapped and nothing was rejected
	// but handshake packets.
	time.Sleep(3 * DefaultInterval)
	for _, n := range nodes {
		if got := n.transitions("alive"); got != 2 {
			t.Errorf("%s: %v transitions to alive, want 2", n.name, got)
		}
		if got := n.transitions("dead"); got != 0 {
			t.Errorf("%s: %v transitions to dead, want 0", n.name, got)
		}
		for _, r := range []string{resultBadMAC, resultMalformed, resultUnknownPeer} {
			if got := n.packets(r); got != 0 {
				t.Errorf("%s: %v %s packets", n.name, got, r)
			}
		}
		if got := n.packets(resultOK); got < 4 {
			t.Errorf("%s: only %v ok packets", n.name, got)
		}
	}
	// Alive returns a copy.
	a := nodes[0].m.Alive()
	delete(a, "node-b")
	if !nodes[0].m.IsAlive("node-b") {
		t.Error("modifying Alive()'s result changed the mesh")
	}
}

// runs is the number of detection measurements per test. The runs are
// independent 3-node clusters, run concurrently to keep the test short;
// each yields one sample per surviving node.
const runs = 20

// measure runs fn concurrently in runs clusters of 3 and collects the
// samples: how long after fn returned each survivor saw node 0 as dead.
func measure(t *testing.T, fn func(t *testing.T, victim *node)) []time.Duration {
	var mu sync.Mutex
	var samples []time.Duration
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			// Each run needs its own cleanups: a subtest. Not a parallel
			// one, which would only start after measure returns.
			t.Run(fmt.Sprint("run", i), func(t *testing.T) {
				nodes := cluster(t, "victim", "obs-1", "obs-2")
				waitAllAlive(t, nodes, time.Second)
				for _, n := range nodes[1:] {
					drain(n.m.Changes())
				}
				// Sample every phase of the heartbeat cycle.
				time.Sleep(rand.N(DefaultInterval))
				// The observers watch from before fn: it may block (Leave
				// takes ~10 ms to repeat its message) after the event.
				var start time.Time
				began := make(chan struct{})
				var wgObs sync.WaitGroup
				for _, obs := range nodes[1:] {
					wgObs.Go(func() {
						<-began
						if at, ok := waitAlive(t, obs, "victim", false, 2*time.Second); ok {
							mu.Lock()
							samples = append(samples, at.Sub(start))
							mu.Unlock()
						}
					})
				}
				start = time.Now()
				close(began)
				fn(t, nodes[0])
				wgObs.Wait()
				for _, obs := range nodes[1:] {
					if got := obs.transitions("dead"); got != 1 {
						t.Errorf("%s: %v transitions to dead, want 1", obs.name, got)
					}
				}
				// The survivors still see each other.
				if !nodes[1].m.IsAlive("obs-2") || !nodes[2].m.IsAlive("obs-1") {
					t.Error("survivors lost each other")
				}
			})
		})
	}
	wg.Wait()
	if t.Failed() || len(samples) == 0 {
		t.FailNow()
	}
	return samples
}

func TestCrashDetection(t *testing.T) {
	samples := measure(t, func(t *testing.T, victim *node) {
		victim.crash(t)
	})
	p50, p99 := percentile(samples, 0.5), percentile(samples, 0.99)
	t.Logf("crash detection over %d runs × 2 observers: p50 %v, p99 %v, min %v, max %v (Interval %v, Timeout %v)",
		runs, p50, p99, slices.Min(samples), slices.Max(samples), DefaultInterval, DefaultTimeout)
	for _, d := range samples {
		if d >= time.Second {
			t.Errorf("crash detected after %v, want < 1s", d)
		}
	}
	// Not too early either: the victim was alive until the crash, and
	// declaring a live peer dead is a spurious failover.
	if p50 < DefaultTimeout-2*DefaultInterval {
		t.Errorf("median detection %v, want ≥ %v: peers are declared dead too early", p50, DefaultTimeout-2*DefaultInterval)
	}
}

func TestGracefulLeave(t *testing.T) {
	tests := []struct {
		name  string
		leave func(t *testing.T, n *node)
	}{
		{"Leave", func(t *testing.T, n *node) { n.m.Leave() }},
		{"cancel Run", func(t *testing.T, n *node) { n.stop(t) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			samples := measure(t, tt.leave)
			p50, p99 := percentile(samples, 0.5), percentile(samples, 0.99)
			t.Logf("graceful (%s) detection over %d runs × 2 observers: p50 %v, p99 %v, max %v",
				tt.name, runs, p50, p99, slices.Max(samples))
			// A timeout can't fire before Timeout−Interval (300 ms): well
			// under that, only the leaving message explains detection.
			for _, d := range samples {
				if d >= 200*time.Millisecond {
					t.Errorf("leave detected after %v, want < 200ms", d)
				}
			}
			// The kernel steers leaving messages to a socket read at once
			// (heartbeats wait for the next tick): a round trip, not a tick.
			if p50 > 20*time.Millisecond {
				t.Errorf("median leave detection %v, want ≤ 20ms", p50)
			}
		})
	}
}

func TestLeftNodeStaysDead(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, "a", "b")
	waitAllAlive(t, nodes, time.Second)
	nodes[0].m.Leave()
	waitAlive(t, nodes[1], "a", false, 200*time.Millisecond)
	// a keeps running but sends no heartbeat, nor replies to b's.
	time.Sleep(DefaultTimeout)
	if nodes[1].m.IsAlive("a") || nodes[1].transitions("alive") != 1 {
		t.Errorf("a came back after leaving (alive %v, %v transitions to alive)", nodes[1].m.IsAlive("a"), nodes[1].transitions("alive"))
	}
	// a still tracks b.
	if !nodes[0].m.IsAlive("b") {
		t.Error("a stopped seeing b after leaving")
	}
}

func TestWrongKey(t *testing.T) {
	t.Parallel()
	a, b := newNode(t, "a", testKey()), newNode(t, "b", testKey())
	c := newNode(t, "c", []byte("not the cluster's key, but long"))
	nodes := []*node{a, b, c}
	connect(nodes...)
	for _, n := range nodes {
		n.start(t)
	}
	waitAlive(t, a, "b", true, time.Second)
	waitAlive(t, b, "a", true, time.Second)
	time.Sleep(5 * DefaultInterval)
	for _, n := range nodes {
		if got := n.packets(resultBadMAC); got == 0 {
			t.Errorf("%s: no bad_mac packets counted", n.name)
		}
	}
	for _, pair := range [][2]*node{{a, c}, {b, c}, {c, a}, {c, b}} {
		if pair[0].m.IsAlive(pair[1].name) {
			t.Errorf("%s sees %s alive", pair[0].name, pair[1].name)
		}
	}
	// Never alive, not even for a moment.
	for _, n := range nodes {
		want := 1.0
		if n == c {
			want = 0
		}
		if got := n.transitions("alive"); got != want {
			t.Errorf("%s: %v transitions to alive, want %v", n.name, got, want)
		}
	}
}

// proxy sits between a sender and a receiver and can replay what it saw:
// the attacker on the path.
type proxy struct {
	conn     *net.UDPConn
	to       netip.AddrPort
	withhold atomic.Bool

	mu        sync.Mutex
	delivered [][]byte
	withheld  [][]byte
}

func newProxy(t *testing.T, to netip.AddrPort) *proxy {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback0))
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{conn: conn, to: to}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, recvBufLen)
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pkt := slices.Clone(buf[:n])
			p.mu.Lock()
			if p.withhold.Load() {
				p.withheld = append(p.withheld, pkt)
			} else {
				p.delivered = append(p.delivered, pkt)
				conn.WriteToUDPAddrPort(pkt, to)
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *proxy) addr() netip.AddrPort {
	return p.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// replay sends the packets again, paced like heartbeats would be.
func (p *proxy) replay(pkts [][]byte) {
	for _, pkt := range pkts {
		p.conn.WriteToUDPAddrPort(pkt, p.to)
		time.Sleep(2 * time.Millisecond)
	}
}

func TestReplay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// withhold is how long before the crash the proxy stops
		// forwarding (0: never).
		withhold time.Duration
		// wait is how long after b sees a dead the replay starts.
		wait time.Duration
		// pick chooses the packets to replay.
		pick func(p *proxy) [][]byte
		// resurrect: whether the replay may bring a back (for at most a
		// Timeout), as documented for packets delayed less than Timeout.
		resurrect bool
	}{
		{
			name: "packets already delivered",
			pick: func(p *proxy) [][]byte { return p.delivered },
		},
		{
			name:     "withheld packets, replayed after Timeout",
			withhold: 250 * time.Millisecond,
			wait:     DefaultTimeout,
			pick:     func(p *proxy) [][]byte { return p.withheld },
		},
		{
			name:      "withheld packets, replayed at once",
			withhold:  150 * time.Millisecond,
			pick:      func(p *proxy) [][]byte { return p.withheld },
			resurrect: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := newNode(t, "a", testKey()), newNode(t, "b", testKey())
			px := newProxy(t, b.m.Addr())
			a.m.SetPeers(map[string]netip.AddrPort{"b": px.addr()})
			b.m.SetPeers(map[string]netip.AddrPort{"a": a.m.Addr()})
			a.start(t)
			b.start(t)
			waitAlive(t, b, "a", true, time.Second)
			time.Sleep(2 * DefaultInterval)
			if tt.withhold > 0 {
				px.withhold.Store(true)
				time.Sleep(tt.withhold)
			}
			a.crash(t)
			waitAlive(t, b, "a", false, time.Second)
			time.Sleep(tt.wait)

			px.mu.Lock()
			pkts := slices.Clone(tt.pick(px))
			px.mu.Unlock()
			if len(pkts) == 0 {
				t.Fatal("nothing captured")
			}
			stale := b.packets(resultStale)
			replayed := time.Now()
			px.replay(pkts)
			time.Sleep(DefaultInterval)

			if !tt.resurrect {
				if got := b.transitions("alive"); got != 1 || b.m.IsAlive("a") {
					t.Errorf("replay of %d packets resurrected a (alive %v, %v transitions to alive)", len(pkts), b.m.IsAlive("a"), got)
				}
				if got := b.packets(resultStale) - stale; got != float64(len(pkts)) {
					t.Errorf("%v of %d replayed packets counted stale", got, len(pkts))
				}
				return
			}
			// A replay fresher than Timeout may prove a alive again, but
			// only for one Timeout: none of its packets can be replayed
			// twice, and they all age.
			if b.transitions("alive") > 1 {
				at, _ := waitAlive(t, b, "a", false, time.Second)
				if d := at.Sub(replayed); d > DefaultTimeout+DefaultInterval+time.Duration(len(pkts))*2*time.Millisecond {
					t.Errorf("resurrected by the replay for %v", d)
				}
				t.Logf("resurrected by the replay until %v after it", at.Sub(replayed))
			}
			px.replay(pkts)
			time.Sleep(DefaultInterval)
			if b.m.IsAlive("a") {
				t.Error("second replay resurrected a")
			}
		})
	}
}

func TestUnknownPeer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// cPeers is c's peer list given the addresses of a and b.
		cPeers func(a, b netip.AddrPort) map[string]netip.AddrPort
		// aKnowsC: whether a has c in its peer list.
		aKnowsC bool
	}{
		{
			name:   "sender not in the peer list",
			cPeers: func(a, b netip.AddrPort) map[string]netip.AddrPort { return map[string]netip.AddrPort{"a": a, "b": b} },
		},
		{
			name:    "packet addressed to another node",
			cPeers:  func(a, b netip.AddrPort) map[string]netip.AddrPort { return map[string]netip.AddrPort{"b": a} },
			aKnowsC: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b, c := newNode(t, "a", testKey()), newNode(t, "b", testKey()), newNode(t, "c", testKey())
			connect(a, b)
			if tt.aKnowsC {
				a.m.SetPeers(map[string]netip.AddrPort{"b": b.m.Addr(), "c": c.m.Addr()})
			}
			c.m.SetPeers(tt.cPeers(a.m.Addr(), b.m.Addr()))
			for _, n := range []*node{a, b, c} {
				n.start(t)
			}
			waitAlive(t, a, "b", true, time.Second)
			time.Sleep(3 * DefaultInterval)
			if a.m.IsAlive("c") || a.transitions("alive") != 1 {
				t.Errorf("a sees c (alive %v, %v transitions to alive)", a.m.IsAlive("c"), a.transitions("alive"))
			}
			if got := a.packets(resultUnknownPeer); got == 0 {
				t.Error("a counted no unknown_peer packets")
			}
			if got := a.m.Alive(); !maps.Equal(got, map[string]bool{"a": true, "b": true}) {
				t.Errorf("a: Alive() = %v", got)
			}
		})
	}
}

func TestPartitionHeal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		partition func(nodes []*node)
		heal      func(nodes []*node)
	}{
		{
			name: "packets dropped",
			partition: func(nodes []*node) {
				nodes[2].faults.dropIn.Store(true)
				nodes[2].faults.dropOut.Store(true)
			},
			heal: func(nodes []*node) {
				nodes[2].faults.dropIn.Store(false)
				nodes[2].faults.dropOut.Store(false)
			},
		},
		{
			name: "peer lists",
			partition: func(nodes []*node) {
				connect(nodes[0], nodes[1])
				nodes[2].m.SetPeers(nil)
			},
			heal: func(nodes []*node) { connect(nodes...) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			nodes := cluster(t, "a", "b", "c")
			waitAllAlive(t, nodes, time.Second)
			tt.partition(nodes)
			for _, pair := range [][2]*node{{nodes[0], nodes[2]}, {nodes[1], nodes[2]}, {nodes[2], nodes[0]}, {nodes[2], nodes[1]}} {
				waitAlive(t, pair[0], pair[1].name, false, time.Second)
			}
			if !nodes[0].m.IsAlive("b") || !nodes[1].m.IsAlive("a") {
				t.Fatal("a and b lost each other")
			}
			// Let the partition last a few Timeouts, so that every
			// sequence echoed across it is stale when it heals.
			// The random part samples every phase of the heartbeat cycle:
			// otherwise the heal lands at the same point of it every time,
			// as the detection that preceded it was timed by heartbeats.
			time.Sleep(2*DefaultTimeout + rand.N(DefaultInterval))
			tt.heal(nodes)
			took := waitAllAlive(t, nodes, 2*DefaultInterval+DefaultInterval)
			t.Logf("%s healed: all alive after %v", tt.name, took)
		})
	}
}

func TestGarbage(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, "a", "b")
	a := nodes[0]
	waitAllAlive(t, nodes, time.Second)

	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback0))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	valid := sealed(testKey(), message{typ: msgHeartbeat, sender: "b", dest: "a", inc: 1, seq: 1})
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	tests := []struct {
		name   string
		gen    func() []byte
		result string
	}{
		{"empty", func() []byte { return nil }, resultMalformed},
		{"random", func() []byte { return random(1 + rng.IntN(600)) }, resultMalformed},
		{"random with our version and type", func() []byte {
			b := random(minPacketLen + rng.IntN(maxPacketLen-minPacketLen))
			b[0], b[1] = wireVersion, byte(msgHeartbeat)
			return b
		}, resultMalformed},
		{"oversized", func() []byte { return random(recvBufLen + 1000) }, resultMalformed},
		{"truncated", func() []byte { return valid[:rng.IntN(len(valid))] }, resultMalformed},
		{"corrupted MAC", func() []byte {
			b := slices.Clone(valid)
			b[len(b)-1-rng.IntN(macLen)] ^= byte(1 + rng.IntN(255))
			return b
		}, resultBadMAC},
	}
	const each = 20
	for _, tt := range tests {
		before := a.packets(tt.result)
		for range each {
			if _, err := conn.WriteToUDPAddrPort(tt.gen(), a.m.Addr()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		// Loopback doesn't lose packets at this rate, but allow it.
		deadline := time.Now().Add(time.Second)
		for a.packets(tt.result)-before < each && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := a.packets(tt.result) - before; got < each/2 {
			t.Errorf("%s: %v of %d datagrams counted %s", tt.name, got, each, tt.result)
		}
	}
	// Undisturbed: b never left.
	if !a.m.IsAlive("b") || a.transitions("dead") != 0 || a.transitions("alive") != 1 {
		t.Errorf("garbage disturbed the mesh: b alive %v, transitions dead %v alive %v",
			a.m.IsAlive("b"), a.transitions("dead"), a.transitions("alive"))
	}
}

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

// allTransitions counts all of m's transitions.
func allTransitions(m *Mesh) float64 {
	return counterValue(m.metrics.Transitions.WithLabelValues("alive")) + counterValue(m.metrics.Transitions.WithLabelValues("dead"))
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
