//go:build bench

package e2e

import (
	"flag"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/mdreport"
)

var failoverRuns = flag.Int("failover-runs", 20, "crash failovers to measure")

// TestBenchFailover crashes the announcing node (speaker SIGKILL and its
// link down) again and again and measures the time until the client sees
// the new owner's gratuitous ARP. Run with `make bench-failover`.
func TestBenchFailover(t *testing.T) {
	cl := newCluster(t, "node1", "node2", "node3")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	ip := cl.service("web")
	var samples []time.Duration
	for i := range *failoverRuns {
		owner := cl.stableOwner(ip)
		d, err := cl.crash(owner, ip)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		samples = append(samples, d)
		cl.revive(owner)
	}
	report(t, "crash failover (SIGKILL + link down -> gratuitous ARP at the client)", samples, "")
}

// TestBenchHandover stops the announcing speaker gracefully (SIGTERM)
// again and again: time to the new owner's announcement, and resolves left
// unanswered meanwhile. Run with `make bench-failover`.
func TestBenchHandover(t *testing.T) {
	cl := newCluster(t, "node1", "node2", "node3")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	ip := cl.service("web")
	var samples []time.Duration
	missed, rejoinMissed, moves := 0, 0, 0
	for i := range *failoverRuns {
		owner := cl.stableOwner(ip)
		d, misses, err := cl.handover(owner, ip)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		samples = append(samples, d)
		t.Logf("run %d: %s handed over in %s", i, owner, d)
		missed += misses
		// The restarted speaker joins and, when the hash says so, takes
		// its address back from a live node: that move must not leave
		// the client unanswered either.
		n, movedBack := cl.rejoin(owner, ip)
		rejoinMissed += n
		if movedBack {
			moves++
		}
	}
	report(t, "graceful handover (SIGTERM -> new owner's gratuitous ARP at the client)", samples, fmt.Sprintf(", unanswered resolves in all runs: %d", missed))
	note(t, fmt.Sprintf("rejoin after restart: address moved back to the restarted node in %d of %d runs, unanswered resolves in all runs: %d", moves, *failoverRuns, rejoinMissed))
}

// rejoin restarts node's speaker while the client keeps resolving ip, and
// returns the unanswered resolves over the following 3 s and whether the
// address moved back to node.
func (cl *cluster) rejoin(node string, ip netip.Addr) (int, bool) {
	misses := 0
	stop := time.Now().Add(3 * time.Second)
	started := false
	for time.Now().Before(stop) {
		if _, err := cl.resolve(ip, 100*time.Millisecond); err != nil {
			misses++
		}
		if !started {
			cl.startSpeaker(node)
			started = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	o, err := cl.owner(ip)
	return misses, err == nil && o == node
}

// revive brings a crashed node back: link up, speaker restarted.
func (cl *cluster) revive(node string) {
	cl.t.Helper()
	if _, err := cl.lab.Hosts[node].In("ip", "link", "set", "eth0", "up"); err != nil {
		cl.t.Fatal(err)
	}
	cl.startSpeaker(node)
}

// stableOwner waits until the restarted speaker of the last round has
// joined and the address has settled: the same node answers for 2 s in a
// row. Otherwise a round could measure the address moving back to the
// restarted node rather than the failover.
func (cl *cluster) stableOwner(ip netip.Addr) string {
	cl.t.Helper()
	return cl.stableOwnerWithin(ip, 30*time.Second)
}

func (cl *cluster) stableOwnerWithin(ip netip.Addr, timeout time.Duration) string {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	owner, since := "", time.Now()
	for time.Now().Before(deadline) {
		o, err := cl.owner(ip)
		switch {
		case err != nil || o != owner:
			owner, since = o, time.Now()
		case time.Since(since) >= 2*time.Second:
			return owner
		}
		time.Sleep(50 * time.Millisecond)
	}
	cl.t.Fatalf("the owner of %s did not settle within %s", ip, timeout)
	return ""
}

func report(t *testing.T, what string, samples []time.Duration, extra string) {
	note(t, fmt.Sprintf("%s, %d runs: %s%s", what, len(samples), mdreport.Percentiles(samples), extra))
}

// note logs a result line, prints it and records it for -report.
func note(t *testing.T, msg string) {
	t.Log(msg)
	fmt.Println(msg)
	record(t, msg)
}

// TestBenchPingFailover: a client pings the Service address every 10 ms
// while the announcing node crashes; the longest run of lost pings is the
// outage the client sees. Run with `make bench-failover`.
func TestBenchPingFailover(t *testing.T) {
	cl := newCluster(t, "node1", "node2", "node3")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	ip := cl.servedService("web")
	var windows []time.Duration
	for i := range *failoverRuns {
		owner := cl.stableOwner(ip)
		p := startPing(t, cl.lab.Hosts["client"], ip, 10*time.Millisecond)
		time.Sleep(500 * time.Millisecond)
		if _, err := cl.crash(owner, ip); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		time.Sleep(1500 * time.Millisecond)
		_, _, window := p.Stop()
		if window == 0 || window > 2*time.Second {
			t.Fatalf("run %d: lost-ping window %s", i, window)
		}
		windows = append(windows, window)
		cl.revive(owner)
	}
	report(t, "crash under 10 ms pings (longest run of lost pings at the client)", windows, "")
}
