//go:build bench

package e2e

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/datapath"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
)

// The faults TestBenchDataPath makes on the node carrying a client's
// traffic.
var faults = []struct {
	name, what string
}{
	{"crash", "its speaker is killed (SIGKILL); the node and its pod stay up"},
	{"handover", "its speaker stops gracefully (SIGTERM)"},
	{"link", "its link is cut (node, speaker and pod cut off) for 3 s and until the connections made meanwhile ended"},
}

// dataPathBench is TestBenchDataPath's bed: three nodes on the real data
// path, FRR with BFD 300 ms x 3 towards every node, a layer-2 pool "lan"
// and the BGP pool "routed" (neither auto-assigned), and the Services
// web (lan) and web-bgp (routed) with a pod on every node; client2 is
// behind the router.
func dataPathBench(t *testing.T) (*cluster, *frr.Router, *netlab.Host, func(pool string, local bool) func(*corev1.Service), netip.Prefix) {
	cl := newBed(t, bed{proxyMode: datapath.NFTables}, benchNodes...)
	rtr := cl.startRouter("s3cret", true)
	for _, o := range []client.Object{
		&v1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "fast"}, Spec: v1beta1.BFDProfileSpec{
			ReceiveInterval: ptr.To[int32](300), TransmitInterval: ptr.To[int32](300), DetectMultiplier: ptr.To[int32](3)}},
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{dataPathPool}, AutoAssign: ptr.To(false)}},
		&v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"lan"}}},
	} {
		if err := cl.c.Create(cl.ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	cl.bgpSetup("s3cret", func(p *v1beta1.BGPPeerSpec) { p.BFDProfile = "fast" })
	cl.waitSessions(rtr)
	client2, err := cl.lab.AddBehind("client2", "router", netip.MustParsePrefix("203.0.113.0/30"))
	if err != nil {
		t.Fatal(err)
	}
	inPool := func(pool string, local bool) func(*corev1.Service) {
		return func(s *corev1.Service) {
			s.Annotations = map[string]string{v1beta1.AnnotationAddressPool: pool}
			if local {
				s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
			}
		}
	}
	cl.lbService("web", inPool("lan", false))
	cl.backends("web", benchNodes...)
	routedIP := cl.lbService("web-bgp", inPool("routed", false))
	cl.backends("web-bgp", benchNodes...)
	prefix := netip.PrefixFrom(routedIP, 32)
	if err := cl.ecmp(rtr, prefix, 20*time.Second); err != nil {
		t.Fatal(err)
	}
	return cl, rtr, client2, inPool, prefix

}

// TestBenchDataPath measures failover under real traffic on the real data
// path: a client opens a new connection every 10 ms through the address,
// kube-proxy and a pod (one per node), while the node carrying its
// traffic suffers each fault, over layer 2 and over BGP with BFD 300 ms x
// 3. Run with `make bench-datapath`.
func TestBenchDataPath(t *testing.T) {
	cl, rtr, client2, _, prefix := dataPathBench(t)
	lanIP, routedIP := cl.waitIP("web"), prefix.Addr()
	lanClient := cl.lab.Hosts["client"]
	for _, f := range faults {
		var l2, bgp []time.Duration
		var l2All, bgpAll labkit.ConnStats
		for i := range *failoverRuns {
			owner := cl.stableOwner(lanIP)
			s := cl.underFault(f.name, owner, lanClient, lanIP)
			t.Logf("L2 %s %d: %s: lost %s", f.name, i, owner, s)
			l2, l2All = append(l2, s.Window), add(l2All, s)
			cl.settle(rtr, prefix)

			flow := cl.flowNode(client2, routedIP)
			s = cl.underFault(f.name, flow, client2, routedIP)
			t.Logf("BGP %s %d: %s: lost %s", f.name, i, flow, s)
			bgp, bgpAll = append(bgp, s.Window), add(bgpAll, s)
			cl.settle(rtr, prefix)
		}
		report(t, fmt.Sprintf("L2, real data path: the node answering ARP for the address: %s; outage of a client opening a new connection every 10 ms (longest run not answered at once)", f.what), l2, totals(l2All))
		report(t, fmt.Sprintf("BGP + BFD 300ms x3, real data path: the node the router sends the client's flow to: %s; outage of a client behind the router opening a new connection every 10 ms", f.what), bgp, totals(bgpAll))
	}

}

// TestBenchDataPathLocal: how long an externalTrafficPolicy Local address
// takes to leave a node whose only pod goes unready, over layer 2 and
// BGP: in all (from the backend failing its readiness probe, probed every
// second), and ironlb's part (from the EndpointSlice listing the pod
// unready). Run with `make bench-datapath`.
func TestBenchDataPathLocal(t *testing.T) {
	cl, rtr, _, inPool, _ := dataPathBench(t)
	localIP := cl.lbService("local", inPool("lan", true))
	local := cl.backends("local", "node2", "node3")
	localBGP := cl.lbService("local-bgp", inPool("routed", true))
	localBGPPods := cl.backends("local-bgp", "node2", "node3")
	localPrefix := netip.PrefixFrom(localBGP, 32)
	var l2Move, l2Part, bgpMove, bgpPart []time.Duration
	for i := range *failoverRuns {
		owner := cl.stableOwner(localIP)
		gratuitous, stop := cl.watchGratuitous(localIP, cl.lab.Hosts[owner].MAC, 15*time.Second)
		start := time.Now()
		local[owner].SetReady(false)
		unready := cl.unreadyAt("local", local[owner])
		select {
		case at := <-gratuitous:
			l2Move, l2Part = append(l2Move, at.Sub(start)), append(l2Part, at.Sub(<-unready))
		case <-time.After(15 * time.Second):
			t.Fatalf("run %d: %s's pod unready: no other node announced %s", i, owner, localIP)
		}
		stop()
		local[owner].SetReady(true)
		if _, err := cl.dp.WaitEndpoints(cl.ctx, "default", "local", 15*time.Second, local["node2"], local["node3"]); err != nil {
			t.Fatal(err)
		}

		node := benchNodes[1+i%2]
		other := map[string]string{"node2": "node3", "node3": "node2"}[node]
		if _, err := rtr.WaitRoute(within(t, 15*time.Second), localPrefix, frr.NextHops(cl.nodeAddrs("node2", "node3")...)); err != nil {
			t.Fatal(err)
		}
		fib := kernelNextHops(t, rtr, localPrefix)
		start = time.Now()
		localBGPPods[node].SetReady(false)
		unready = cl.unreadyAt("local-bgp", localBGPPods[node])
		want := frr.NextHops(cl.nodeAddrs(other)...)
		for {
			if nh, err := fib(); err == nil && want(nh) {
				break
			}
			if time.Since(start) > 15*time.Second {
				t.Fatalf("run %d: %s's pod unready: the router's FIB still routes %s via it", i, node, localPrefix)
			}
			time.Sleep(5 * time.Millisecond)
		}
		at := time.Now()
		bgpMove, bgpPart = append(bgpMove, at.Sub(start)), append(bgpPart, at.Sub(<-unready))
		localBGPPods[node].SetReady(true)
		t.Logf("Local %d: L2 moved off %s in %s (%s after the EndpointSlice), BGP withdrawn from %s in %s (%s)", i, owner,
			l2Move[i].Round(time.Millisecond), l2Part[i].Round(time.Millisecond), node, bgpMove[i].Round(time.Millisecond), bgpPart[i].Round(time.Millisecond))
	}
	report(t, "L2, externalTrafficPolicy Local: the announcing node's only pod fails its readiness probe (every 1 s) -> another node's gratuitous ARP at the client", l2Move, "")
	report(t, "L2, the same, from the EndpointSlice listing the pod unready (ironlb's part) -> gratuitous ARP", l2Part, "")
	report(t, "BGP, externalTrafficPolicy Local: a node's only pod fails its readiness probe (every 1 s) -> the router's FIB routes via the other node only (netlink, every 5 ms)", bgpMove, "")
	report(t, "BGP, the same, from the EndpointSlice listing the pod unready (ironlb's part) -> the router's FIB", bgpPart, "")
}

// unreadyAt reports when the Service's EndpointSlices (polled every 5 ms)
// stop listing the pod as ready.
func (cl *cluster) unreadyAt(svc string, p *datapath.Pod) <-chan time.Time {
	at := make(chan time.Time, 1)
	go func() {
		for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
			if eps, err := cl.dp.ReadyEndpoints(cl.ctx, "default", svc); err == nil {
				if _, ok := eps[p.IP.String()]; !ok {
					at <- time.Now()
					return
				}
			}
		}
		at <- time.Time{}
	}()
	return at
}

// underFault makes fault on node while from opens a new connection to ip
// every 10 ms, and says how they went; the node is whole again after.
func (cl *cluster) underFault(fault, node string, from *netlab.Host, ip netip.Addr) labkit.ConnStats {
	return cl.underFaultOf(cl.ironlb(), fault, node, from, ip)
}

// fleet is one load balancer's speakers, one per node: ironlb's, or a
// peer's measured beside it.
type fleet struct {
	name     string
	speakers map[string]*labkit.Speaker
	// start (re)starts node's speaker and records it in speakers.
	start func(node string)
}

func (cl *cluster) ironlb() *fleet {
	return &fleet{name: "ironlb", speakers: cl.speakers, start: cl.startSpeaker}
}

// underFaultOf is underFault on fl's speaker of node (crash, handover) or
// on the node itself (link).
func (cl *cluster) underFaultOf(fl *fleet, fault, node string, from *netlab.Host, ip netip.Addr) labkit.ConnStats {
	cl.t.Helper()
	c := labkit.StartConnect(from, ip, 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	switch fault {
	case "crash":
		fl.speakers[node].Kill()
	case "handover":
		go fl.speakers[node].Stop()
	case "link":
		restore, err := cl.lab.Hosts[node].CutLink()
		if err != nil {
			c.Stop()
			cl.t.Fatal(err)
		}
		// The link stays cut until every connection has ended, as for a
		// node that does not come back: those kube-proxy sent to the cut
		// node's pod time out (Kubernetes lists it as an endpoint until
		// its node is declared dead, 40 s and more).
		time.Sleep(3 * time.Second)
		s := c.Stop()
		if err := restore(); err != nil {
			cl.t.Fatal(err)
		}
		return s
	}
	time.Sleep(2500 * time.Millisecond)
	s := c.Stop()
	fl.speakers[node].Wait()
	fl.start(node)
	return s
}

// settle waits until BGP and BFD are up with every node again and the
// router routes prefix over all of them.
func (cl *cluster) settle(rtr *frr.Router, prefix netip.Prefix) {
	cl.t.Helper()
	cl.waitSessions(rtr)
	bfdUp(cl.t, rtr)
	if err := cl.ecmp(rtr, prefix, 60*time.Second); err != nil {
		cl.t.Fatal(err)
	}
}

func add(a, b labkit.ConnStats) labkit.ConnStats {
	return labkit.ConnStats{Sent: a.Sent + b.Sent, Late: a.Late + b.Late, Refused: a.Refused + b.Refused, TimedOut: a.TimedOut + b.TimedOut}
}

func totals(s labkit.ConnStats) string {
	return fmt.Sprintf("; in all runs, of %d new connections: %d late (answered after a SYN retransmission), %d refused or reset, %d timed out", s.Sent, s.Late, s.Refused, s.TimedOut)
}
