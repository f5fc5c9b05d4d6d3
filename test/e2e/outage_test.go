package e2e

import (
	"flag"
	"net/url"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var outage = flag.Duration("outage", 8*time.Second, "how long the API server is frozen in TestAPIServerOutage (make chaos uses 60s)")

// apiserverPID finds the kube-apiserver process serving this cluster.
func (cl *cluster) apiserverPID() int {
	cl.t.Helper()
	u, err := url.Parse(cl.env.Config.Host)
	if err != nil {
		cl.t.Fatal(err)
	}
	out, err := exec.Command("pgrep", "-f", "kube-apiserver.*--secure-port="+u.Port()).Output()
	if err != nil {
		cl.t.Fatalf("find kube-apiserver on port %s: %v", u.Port(), err)
	}
	fields := strings.Fields(string(out))
	if len(fields) == 0 {
		cl.t.Fatal("no kube-apiserver pid")
	}
	pid, err := strconv.Atoi(fields[0])
	if err != nil {
		cl.t.Fatal(err)
	}
	return pid
}

// freezeAPIServer stops the API server (SIGSTOP: its connections hang, as
// in a real outage) and returns the function that resumes it, which is also
// called when the test ends.
func (cl *cluster) freezeAPIServer() (resume func()) {
	cl.t.Helper()
	pid := cl.apiserverPID()
	if err := syscall.Kill(pid, syscall.SIGSTOP); err != nil {
		cl.t.Fatal(err)
	}
	var once sync.Once
	resume = func() { once.Do(func() { _ = syscall.Kill(pid, syscall.SIGCONT) }) }
	cl.t.Cleanup(resume)
	return resume
}

// TestAPIServerOutage freezes the API server (SIGSTOP: connections hang,
// as in a real outage) and checks that the data plane does not notice:
// the address stays answered by the same node throughout, and when that
// node crashes during the outage another one still takes over, because
// liveness comes from the speakers' own mesh, not from the API server.
func TestAPIServerOutage(t *testing.T) {
	cl := newCluster(t, "node1", "node2", "node3")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	ip := cl.servedService("web")
	owner := cl.waitOwner(ip, 10*time.Second, "")
	time.Sleep(700 * time.Millisecond)
	// A client pings every 10 ms throughout the first half of the outage.
	pings := startPing(t, cl.lab.Hosts["client"], ip, 10*time.Millisecond)

	resume := cl.freezeAPIServer()

	half := *outage / 2
	deadline := time.Now().Add(half)
	checks := 0
	for time.Now().Before(deadline) {
		o, err := cl.owner(ip)
		if err != nil || o != owner {
			t.Fatalf("during the outage, after %d good checks: owner %q (want %q), %v", checks, o, owner, err)
		}
		checks++
		time.Sleep(100 * time.Millisecond)
	}
	logRecord(t, "API server frozen %s (SIGSTOP): %d ARP checks in its first %s, always answered by %s", *outage, checks, half, owner)
	if sent, lost, _ := pings.Stop(); lost > 0 || sent < int(half/(20*time.Millisecond)) {
		t.Errorf("during the API outage %d of %d pings were lost", lost, sent)
	} else {
		logRecord(t, "%d pings 10 ms apart from the client during the first %s of the outage, none lost", sent, half)
	}

	d, err := cl.crash(owner, ip)
	if err != nil {
		t.Fatalf("failover during the API outage: %v", err)
	}
	logRecord(t, "the owner crashed during the outage: another node answered after %s (liveness comes from the mesh, not the API server)", d)
	next := cl.waitOwner(ip, 5*time.Second, owner)
	deadline = time.Now().Add(*outage - half)
	for time.Now().Before(deadline) {
		if o, err := cl.owner(ip); err != nil || o != next {
			t.Fatalf("after failover, during the outage: owner %q (want %q), %v", o, next, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	resume()

	// The control plane comes back and everything still works.
	ip2 := cl.service("after")
	cl.waitOwner(ip2, 15*time.Second, "")
	if o, err := cl.owner(ip); err != nil || o != next {
		t.Fatalf("after the outage: %s owned by %q, %v", ip, o, err)
	}
}
