package datapath

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
	"github.com/ironlb/ironlb/test/proc"
)

// This package's LAN: not the one of test/e2e's data-path bed or of
// test/podman, which attach to this host at the same time.
var (
	lan    = netip.MustParsePrefix("198.18.41.0/24")
	apiOn  = netip.MustParsePrefix("198.18.41.250/24")
	nodes2 = []string{"node1", "node2"}
)

// bed is a LAN of two nodes with Node objects and an API server on it.
func bed(t *testing.T) (*netlab.Lab, *apiserver.Env) {
	t.Helper()
	return labkit.NewBed(t, labkit.BedConfig{Prefix: fmt.Sprintf("ilbd%d-", os.Getpid()%100000), LAN: lan, LAN6: netip.MustParsePrefix("2001:db8:41::/64"),
		APIOn: apiOn, Nodes: nodes2, APIServer: apiserver.NewBareOn})
}

// TestNoPodCIDR: a cluster CIDR with room for one node's /24 and two
// nodes: Start fails within seconds, naming the node and what node IPAM
// said, and leaves nothing running.
func TestNoPodCIDR(t *testing.T) {
	l, env := bed(t)
	start := time.Now()
	cl, err := Start(context.Background(), Config{Env: env, Lab: l, Nodes: nodes2, Dir: t.TempDir(), ClusterCIDR: netip.MustParsePrefix("10.250.0.0/24")})
	if err == nil {
		cl.Close()
		t.Fatal("Start succeeded with room for one node's pod CIDR and two nodes")
	}
	took := time.Since(start)
	if !strings.Contains(err.Error(), "has no spec.podCIDR") || !strings.Contains(err.Error(), "CIDRNotAvailable") || took > 15*time.Second {
		t.Fatalf("after %s: %v; want, within 15 s, which node has no pod CIDR and node IPAM's CIDRNotAvailable", took, err)
	}
	t.Logf("after %s: %v", took.Round(time.Millisecond), err)
}

// TestFaults: a pod whose readiness probe never passes is named, with the
// probe's answer, when its endpoints are waited for; a kube-proxy that
// dies is reported within seconds, with its last log lines.
func TestFaults(t *testing.T) {
	l, env := bed(t)
	ctx := context.Background()
	cl, err := Start(ctx, Config{Env: env, Lab: l, Nodes: nodes2, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	if msg := cl.Problems(); msg != "" {
		t.Fatalf("problems right after Start: %s", msg)
	}
	good, err := cl.AddPod(ctx, PodSpec{Namespace: "default", Name: "good", Node: "node1", Labels: map[string]string{"app": "x"}})
	if err != nil {
		t.Fatal(err)
	}
	bad, err := cl.AddPod(ctx, PodSpec{Namespace: "default", Name: "bad", Node: "node2", Labels: map[string]string{"app": "x"}, Unready: true})
	if err != nil {
		t.Fatal(err)
	}
	// No Service selects them: the pods' status is what matters here.
	_, err = cl.WaitEndpoints(ctx, "default", "x", 3*time.Second, good, bad)
	if err == nil || !strings.Contains(err.Error(), "pod default/bad") || !strings.Contains(err.Error(), "503 Service Unavailable") {
		t.Errorf("waiting for an unready pod: %v; want the pod named with its readiness probe's 503", err)
	}
	if _, err := cl.AddPod(ctx, PodSpec{Namespace: "default", Name: "nowhere", Node: "node9"}); err == nil || !strings.Contains(err.Error(), `node "node9" is not one of the cluster's`) {
		t.Errorf("a pod on an unknown node: %v", err)
	}

	reports := make(chan string, 4)
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go cl.Watch(wctx, 100*time.Millisecond, func(r string) { reports <- r })
	var proxy *proc.Proc
	for _, p := range cl.procs {
		if p.Name == "kube-proxy-node2" {
			proxy = p
		}
	}
	killed := time.Now()
	proxy.Kill()
	select {
	case r := <-reports:
		if !strings.Contains(r, "kube-proxy-node2 exited") || !strings.Contains(r, "signal: killed") {
			t.Errorf("report %q: want kube-proxy-node2, how it ended and its log", r)
		}
		t.Logf("%s after the kill: %s", time.Since(killed).Round(time.Millisecond), proc.Tail(r, 3))
	case <-time.After(5 * time.Second):
		t.Fatal("kube-proxy-node2 killed, nothing reported in 5 s")
	}
}
