//go:build bench

package e2e

import (
	"flag"
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/datapath"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/mdreport"
	"github.com/ironlb/ironlb/test/metallb"
	"github.com/ironlb/ironlb/test/netlab"
)

// metalLBPool is MetalLB's layer-2 pool beside ironlb's dataPathPool.
const metalLBPool = "198.18.0.230-198.18.0.239"

var vsSettle = flag.Duration("vs-settle", 15*time.Second, "TestBenchVsMetalLBL2: the wait after a node comes back before the next run")

var vsFaults = flag.String("vs-faults", "crash,handover,node", "the faults TestBenchVsMetalLBL2 makes")

// startMetalLB runs MetalLB beside ironlb in the bed: its CRDs, a
// layer-2 pool, its controller and a speaker per node (bin/peers/, `make
// peers`), all for Services of class metallb.Class, with the bed's admin
// kubeconfig as ironlb's speakers have. It returns MetalLB's speakers.
func (cl *cluster) startMetalLB(nodes []string, objects ...string) *fleet {
	cl.t.Helper()
	if err := metallb.Install(cl.ctx, cl.c); err != nil {
		cl.t.Fatal(err)
	}
	for _, o := range objects {
		if err := metallb.Apply(cl.ctx, cl.c, o); err != nil {
			cl.t.Fatalf("MetalLB object %s: %v", o, err)
		}
	}
	kc := filepath.Join(cl.dir, "kubeconfig")
	ctl, err := metallb.StartController(cl.dir, kc, "--lb-class="+metallb.Class)
	if err != nil {
		cl.t.Fatal(err)
	}
	cl.reap("MetalLB controller", ctl)
	fl := &fleet{name: "MetalLB " + metallb.Version, speakers: map[string]*labkit.Speaker{}}
	fl.start = func(node string) {
		s, err := metallb.StartSpeaker(cl.ctx, cl.c, cl.dir, node, cl.lab.Hosts[node], kc, "--lb-class="+metallb.Class)
		if err != nil {
			cl.t.Fatal(err)
		}
		fl.speakers[node] = s
		cl.reap("MetalLB speaker "+node, s.Proc)
	}
	for _, n := range nodes {
		fl.start(n)
	}
	return fl
}

func metalLBClass(s *corev1.Service) { s.Spec.LoadBalancerClass = ptr.To(metallb.Class) }

// TestBenchVsMetalLBL2 measures layer-2 failover of ironlb and MetalLB
// (layer 2, memberlist) side by side in one bed: three nodes on the real
// data path (kube-proxy nftables, a pod per node), both load balancers
// running at once, each with its own Service (ironlb's: no class;
// MetalLB's: class metallb.io/metallb). Each run makes one fault on the
// node answering ARP for one load balancer's address, while a LAN client
// opens a new connection every 10 ms; the two alternate, run by run. Run
// with `make bench-vs-metallb`.
func TestBenchVsMetalLBL2(t *testing.T) {
	cl := newBed(t, bed{proxyMode: datapath.NFTables}, benchNodes...)
	cl.l2Setup(dataPathPool)
	mlb := cl.startMetalLB(benchNodes, metallb.Pool("lan", metalLBPool), metallb.L2Advertisement("lan", "lan"))
	ironIP := cl.lbService("web", nil)
	cl.backends("web", benchNodes...)
	mlbIP := cl.lbService("web-metallb", metalLBClass)
	cl.backends("web-metallb", benchNodes...)
	// Each keeps to its own class: ironlb answers nothing for MetalLB's
	// Service, and writes nothing on it.
	cl.waitAnnounced("web", metav1.ConditionTrue, "announced by node")
	var s corev1.Service
	if err := cl.c.Get(cl.ctx, types.NamespacedName{Namespace: "default", Name: "web-metallb"}, &s); err != nil {
		t.Fatal(err)
	}
	for _, c := range s.Status.Conditions {
		if c.Type == v1beta1.ServiceConditionAnnounced {
			t.Fatalf("ironlb wrote its condition on MetalLB's Service: %+v", c)
		}
	}
	client := cl.lab.Hosts["client"]
	sides := []struct {
		fl *fleet
		ip netip.Addr
	}{{cl.ironlb(), ironIP}, {mlb, mlbIP}}
	for _, f := range append(faults[:2:2], struct{ name, what string }{"node", "its link is cut (node, speaker and pod cut off) until another node announces the address, and 3 s more"}) {
		if !slices.Contains(strings.Split(*vsFaults, ","), f.name) {
			continue
		}
		samples, moved := map[string][]time.Duration{}, map[string][]time.Duration{}
		all := map[string]labkit.ConnStats{}
		for i := range *failoverRuns {
			for k := range sides {
				sd := sides[(i+k)%2] // who goes first alternates
				owner := cl.stableOwnerWithin(sd.ip, 120*time.Second)
				var st labkit.ConnStats
				if f.name == "node" {
					var d time.Duration
					st, d = cl.nodeDown(owner, client, sd.ip)
					moved[sd.fl.name] = append(moved[sd.fl.name], d)
					t.Logf("%s node down %d: %s: another node's ARP after %s", sd.fl.name, i, owner, d.Round(time.Millisecond))
					// The node is back: both load balancers' meshes
					// take it in again before the next cut (MetalLB's
					// memberlist took 9 s here), so that each run
					// measures one node going down in a whole cluster.
					time.Sleep(*vsSettle)
				} else {
					st = cl.underFaultOf(sd.fl, f.name, owner, client, sd.ip)
				}
				t.Logf("%s %s %d: %s: lost %s", sd.fl.name, f.name, i, owner, st)
				samples[sd.fl.name] = append(samples[sd.fl.name], st.Window)
				all[sd.fl.name] = add(all[sd.fl.name], st)
			}
		}
		for _, sd := range sides {
			name := sd.fl.name
			report(t, fmt.Sprintf("%s, L2, real data path: the node answering ARP for the address: %s; outage of a client opening a new connection every 10 ms", name, f.what), samples[name], totals(all[name]))
			if f.name == "node" {
				report(t, fmt.Sprintf("%s, L2, real data path: node down (link cut) -> another node's ARP for the address at the client", name), moved[name], "")
			}
		}
	}
}

// nodeDown cuts node's link while from opens a new connection to ip
// every 10 ms, until another node announces ip (at most 60 s) and 3 s
// more, so that the outage is not cut short by the node coming back;
// then restores it. It returns the connections and the time until another
// node's ARP for ip reached the client.
func (cl *cluster) nodeDown(node string, from *netlab.Host, ip netip.Addr) (labkit.ConnStats, time.Duration) {
	cl.t.Helper()
	moved, stop := cl.watchGratuitous(ip, cl.lab.Hosts[node].MAC, 90*time.Second)
	defer stop()
	c := labkit.StartConnect(from, ip, 10*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	restore, err := cl.lab.Hosts[node].CutLink()
	start := time.Now()
	if err != nil {
		c.Stop()
		cl.t.Fatal(err)
	}
	var d time.Duration
	select {
	case at := <-moved:
		d = at.Sub(start)
	case <-time.After(60 * time.Second):
		c.Stop()
		_ = restore()
		cl.t.Fatalf("%s's link cut: no other node announced %s within 60 s", node, ip)
	}
	time.Sleep(3 * time.Second)
	s := c.Stop()
	if err := restore(); err != nil {
		cl.t.Fatal(err)
	}
	return s, d
}

// metalLBRoutedPool is MetalLB's BGP pool beside ironlb's bgpPool.
const metalLBRoutedPool = "198.19.20.0/24"

// TestBenchVsMetalLBBGP measures BGP of ironlb and MetalLB (native BGP)
// side by side in one bed: three nodes on the real data path with a pod
// of app web on each, both load balancers running at once, and three FRR
// routers on the LAN: "router" peers with ironlb with BFD 300 ms x 3,
// "router2" with ironlb without BFD, "router3" with MetalLB (no BFD: its
// native mode has none), both without BFD at hold time 3 s, keepalive 1 s.
// It measures, alternating between the two, assign -> route (a new
// Service's address in the Service's status -> the route with all three
// next hops in the router's kernel FIB), then node crashes (link down,
// then both speakers SIGKILLed) -> the router's FIB dropping the node, at
// all three routers from the same crash. Run with `make bench-vs-metallb`.
func TestBenchVsMetalLBBGP(t *testing.T) {
	hold := &metav1.Duration{Duration: 3 * time.Second}
	keep := &metav1.Duration{Duration: time.Second}
	cl := newBed(t, bed{proxyMode: datapath.NFTables, hosts: []string{"router2", "router3"}}, benchNodes...)
	bfdRouter := cl.startFRR("router", "s3cret", func(n *frr.NeighborConf) { n.BFD = true })
	plainRouter := cl.startFRR("router2", "", func(*frr.NeighborConf) {})
	mlbRouter := cl.startFRR("router3", "", func(*frr.NeighborConf) {})
	if err := cl.c.Create(cl.ctx, &v1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "fast"}, Spec: v1beta1.BFDProfileSpec{
		ReceiveInterval: ptr.To[int32](300), TransmitInterval: ptr.To[int32](300), DetectMultiplier: ptr.To[int32](3)}}); err != nil {
		t.Fatal(err)
	}
	cl.bgpSetup("s3cret", func(p *v1beta1.BGPPeerSpec) { p.BFDProfile = "fast" })
	if err := cl.c.Create(cl.ctx, &v1beta1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router2"}, Spec: v1beta1.BGPPeerSpec{
		MyASN: nodeASN, PeerASN: routerASN, PeerAddress: v1beta1.IPAddress(cl.lab.Hosts["router2"].IPv4.Addr().String()),
		HoldTime: hold, KeepaliveTime: keep}}); err != nil {
		t.Fatal(err)
	}
	mlb := cl.startMetalLB(benchNodes, metallb.Pool("routed", metalLBRoutedPool), metallb.BGPAdvertisement("routed", "routed"),
		metallb.BGPPeer("router3", nodeASN, routerASN, cl.lab.Hosts["router3"].IPv4.Addr().String(), hold.Duration))
	// The pods every Service of the test selects, ready behind a plain
	// Service first: MetalLB announces only Services with a ready
	// endpoint, so its part includes the EndpointSlice Kubernetes makes
	// for each new Service.
	if err := cl.c.Create(cl.ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(datapath.BackendPort)}}}}); err != nil {
		t.Fatal(err)
	}
	cl.backends("web", benchNodes...)
	for _, r := range []*frr.Router{bfdRouter, plainRouter, mlbRouter} {
		cl.waitSessions(r)
	}
	bfdUp(t, bfdRouter)

	// assign -> route, alternating.
	routed := func(r *frr.Router, name string, class bool) (netip.Prefix, time.Duration, time.Duration) {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
				Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(datapath.BackendPort)}}},
		}
		if class {
			metalLBClass(s)
		}
		created := time.Now()
		if err := cl.c.Create(cl.ctx, s); err != nil {
			t.Fatal(err)
		}
		ip, assigned := cl.waitIPFast(name)
		prefix := netip.PrefixFrom(ip, 32)
		cl.waitFIB(r, prefix, 30*time.Second)
		return prefix, time.Since(assigned), time.Since(created)
	}
	var ironPrefix, mlbPrefix netip.Prefix
	fromIP, fromCreate := map[string][]time.Duration{}, map[string][]time.Duration{}
	for i := range *failoverRuns {
		for k := range 2 {
			var d, dc time.Duration
			name := "ironlb"
			if (i+k)%2 == 0 {
				ironPrefix, d, dc = routed(plainRouter, fmt.Sprintf("web-%d", i), false)
			} else {
				name = mlb.name
				mlbPrefix, d, dc = routed(mlbRouter, fmt.Sprintf("web-metallb-%d", i), true)
			}
			fromIP[name], fromCreate[name] = append(fromIP[name], d), append(fromCreate[name], dc)
		}
	}
	for _, name := range []string{"ironlb", mlb.name} {
		report(t, fmt.Sprintf("%s, BGP announce (Service status has its IP -> route with 3 next hops in the router's FIB, sampled every 2 ms)", name), fromIP[name], "")
		report(t, fmt.Sprintf("%s, BGP announce (Service created -> same)", name), fromCreate[name], "")
	}

	// Node crashes, seen by the three routers at once.
	type watched struct {
		name   string
		r      *frr.Router
		prefix netip.Prefix
	}
	ws := []watched{{"ironlb, BFD 300ms x3", bfdRouter, ironPrefix}, {"ironlb, no BFD, hold time 3 s", plainRouter, ironPrefix},
		{mlb.name + ", native BGP (no BFD), hold time 3 s", mlbRouter, mlbPrefix}}
	crash := map[string][]time.Duration{}
	for i := range *failoverRuns {
		node := benchNodes[i%len(benchNodes)]
		var others []string
		for _, n := range benchNodes {
			if n != node {
				others = append(others, n)
			}
		}
		want := frr.NextHops(cl.nodeAddrs(others...)...)
		type result struct {
			name string
			d    time.Duration
		}
		results := make(chan result, len(ws))
		start := time.Now()
		for _, w := range ws {
			fib := kernelNextHops(t, w.r, w.prefix)
			go func() {
				for time.Since(start) < 60*time.Second {
					if nh, err := fib(); err == nil && want(nh) {
						results <- result{w.name, time.Since(start)}
						return
					}
					time.Sleep(5 * time.Millisecond)
				}
				results <- result{w.name, -1}
			}()
		}
		if _, err := cl.lab.Hosts[node].In("ip", "link", "set", "eth0", "down"); err != nil {
			t.Fatal(err)
		}
		cl.speakers[node].Kill()
		mlb.speakers[node].Kill()
		for range ws {
			r := <-results
			if r.d < 0 {
				t.Fatalf("run %d: %s crashed: %s's router still routes via it after 60 s", i, node, r.name)
			}
			crash[r.name] = append(crash[r.name], r.d)
			t.Logf("run %d: %s crashed: %s withdrawn in %s", i, node, r.name, r.d.Round(time.Millisecond))
		}
		if _, err := cl.lab.Hosts[node].In("ip", "link", "set", "eth0", "up"); err != nil {
			t.Fatal(err)
		}
		if _, err := cl.lab.Hosts[node].In("ip", "route", "replace", "default", "via", cl.lab.Hosts["router"].IPv4.Addr().String()); err != nil {
			t.Fatal(err)
		}
		cl.startSpeaker(node)
		mlb.start(node)
		for _, w := range ws {
			if err := cl.ecmp(w.r, w.prefix, 60*time.Second); err != nil {
				t.Fatalf("run %d: %s did not come back at %s: %v", i, node, w.r.NS, err)
			}
		}
		bfdUp(t, bfdRouter)
	}
	for _, w := range ws {
		report(t, fmt.Sprintf("%s: BGP node crash (link down + SIGKILL -> the router's FIB drops the node's next hop, sampled every 5 ms)", w.name), crash[w.name], "")
	}
}

var vsIPs = flag.Int("vs-ips", 2000, "TestBenchVsMetalLBFootprint: addresses each load balancer announces")

// TestBenchVsMetalLBFootprint: each load balancer announces vs-ips
// layer-2 addresses (one Service each, all selecting the same three
// pods) from the same three nodes at once; once every address is
// answered, and 30 s more, each speaker's memory and its CPU over a
// minute of nothing happening. Both speakers cache every LoadBalancer
// Service of the cluster, ironlb's and MetalLB's alike. Run with `make
// bench-vs-metallb`.
func TestBenchVsMetalLBFootprint(t *testing.T) {
	n := *vsIPs
	cl := newBed(t, bed{proxyMode: datapath.NFTables}, benchNodes...)
	cl.l2Setup("198.18.16.0/21")
	mlb := cl.startMetalLB(benchNodes, metallb.Pool("lan", "198.18.32.0/21"), metallb.L2Advertisement("lan", "lan"))
	if err := cl.c.Create(cl.ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(datapath.BackendPort)}}}}); err != nil {
		t.Fatal(err)
	}
	cl.backends("web", benchNodes...)
	start := time.Now()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := w; i < 2*n; i += 8 {
				s := &corev1.Service{
					ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("ironlb-%d", i/2)},
					// No node ports: 4,000 Services would fill the range,
					// and traffic to the address needs none.
					Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
						AllocateLoadBalancerNodePorts: ptr.To(false),
						Ports:                         []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(datapath.BackendPort)}}},
				}
				if i%2 == 1 {
					s.Name = fmt.Sprintf("metallb-%d", i/2)
					metalLBClass(s)
				}
				if err := cl.c.Create(cl.ctx, s); err != nil {
					t.Errorf("create %s: %v", s.Name, err)
					return
				}
			}
		})
	}
	wg.Wait()
	// Every Service has its address, and the last ones are answered.
	last := map[string]netip.Addr{}
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(time.Second) {
		var svcs corev1.ServiceList
		if err := cl.c.List(cl.ctx, &svcs); err != nil {
			t.Fatal(err)
		}
		got := map[string]int{}
		for _, s := range svcs.Items {
			if len(s.Status.LoadBalancer.Ingress) == 0 {
				continue
			}
			sys := "ironlb"
			if s.Spec.LoadBalancerClass != nil {
				sys = mlb.name
			}
			got[sys]++
			if ip, err := netip.ParseAddr(s.Status.LoadBalancer.Ingress[0].IP); err == nil && ip.Compare(last[sys]) > 0 {
				last[sys] = ip
			}
		}
		if got["ironlb"] == n && got[mlb.name] == n {
			t.Logf("%d + %d addresses assigned %s after the first create", n, n, time.Since(start).Round(time.Second))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 10 minutes, addresses assigned: %v of %d each", got, n)
		}
	}
	for sys, ip := range last {
		for deadline := time.Now().Add(5 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
			if _, err := cl.owner(ip); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the highest address %s is not answered 5 minutes on", sys, ip)
			}
		}
	}
	t.Logf("every address answered %s after the first create; settling 30 s", time.Since(start).Round(time.Second))
	time.Sleep(30 * time.Second)
	const window = 60 * time.Second
	fleets := []*fleet{cl.ironlb(), mlb}
	before := map[*labkit.Speaker]mdreport.Proc{}
	for _, fl := range fleets {
		for _, s := range fl.speakers {
			p, err := mdreport.ReadProc(s.Pid())
			if err != nil {
				t.Fatal(err)
			}
			before[s] = p
		}
	}
	time.Sleep(window)
	for _, fl := range fleets {
		var cpu, rss, anon []float64
		for _, node := range benchNodes {
			s := fl.speakers[node]
			p, err := mdreport.ReadProc(s.Pid())
			if err != nil {
				t.Fatal(err)
			}
			cpu = append(cpu, 100*(p.CPU-before[s].CPU).Seconds()/window.Seconds())
			rss, anon = append(rss, float64(p.RSS)/(1<<20)), append(anon, float64(p.RSSAnon)/(1<<20))
		}
		note(t, fmt.Sprintf("%s speaker, %d layer-2 addresses of its own (%d LoadBalancer Services in the cluster), per node (%s): RSS %s MiB (of which private %s MiB), idle CPU over %s %s %% of one core",
			fl.name, n, 2*n, strings.Join(benchNodes, ", "), floatList(rss), floatList(anon), window, floatList(cpu)))
	}
}

func floatList(fs []float64) string {
	var out []string
	for _, f := range fs {
		out = append(out, fmt.Sprintf("%.2f", f))
	}
	return strings.Join(out, " / ")
}
