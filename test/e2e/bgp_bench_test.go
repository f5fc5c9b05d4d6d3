//go:build bench

package e2e

import (
	"flag"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/mdreport"
	"github.com/ironlb/ironlb/test/netlab"
)

// The BGP benchmarks run the real speakers of three nodes against FRR
// (eBGP, ECMP) and measure what a router sees: how fast a new address
// reaches its RIB, how fast a crashed node leaves it (BFD, hold timer) and
// whether a graceful restart withdraws anything. Run with
// `make bench-bgp` (RUNS=n for n runs of each, default 20).

var benchNodes = []string{"node1", "node2", "node3"}

var checkCBit = flag.Bool("gr-bfd-check-cbit", false, "TestBenchBGPGracefulRestartBFD: FRR's neighbors also get `bfd check-control-plane-failure`")

// bgpBench starts three nodes, FRR (with BFD towards every node when bfd)
// and the BGP configuration (peer adjusts the BGPPeer; objs are created
// first), and waits until FRR has the three sessions.
func bgpBench(t *testing.T, bfd bool, peer func(*v1beta1.BGPPeerSpec), objs ...client.Object) (*cluster, *frr.Router) {
	return bgpBenchWith(t, func(n *frr.NeighborConf) { n.BFD = bfd }, peer, objs...)
}

// bgpBenchWith is bgpBench with FRR's neighbors adjusted by neighbor.
func bgpBenchWith(t *testing.T, neighbor func(*frr.NeighborConf), peer func(*v1beta1.BGPPeerSpec), objs ...client.Object) (*cluster, *frr.Router) {
	cl := newCluster(t, benchNodes...)
	rtr := cl.startFRR("router", "s3cret", neighbor)
	for _, o := range objs {
		if err := cl.c.Create(cl.ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	cl.bgpSetup("s3cret", peer)
	cl.waitSessions(rtr)
	return cl, rtr
}

// waitSessions waits until FRR has a session with every node.
func (cl *cluster) waitSessions(rtr *frr.Router) {
	cl.t.Helper()
	if _, err := frr.Poll(within(cl.t, 30*time.Second), 50*time.Millisecond, func() (bool, error) {
		n, err := established(rtr)
		return n == len(benchNodes), err
	}); err != nil {
		cl.t.Fatalf("FRR's sessions with the nodes: %v", err)
	}
}

// ecmp waits until FRR routes prefix to all three nodes.
func (cl *cluster) ecmp(rtr *frr.Router, prefix netip.Prefix, timeout time.Duration) error {
	_, err := rtr.WaitRoute(within(cl.t, timeout), prefix, frr.NextHops(cl.nodeAddrs(benchNodes...)...))
	return err
}

// waitIPFast polls the Service's status every 2 ms (waitIP's 20 ms would
// dominate the measurement) and returns its address and when it was seen.
func (cl *cluster) waitIPFast(name string) (netip.Addr, time.Time) {
	cl.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(2 * time.Millisecond) {
		var s corev1.Service
		if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: name}, &s); err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			ip, err := netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP)
			if err != nil {
				cl.t.Fatal(err)
			}
			return ip, time.Now()
		}
	}
	cl.t.Fatalf("service %s got no address within 10s", name)
	return netip.Addr{}, time.Time{}
}

// waitFIB waits until the router's kernel FIB, sampled every 2 ms through
// netlink, routes prefix to all three nodes: zebra has installed FRR's
// best paths.
func (cl *cluster) waitFIB(r *frr.Router, prefix netip.Prefix, timeout time.Duration) {
	cl.t.Helper()
	fib, all := kernelNextHops(cl.t, r, prefix), frr.NextHops(cl.nodeAddrs(benchNodes...)...)
	for start := time.Now(); ; time.Sleep(2 * time.Millisecond) {
		if nh, err := fib(); err == nil && all(nh) {
			return
		}
		if time.Since(start) > timeout {
			cl.t.Fatalf("%s not routed to all three nodes at %s within %s", prefix, r.NS, timeout)
		}
	}
}

// TestBenchBGPAnnounce creates Services one by one and measures the time
// from the Service's status getting its address (and from the Create) to
// FRR's RIB routing it to all three nodes.
func TestBenchBGPAnnounce(t *testing.T) {
	cl, rtr := bgpBench(t, false, nil)
	var fromIP, fromCreate []time.Duration
	for i := range *failoverRuns {
		name := fmt.Sprintf("web%d", i)
		created := time.Now()
		cl.createService(name)
		ip, assigned := cl.waitIPFast(name)
		prefix := netip.PrefixFrom(ip, 32)
		cl.waitFIB(rtr, prefix, 10*time.Second)
		fromIP = append(fromIP, time.Since(assigned))
		fromCreate = append(fromCreate, time.Since(created))
		if err := cl.ecmp(rtr, prefix, 10*time.Second); err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	report(t, "BGP announce (Service status has its IP -> route with 3 next hops in the router's FIB, sampled every 2 ms)", fromIP, "")
	report(t, "BGP announce (Service created -> same)", fromCreate, "")
}

// crashBGP takes node's link down, then kills its speaker (SIGKILL): a
// node that loses power, which sends no TCP FIN (killing first would close
// the session at once and measure nothing), and returns the time until
// the router forwards prefix to the other nodes only: its kernel FIB,
// sampled every 5 ms through netlink (a vtysh read takes ~50 ms), then
// confirmed in FRR's RIB.
func (cl *cluster) crashBGP(rtr *frr.Router, fib func() ([]netip.Addr, error), node string, prefix netip.Prefix, timeout time.Duration) (time.Duration, error) {
	var others []string
	for _, n := range benchNodes {
		if n != node {
			others = append(others, n)
		}
	}
	start := time.Now()
	if _, err := cl.lab.Hosts[node].In("ip", "link", "set", "eth0", "down"); err != nil {
		return 0, err
	}
	cl.speakers[node].Kill()
	want := frr.NextHops(cl.nodeAddrs(others...)...)
	for {
		nh, err := fib()
		if err == nil && want(nh) {
			break
		}
		if time.Since(start) > timeout {
			return 0, fmt.Errorf("the router's FIB still has %v for %s after %s", nh, prefix, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
	d := time.Since(start)
	if _, err := rtr.WaitRoute(within(cl.t, timeout), prefix, want); err != nil {
		return 0, err
	}
	return d, nil
}

// reviveRouted brings node's link and speaker back and waits until FRR
// routes prefix to all three nodes again.
func (cl *cluster) reviveRouted(rtr *frr.Router, node string, prefix netip.Prefix) {
	cl.t.Helper()
	cl.revive(node)
	// The link going down took the default route startRouter set.
	if _, err := cl.lab.Hosts[node].In("ip", "route", "replace", "default", "via", cl.lab.Hosts["router"].IPv4.Addr().String()); err != nil {
		cl.t.Fatal(err)
	}
	if err := cl.ecmp(rtr, prefix, 60*time.Second); err != nil {
		cl.t.Fatalf("%s did not come back: %v", node, err)
	}
}

// benchCrash crashes node after node and returns the times until FRR
// stopped routing to the crashed one. FRR's notification for the session
// must be reason: what detected the loss.
func benchCrash(t *testing.T, cl *cluster, rtr *frr.Router, prefix netip.Prefix, timeout time.Duration, reason string, ready func()) []time.Duration {
	var samples []time.Duration
	fib := kernelNextHops(t, rtr, prefix)
	for i := range *failoverRuns {
		node := benchNodes[i%len(benchNodes)]
		ready()
		d, err := cl.crashBGP(rtr, fib, node, prefix, timeout)
		if err != nil {
			t.Fatalf("run %d: %s crashed: %v", i, node, err)
		}
		ns, err := frrNeighbors(rtr)
		if err != nil {
			t.Fatal(err)
		}
		// The last reset must be this one (ago: whole seconds), for this
		// reason.
		if nb := ns[cl.lab.Hosts[node].IPv4.Addr().String()]; nb.Notification != reason || nb.ResetAgo > d.Milliseconds()+1000 {
			t.Fatalf("run %d: FRR's last reset of the session with %s: %s %q %d ms ago, want the notification %q within %s", i, node, nb.ResetDueTo, nb.Notification, nb.ResetAgo, reason, d)
		}
		samples = append(samples, d)
		cl.reviveRouted(rtr, node, prefix)
	}
	return samples
}

// bfdUp waits until FRR's BFD sessions with all three nodes are up with
// 300 ms x 3 on both sides (the remote values are what the speaker sends).
func bfdUp(t *testing.T, rtr *frr.Router) {
	t.Helper()
	type peer struct {
		frr.BFDPeer
		RemoteReceive  int `json:"remote-receive-interval"`
		RemoteTransmit int `json:"remote-transmit-interval"`
	}
	var last []peer
	if _, err := frr.Poll(within(t, 30*time.Second), 50*time.Millisecond, func() (bool, error) {
		last = nil
		err := rtr.VtyshJSON("show bfd peers json", &last)
		up := 0
		for _, p := range last {
			if p.Status == "up" && p.ReceiveInterval == 300 && p.TransmitInterval == 300 && p.DetectMultiplier == 3 &&
				p.RemoteReceive == 300 && p.RemoteTransmit == 300 && p.RemoteMultiplier == 3 {
				up++
			}
		}
		return up == len(benchNodes), err
	}); err != nil {
		t.Fatalf("BFD sessions at 300ms x3 on both sides with every node: %v (FRR has %+v)", err, last)
	}
}

// bfdBench is bgpBench with BFD 300 ms x 3 on the sessions and one
// Service (served by "pods" on every node when served) routed with ECMP.
func bfdBench(t *testing.T, served bool) (*cluster, *frr.Router, netip.Prefix) {
	return bfdBenchGR(t, served, false, false)
}

// bfdBenchGR is bfdBench, with graceful restart on the sessions when gr,
// and FRR checking the BFD control-plane-independent bit when cbit
// (`neighbor X bfd check-control-plane-failure`, which README advises
// against).
func bfdBenchGR(t *testing.T, served, gr, cbit bool) (*cluster, *frr.Router, netip.Prefix) {
	profile := &v1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "fast"}, Spec: v1beta1.BFDProfileSpec{
		ReceiveInterval: ptr.To[int32](300), TransmitInterval: ptr.To[int32](300), DetectMultiplier: ptr.To[int32](3)}}
	cl, rtr := bgpBenchWith(t, func(n *frr.NeighborConf) { n.BFD, n.CheckControlPlane = true, cbit },
		func(p *v1beta1.BGPPeerSpec) { p.BFDProfile, p.GracefulRestart = "fast", gr }, profile)
	ip := cl.service
	if served {
		ip = cl.servedService
	}
	prefix := netip.PrefixFrom(ip("web"), 32)
	if err := cl.ecmp(rtr, prefix, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	return cl, rtr, prefix
}

// TestBenchBGPCrashBFD: a node crashes (link down, speaker SIGKILL); BFD
// 300 ms x 3 on both sides (FRR's bfdd defaults are the same) detects it.
func TestBenchBGPCrashBFD(t *testing.T) {
	cl, rtr, prefix := bfdBench(t, false)
	samples := benchCrash(t, cl, rtr, prefix, 10*time.Second, "Cease/BFD Down", func() { bfdUp(t, rtr) })
	report(t, "BGP node crash with BFD 300ms x3 (link down + SIGKILL -> the router's FIB drops the node's next hop, sampled every 5 ms)", samples, "")
}

// frrNeighbor is what bgpd says of a session beyond frr.Neighbor.
type frrNeighbor struct {
	Hold      int `json:"bgpTimerHoldTimeMsecs"`
	Keepalive int `json:"bgpTimerKeepAliveIntervalMsecs"`
	// ResetDueTo is "BGP Notification send" for BFD and hold timer
	// alike; Notification says which ("Cease/BFD Down", "Hold Timer
	// Expired").
	ResetDueTo   string `json:"lastResetDueTo"`
	Notification string `json:"lastNotificationReason"`
	ResetAgo     int64  `json:"lastResetTimerMsecs"`
}

// frrNeighbors returns bgpd's sessions by neighbor address.
func frrNeighbors(rtr *frr.Router) (map[string]frrNeighbor, error) {
	var out map[string]frrNeighbor
	err := rtr.VtyshJSON("show bgp neighbors json", &out)
	return out, err
}

// TestBenchBGPCrashHoldTimer: a node crashes without BFD; the hold timer
// (3 s, keepalive 1 s, negotiated down from FRR's 180 s) detects it.
func TestBenchBGPCrashHoldTimer(t *testing.T) {
	cl, rtr := bgpBench(t, false, func(p *v1beta1.BGPPeerSpec) {
		p.HoldTime = &metav1.Duration{Duration: 3 * time.Second}
		p.KeepaliveTime = &metav1.Duration{Duration: time.Second}
	})
	ip := cl.service("web")
	prefix := netip.PrefixFrom(ip, 32)
	if err := cl.ecmp(rtr, prefix, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ready := func() {
		ns, err := frrNeighbors(rtr)
		if err != nil {
			t.Fatal(err)
		}
		for _, a := range cl.nodeAddrs(benchNodes...) {
			if nb := ns[a.String()]; nb.Hold != 3000 || nb.Keepalive != 1000 {
				t.Fatalf("FRR's session with %s: hold time %d ms, keepalive %d ms, want 3000, 1000", a, nb.Hold, nb.Keepalive)
			}
		}
	}
	samples := benchCrash(t, cl, rtr, prefix, 15*time.Second, "Hold Timer Expired", ready)
	report(t, "BGP node crash without BFD, hold timer 3 s (link down + SIGKILL -> the router's FIB drops the node's next hop, sampled every 5 ms)", samples, "")
}

// watch counts samples of a route's next hops, and those without one.
type watch struct {
	samples, missing int
	err              error
	done             chan struct{}
}

// watchNextHop samples next hops every 10 ms (plus the sample's own time)
// until stop is closed, counting the samples without addr.
func watchNextHop(sample func() ([]netip.Addr, error), addr netip.Addr, stop <-chan struct{}) *watch {
	w := &watch{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for {
			nh, err := sample()
			if err != nil {
				w.err = err
				return
			}
			w.samples++
			if !slices.Contains(nh, addr) {
				w.missing++
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

// kernelNextHops samples the router's kernel FIB (what zebra installed)
// through netlink: far cheaper than a vtysh round trip (about 50 ms here),
// so it really samples every 10 ms.
func kernelNextHops(t *testing.T, rtr *frr.Router, prefix netip.Prefix) func() ([]netip.Addr, error) {
	ns, err := netns.GetFromName(rtr.NS)
	if err != nil {
		t.Fatal(err)
	}
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close(); ns.Close() })
	dst := &net.IPNet{IP: prefix.Addr().AsSlice(), Mask: net.CIDRMask(prefix.Bits(), prefix.Addr().BitLen())}
	return func() ([]netip.Addr, error) {
		rs, err := h.RouteListFiltered(netlink.FAMILY_V4, &netlink.Route{Dst: dst}, netlink.RT_FILTER_DST)
		var out []netip.Addr
		for _, r := range rs {
			gws := []net.IP{r.Gw}
			for _, nh := range r.MultiPath {
				gws = append(gws, nh.Gw)
			}
			for _, gw := range gws {
				if a, ok := netip.AddrFromSlice(gw); ok {
					out = append(out, a.Unmap())
				}
			}
		}
		return out, err
	}
}

// resynced tells whether FRR has a new session with addr (more than
// before connections) and a fresh (not stale) path for prefix from it.
func resynced(rtr *frr.Router, prefix netip.Prefix, addr netip.Addr, before int) (bool, error) {
	ns, err := rtr.Neighbors()
	if err != nil || !ns[addr].Established() || ns[addr].Connections <= before {
		return false, err
	}
	ps, err := rtr.BGPPrefix(prefix)
	for _, p := range ps {
		if p.From == addr && !p.Stale {
			return true, err
		}
	}
	return false, err
}

// TestBenchBGPGracefulRestart stops a node's speaker gracefully (SIGTERM)
// and starts it again at once, with graceful restart and no BFD, while
// zebra's RIB (vtysh, as fast as it answers) and the router's kernel FIB
// (netlink, every 10 ms) are sampled: the node's next hop must never be
// missing from either. It also measures the time until FRR holds a fresh
// path from the node again.
func TestBenchBGPGracefulRestart(t *testing.T) {
	cl, rtr := bgpBench(t, false, func(p *v1beta1.BGPPeerSpec) { p.GracefulRestart = true })
	ip := cl.service("web")
	prefix := netip.PrefixFrom(ip, 32)
	if err := cl.ecmp(rtr, prefix, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	gracefulRestarts(t, cl, rtr, prefix, "BGP graceful restart", func() {})
}

// TestBenchBGPGracefulRestartBFD is TestBenchBGPGracefulRestart with BFD
// (300 ms x 3) on the sessions too: the speaker's BFD goes down with it,
// and FRR, checking the C bit, keeps the routes as stale all the same.
// TestBenchBGPCrashGRBFD is the other half: a node that crashes with both
// on is still withdrawn within BFD's detection time.
func TestBenchBGPGracefulRestartBFD(t *testing.T) {
	cl, rtr, prefix := bfdBenchGR(t, false, true, *checkCBit)
	label := "BGP graceful restart with BFD 300ms x3"
	if *checkCBit {
		label += " (FRR with check-control-plane-failure)"
	}
	gracefulRestarts(t, cl, rtr, prefix, label, func() { bfdUp(t, rtr) })
	// A speaker that is killed (OOM, a crash) is no different to the
	// router: the kernel ends its TCP sessions, then its BFD falls silent.
	gracefulRestarts(t, cl, rtr, prefix, label+", speaker SIGKILLed", func() { bfdUp(t, rtr) }, kill)
}

// TestBenchBGPCrashGRBFD: a node crashes (link down, speaker SIGKILL) with
// graceful restart and BFD on its sessions; BFD detects it and FRR drops
// its routes at once: no stale routes into a dead node.
func TestBenchBGPCrashGRBFD(t *testing.T) {
	cl, rtr, prefix := bfdBenchGR(t, false, true, false)
	samples := benchCrash(t, cl, rtr, prefix, 10*time.Second, "Cease/BFD Down", func() { bfdUp(t, rtr) })
	report(t, "BGP node crash with graceful restart and BFD 300ms x3 (link down + SIGKILL -> the router's FIB drops the node's next hop, sampled every 5 ms)", samples, "")
	if p99 := mdreport.Percentile(samples, 0.99); p99 > time.Second {
		t.Errorf("p99 %s from crash to withdrawal with graceful restart and BFD, want <= 1s", p99)
	}
}

// stopHow is how gracefulRestarts stops a speaker: SIGTERM unless kill.
type stopHow int

const kill stopHow = 1

// TestBenchBGPCrashGRBFDCheckCBit is why README advises against FRR's
// `bfd check-control-plane-failure` with ironlb: GoBGP's BFD runs in the
// speaker and sends the control-plane-independent bit clear, so FRR takes
// every BFD loss, a dead node's too, for a restart and keeps routing to
// it as stale for the restart time (120 s). If FRR ever tells the two
// apart, this test fails and README's advice can change.
func TestBenchBGPCrashGRBFDCheckCBit(t *testing.T) {
	cl, rtr, prefix := bfdBenchGR(t, false, true, true)
	bfdUp(t, rtr)
	d, err := cl.crashBGP(rtr, kernelNextHops(t, rtr, prefix), benchNodes[0], prefix, 5*time.Second)
	if err == nil {
		t.Fatalf("with check-control-plane-failure FRR withdrew the crashed node in %s: it tells a crash from a restart now", d)
	}
	note(t, "BGP node crash with graceful restart, BFD 300ms x3 and FRR's check-control-plane-failure: still routed to the dead node after 5 s ("+err.Error()+")")
}

// gracefulRestarts stops a node's speaker gracefully (SIGTERM) and starts
// it again at once, RUNS times over the nodes, ready before each, while
// zebra's RIB and the router's kernel FIB are sampled: the node's next hop
// must never be missing from either.
func gracefulRestarts(t *testing.T, cl *cluster, rtr *frr.Router, prefix netip.Prefix, label string, ready func(), how ...stopHow) {
	zebra := func() ([]netip.Addr, error) {
		rs, err := rtr.Routes(frr.IPv4)
		return rs[prefix], err
	}
	kernel := kernelNextHops(t, rtr, prefix)
	if nh, err := kernel(); err != nil || len(nh) != len(benchNodes) {
		t.Fatalf("the router's kernel routes %s via %v (%v), want the 3 nodes", prefix, nh, err)
	}
	var fromStart, fromStop []time.Duration
	var total [2]watch // zebra, kernel
	watched := time.Duration(0)
	for i := range *failoverRuns {
		node := benchNodes[i%len(benchNodes)]
		addr := cl.lab.Hosts[node].IPv4.Addr()
		ready()
		ns, err := rtr.Neighbors()
		if err != nil {
			t.Fatal(err)
		}
		before := ns[addr].Connections
		stop := make(chan struct{})
		ws := [2]*watch{watchNextHop(zebra, addr, stop), watchNextHop(kernel, addr, stop)}
		stopped := time.Now()
		if len(how) > 0 && how[0] == kill {
			cl.speakers[node].Kill()
			cl.speakers[node].Wait()
		} else {
			cl.speakers[node].Stop()
		}
		started := time.Now()
		cl.startSpeaker(node)
		_, err = frr.Poll(within(t, 60*time.Second), 10*time.Millisecond, func() (bool, error) { return resynced(rtr, prefix, addr, before) })
		if err != nil {
			close(stop)
			t.Fatalf("run %d: FRR has no fresh path from %s after its restart: %v", i, node, err)
		}
		fromStart = append(fromStart, time.Since(started))
		fromStop = append(fromStop, time.Since(stopped))
		time.Sleep(time.Second) // a late withdrawal would show too
		close(stop)
		for j, w := range ws {
			<-w.done
			if w.err != nil {
				t.Fatal(w.err)
			}
			if w.missing > 0 {
				t.Logf("run %d: %s's next hop missing in %d of %d samples of FRR's %s", i, node, w.missing, w.samples, [2]string{"RIB", "kernel FIB"}[j])
			}
			total[j].samples += w.samples
			total[j].missing += w.missing
		}
		watched += time.Since(stopped) // the watches began just before
		if err := cl.ecmp(rtr, prefix, 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	every := func(w watch) time.Duration { return (watched / time.Duration(w.samples)).Round(time.Millisecond) }
	extra := fmt.Sprintf(", samples without the node's next hop in all runs: zebra's RIB %d of %d (one every %s), kernel FIB %d of %d (one every %s)",
		total[0].missing, total[0].samples, every(total[0]), total[1].missing, total[1].samples, every(total[1]))
	report(t, label+" (restarted speaker started -> FRR's path from the node no longer stale)", fromStart, extra)
	signal := "SIGTERM"
	if len(how) > 0 && how[0] == kill {
		signal = "SIGKILL"
	}
	report(t, label+" ("+signal+" -> FRR's path from the node no longer stale)", fromStop, "")
	if total[0].missing+total[1].missing > 0 {
		t.Errorf("graceful restart withdrew the node's route (RIB samples %d, FIB samples %d), want none", total[0].missing, total[1].missing)
	}
}

// TestBenchBGPPingFailover: a client behind the router pings a
// BGP-announced address every 10 ms; the node its flow is routed to
// crashes (link down, speaker SIGKILL), and BFD (300 ms x 3) takes the
// node out of the router's ECMP set. The longest run of lost pings is the
// outage that client sees. Flows hashed to the other nodes lose nothing.
func TestBenchBGPPingFailover(t *testing.T) {
	cl, rtr, prefix := bfdBench(t, true)
	ip := prefix.Addr()
	client2, err := cl.lab.AddBehind("client2", "router", netip.MustParsePrefix("203.0.113.0/30"))
	if err != nil {
		t.Fatal(err)
	}
	fib := kernelNextHops(t, rtr, prefix)
	var windows, withdrawals []time.Duration
	for i := range *failoverRuns {
		bfdUp(t, rtr)
		node := cl.flowNode(client2, ip)
		p := startPing(t, client2, ip, 10*time.Millisecond)
		time.Sleep(500 * time.Millisecond)
		d, err := cl.crashBGP(rtr, fib, node, prefix, 10*time.Second)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		time.Sleep(time.Second)
		_, _, window := p.Stop()
		if window == 0 || window > 3*time.Second {
			t.Fatalf("run %d: lost-ping window %s crashing %s, the node the flow was routed to", i, window, node)
		}
		windows, withdrawals = append(windows, window), append(withdrawals, d)
		cl.reviveRouted(rtr, node, prefix)
	}
	report(t, "BGP: the node a client's flow is routed to crashes, BFD 300ms x3, 10 ms pings from behind the router (longest run of lost pings)", windows, "")
	report(t, "BGP: the same crashes, until the router's FIB dropped the node", withdrawals, "")
}

// flowNode returns the node the router forwards from's packets to ip to:
// the kernel's multipath choice for that flow (hash of the addresses).
func (cl *cluster) flowNode(from *netlab.Host, ip netip.Addr) string {
	cl.t.Helper()
	via, err := labkit.RoutedVia(cl.lab.Hosts["router"], from.IPv4.Addr(), ip)
	if err != nil {
		cl.t.Fatal(err)
	}
	for n := range cl.speakers {
		if cl.lab.Hosts[n].IPv4.Addr() == via {
			return n
		}
	}
	cl.t.Fatalf("the router forwards %s's flow to %s via %s, not a node", from.Name, ip, via)
	return ""
}
