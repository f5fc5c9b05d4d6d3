package membership

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

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

func (f *faults) DropIn() bool { return f.dropIn.Load() }

func (f *faults) DropOut() bool { return f.dropOut.Load() }

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

// allTransitions counts all of m's transitions.
func allTransitions(m *Mesh) float64 {
	return counterValue(m.metrics.Transitions.WithLabelValues("alive")) + counterValue(m.metrics.Transitions.WithLabelValues("dead"))
}
