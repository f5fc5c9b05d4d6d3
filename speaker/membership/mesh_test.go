package membership

import (
	"maps"
	"math/rand/v2"
	"net/netip"
	"slices"
	"testing"
	"time"
)

// These tests run real meshes over UDP on 127.0.0.1, with the default
// Interval (100 ms) and Timeout (400 ms). Their timing assertions leave
// room for a loaded 2-core machine but stay well inside the bounds that
// matter: a crash must be detected within 1 s but not before Timeout−2×
// Interval (it would mean a live peer can be declared dead), a graceful
// leave well before any timeout could have fired.

var loopback0 = netip.MustParseAddrPort("127.0.0.1:0")

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
