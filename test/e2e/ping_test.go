package e2e

import (
	"net/netip"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
)

// startPing pings dst from a host every interval (labkit.Pinger).
func startPing(t *testing.T, from *netlab.Host, dst netip.Addr, every time.Duration) *labkit.Pinger {
	t.Helper()
	p, err := labkit.StartPing(from, dst, every)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPingDuringFailover pings the Service address from the client every
// 10 ms while the announcing node crashes (speaker SIGKILL, link down):
// the pings lost are the data plane's outage as a client sees it.
func TestPingDuringFailover(t *testing.T) {
	cl := newCluster(t, "node1", "node2", "node3")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	ip := cl.servedService("web")
	owner := cl.waitOwner(ip, 10*time.Second, "")
	time.Sleep(time.Second)
	p := startPing(t, cl.lab.Hosts["client"], ip, 10*time.Millisecond)
	time.Sleep(time.Second)
	if _, err := cl.crash(owner, ip); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * time.Second)
	sent, lost, window := p.Stop()
	t.Logf("crash of %s: %d of %d pings (10 ms apart) lost, longest gap %s", owner, lost, sent, window)
	// One gap, bounded (loosely, for a loaded CI machine; the bench holds
	// the distribution), and no losses outside it.
	if sent < 200 || window > 2*time.Second || time.Duration(lost)*10*time.Millisecond > window+50*time.Millisecond {
		t.Errorf("%d of %d pings lost, longest gap %s", lost, sent, window)
	}
	if window == 0 {
		t.Error("no ping lost although the answering node crashed: the test does not measure the failover")
	}
}
