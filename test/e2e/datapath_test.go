package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/datapath"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
)

// dataPathPool is the data-path bed's layer-2 pool.
const dataPathPool = v1beta1.AddressRange("198.18.0.200-198.18.0.220")

// startDataPath runs kube-controller-manager and the nodes' kube-proxies.
func (cl *cluster) startDataPath(mode string, nodes []string) {
	cl.t.Helper()
	dp, err := datapath.Start(cl.ctx, datapath.Config{Env: cl.env, Lab: cl.lab, Nodes: nodes, Dir: filepath.Join(cl.dir, "datapath"), ProxyMode: mode})
	if err != nil {
		cl.t.Fatal(err)
	}
	cl.dp = dp
	cl.t.Cleanup(func() {
		if cl.t.Failed() {
			cl.t.Logf("data path: %s (logs in %s)", dp.Problems(), filepath.Join(cl.dir, "datapath"))
		}
		dp.Close()
	})
}

// lbService creates a LoadBalancer Service selecting app=name, port 80 to
// the backends' port, as edit changes it, and waits for its address.
func (cl *cluster) lbService(name string, edit func(*corev1.Service)) netip.Addr {
	cl.t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(datapath.BackendPort)}}},
	}
	if edit != nil {
		edit(s)
	}
	if err := cl.c.Create(cl.ctx, s); err != nil {
		cl.t.Fatal(err)
	}
	return cl.waitIP(name)
}

// backends runs a pod of app svc on each node (named svc-node) and waits
// until the EndpointSlices Kubernetes made list them all ready.
func (cl *cluster) backends(svc string, nodes ...string) map[string]*datapath.Pod {
	cl.t.Helper()
	pods := map[string]*datapath.Pod{}
	var all []*datapath.Pod
	for _, n := range nodes {
		p, err := cl.dp.AddPod(cl.ctx, datapath.PodSpec{Namespace: "default", Name: svc + "-" + n, Node: n, Labels: map[string]string{"app": svc}})
		if err != nil {
			cl.t.Fatal(err)
		}
		pods[n] = p
		all = append(all, p)
	}
	if _, err := cl.dp.WaitEndpoints(cl.ctx, "default", svc, 15*time.Second, all...); err != nil {
		cl.t.Fatal(err)
	}
	return pods
}

// ask fetches http://ip/ from a host n times, each on a new connection,
// and returns the answers.
func (cl *cluster) ask(from *netlab.Host, ip netip.Addr, n int) []datapath.Answer {
	cl.t.Helper()
	var out []datapath.Answer
	for range n {
		body, err := labkit.Get(from, ip, 2*time.Second)
		if err != nil {
			cl.t.Fatalf("%s: GET http://%s/: %v (%s)", from.Name, ip, err, cl.dp.Problems())
		}
		a, err := datapath.ParseAnswer(body)
		if err != nil {
			cl.t.Fatal(err)
		}
		out = append(out, a)
	}
	return out
}

// askUntil retries a GET from a host until a backend answers.
func (cl *cluster) askUntil(from *netlab.Host, ip netip.Addr, timeout time.Duration) datapath.Answer {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		body, err := labkit.Get(from, ip, 500*time.Millisecond)
		if err == nil {
			a, err := datapath.ParseAnswer(body)
			if err != nil {
				cl.t.Fatal(err)
			}
			return a
		}
		if time.Now().After(deadline) {
			cl.t.Fatalf("%s: no answer from http://%s/ in %s: %v (%s)", from.Name, ip, timeout, err, cl.dp.Problems())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDataPathClusterPolicy: over layer 2 with externalTrafficPolicy
// Cluster, the announcing node's kube-proxy spreads a LAN client's
// connections over every ready pod, on every node, SNATing those it sends
// to other nodes; a pod reaches the address from inside the cluster; a
// Service with no endpoint is announced and kube-proxy rejects its
// connections. In kube-proxy's nftables and iptables modes.
func TestDataPathClusterPolicy(t *testing.T) {
	for _, mode := range []string{datapath.NFTables, datapath.IPTables} {
		t.Run(mode, func(t *testing.T) {
			nodes := []string{"node1", "node2", "node3"}
			cl := newBed(t, bed{proxyMode: mode}, nodes...)
			cl.l2Setup(dataPathPool)
			ip := cl.lbService("web", nil)
			pods := cl.backends("web", nodes...)
			owner := cl.waitOwner(ip, 10*time.Second, "")
			client := cl.lab.Hosts["client"]
			cl.askUntil(client, ip, 10*time.Second)

			seen := map[string]int{}
			for _, a := range cl.ask(client, ip, 100) {
				seen[a.Pod]++
				if a.Node != owner && a.From != cl.lab.Hosts[owner].IPv4.Addr() {
					t.Errorf("%s answered for %s, announced by %s, but saw source %s: want %s's address (kube-proxy's SNAT)", a.Pod, ip, owner, a.From, owner)
				}
			}
			for n, p := range pods {
				if seen[p.Name] == 0 {
					t.Errorf("pod %s on %s never answered in 100 connections to %s (announced by %s): %v", p.Name, n, ip, owner, seen)
				}
			}
			t.Logf("%s announced %s; 100 connections answered by %v", owner, ip, seen)

			// From inside the cluster: kube-proxy short-circuits the
			// address (ipMode VIP), whoever announces it.
			for _, n := range nodes {
				if n == owner {
					continue
				}
				a := cl.ask(pods[n].Host, ip, 1)[0]
				t.Logf("from pod %s: %s", pods[n].Name, a)
				break
			}

			// No endpoint: announced all the same, and kube-proxy rejects
			// the connection as a cluster does.
			empty := cl.lbService("empty", nil)
			cl.waitOwner(empty, 10*time.Second, "")
			cl.waitAnnounced("empty", metav1.ConditionTrue, "")
			_, err := labkit.Get(client, empty, 2*time.Second)
			if err == nil || !strings.Contains(err.Error(), "refused") {
				t.Errorf("GET http://%s/ (no endpoints): %v, want connection refused (kube-proxy's reject)", empty, err)

			}
		})
	}
}

// TestDataPathLocalPolicy: with externalTrafficPolicy Local only a node
// with a ready pod of the Service announces it, the pod sees the client's
// own address, and when the announcing node's pod goes unready, then is
// deleted, the address moves to the node whose pod is ready; with none
// left nothing announces and the Service says why.
func TestDataPathLocalPolicy(t *testing.T) {
	cl := newBed(t, bed{proxyMode: datapath.NFTables}, "node1", "node2", "node3")
	cl.l2Setup(dataPathPool)
	ip := cl.lbService("local", func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	pods := cl.backends("local", "node2", "node3")
	owner := cl.waitOwner(ip, 10*time.Second, "")
	if owner == "node1" {
		t.Fatalf("node1 announces %s but has no pod of it", ip)
	}
	client := cl.lab.Hosts["client"]
	cl.askUntil(client, ip, 10*time.Second)
	for _, a := range cl.ask(client, ip, 20) {
		if a.Node != owner || a.From != client.IPv4.Addr() {
			t.Fatalf("got %s: want the pod on %s, seeing the client's own address %s", a, owner, client.IPv4.Addr())
		}
	}

	other := map[string]string{"node2": "node3", "node3": "node2"}[owner]
	start := time.Now()
	pods[owner].SetReady(false)
	moved := cl.waitOwner(ip, 15*time.Second, owner)
	if moved != other {
		t.Fatalf("after the pod on %s went unready, %s announces %s: want %s", owner, moved, ip, other)
	}
	a := cl.askUntil(client, ip, 5*time.Second)
	t.Logf("pod on %s unready: %s announces %s %s later; answered by %s", owner, other, ip, time.Since(start).Round(time.Millisecond), a)
	if a.Node != other || a.From != client.IPv4.Addr() {
		t.Errorf("got %s: want the pod on %s, seeing %s", a, other, client.IPv4.Addr())
	}

	if err := pods[owner].Delete(cl.ctx); err != nil {
		t.Fatal(err)
	}
	if err := pods[other].Delete(cl.ctx); err != nil {
		t.Fatal(err)
	}
	cl.waitAnnounced("local", metav1.ConditionFalse, "NoLocalEndpoints")
	if n, err := cl.owner(ip); err == nil {
		t.Errorf("%s still announces %s with no pod left", n, ip)
	}
}

// TestDataPathSourceRanges: kube-proxy honours loadBalancerSourceRanges
// on the announced address: a LAN client inside the range is answered,
// one outside is not.
func TestDataPathSourceRanges(t *testing.T) {
	cl := newBed(t, bed{proxyMode: datapath.NFTables}, "node1", "node2")
	cl.l2Setup(dataPathPool)
	inside, outside := cl.lab.Hosts["client"], cl.lab.Hosts["router"]
	ip := cl.lbService("ranged", func(s *corev1.Service) {
		s.Spec.LoadBalancerSourceRanges = []string{netip.PrefixFrom(inside.IPv4.Addr(), 32).String()}
	})
	cl.backends("ranged", "node1", "node2")
	cl.waitOwner(ip, 10*time.Second, "")
	cl.sourceRanges("ranged", ip, inside, outside)
}

// sourceRanges checks Service svc at ip, whose loadBalancerSourceRanges
// hold inside's address only: inside is answered, outside is not, and is
// once the range is removed (the range, nothing else, kept it out).
func (cl *cluster) sourceRanges(svc string, ip netip.Addr, inside, outside *netlab.Host) {
	cl.t.Helper()
	cl.t.Logf("inside the range, %s: %s", inside.Name, cl.askUntil(inside, ip, 10*time.Second))
	for i := range 3 {
		if body, err := labkit.Get(outside, ip, time.Second); err == nil {
			cl.t.Fatalf("try %d: %s (%s, outside the range %s/32) was answered: %q", i, outside.Name, outside.IPv4.Addr(), inside.IPv4.Addr(), body)
		}
	}
	var s corev1.Service
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: svc}, &s); err != nil {
		cl.t.Fatal(err)
	}
	s.Spec.LoadBalancerSourceRanges = nil
	if err := cl.c.Update(cl.ctx, &s); err != nil {
		cl.t.Fatal(err)
	}
	cl.t.Logf("without the range, %s: %s", outside.Name, cl.askUntil(outside, ip, 10*time.Second))
}

// TestDataPathBGP: over BGP through a real FRR router, with
// externalTrafficPolicy Local only the nodes with a ready pod advertise
// the address, the pod sees the address of the client behind the router,
// and a node whose pod goes unready withdraws; loadBalancerSourceRanges
// lets in the client inside the range and keeps out one outside it.
func TestDataPathBGP(t *testing.T) {
	cl := newBed(t, bed{proxyMode: datapath.NFTables}, "node1", "node2", "node3")
	rtr := cl.startRouter("s3cret", false)
	cl.bgpSetup("s3cret", nil)
	inside, err := cl.lab.AddBehind("client2", "router", netip.MustParsePrefix("203.0.113.0/30"))
	if err != nil {
		t.Fatal(err)
	}
	outside, err := cl.lab.AddBehind("client3", "router", netip.MustParsePrefix("203.0.113.4/30"))
	if err != nil {
		t.Fatal(err)
	}

	ip := cl.lbService("local", func(s *corev1.Service) {
		s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	})
	pods := cl.backends("local", "node2", "node3")
	prefix := netip.PrefixFrom(ip, 32)
	if _, err := rtr.WaitRoute(within(t, 20*time.Second), prefix, frr.NextHops(cl.nodeAddrs("node2", "node3")...)); err != nil {
		t.Fatalf("%s not routed via exactly the nodes with a ready pod (node2, node3): %v", prefix, err)
	}
	a := cl.askUntil(inside, ip, 10*time.Second)
	if a.From != inside.IPv4.Addr() {
		t.Errorf("got %s: want the client's own address %s (externalTrafficPolicy Local)", a, inside.IPv4.Addr())
	}
	start := time.Now()
	pods["node2"].SetReady(false)
	if _, err := rtr.WaitRoute(within(t, 15*time.Second), prefix, frr.NextHops(cl.nodeAddrs("node3")...)); err != nil {
		t.Fatalf("node2's pod unready: %s still routed via node2: %v", prefix, err)
	}
	t.Logf("node2's pod unready: the router routes %s via node3 only %s later", prefix, time.Since(start).Round(time.Millisecond))
	for _, a := range cl.ask(inside, ip, 20) {
		if a.Node != "node3" || a.From != inside.IPv4.Addr() {
			t.Fatalf("got %s: want the pod on node3 seeing %s", a, inside.IPv4.Addr())
		}
	}

	ranged := cl.lbService("ranged", func(s *corev1.Service) {
		s.Spec.LoadBalancerSourceRanges = []string{netip.PrefixFrom(inside.IPv4.Addr(), 32).String()}
	})
	cl.backends("ranged", "node1", "node2", "node3")
	cl.sourceRanges("ranged", ranged, inside, outside)
}

// TestDataPathHandoverKeepsConnections: a graceful handover of one
// address leaves alone the established connections to another address
// announced by a node that stays: the same connection is answered by the
// same pod before and after.
func TestDataPathHandoverKeepsConnections(t *testing.T) {
	nodes := []string{"node1", "node2", "node3"}
	cl := newBed(t, bed{proxyMode: datapath.NFTables}, nodes...)
	cl.l2Setup(dataPathPool)
	kept := cl.lbService("kept", nil)
	cl.backends("kept", nodes...)
	keptOwner := cl.waitOwner(kept, 10*time.Second, "")
	moved, movedOwner := netip.Addr{}, ""
	for i := range 8 { // Services until one is announced elsewhere
		ip := cl.lbService(fmt.Sprintf("moved%d", i), nil)
		if o := cl.waitOwner(ip, 10*time.Second, ""); o != keptOwner {
			moved, movedOwner = ip, o
			break
		}
	}
	if movedOwner == "" {
		t.Fatalf("8 Services all announced by %s", keptOwner)
	}
	client := cl.lab.Hosts["client"]
	cl.askUntil(client, kept, 10*time.Second)
	conn, err := netlab.InNS(client.Name, func() (net.Conn, error) {
		return net.DialTimeout("tcp", netip.AddrPortFrom(kept, 80).String(), 2*time.Second)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	get := func() (datapath.Answer, error) {
		_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: %s\r\n\r\n", kept); err != nil {
			return datapath.Answer{}, err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return datapath.Answer{}, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			return datapath.Answer{}, err
		}
		return datapath.ParseAnswer(string(b))
	}
	before, err := get()
	if err != nil {
		t.Fatal(err)
	}
	cl.speakers[movedOwner].Stop()
	now := cl.waitOwner(moved, 10*time.Second, movedOwner)
	if o, err := cl.owner(kept); err != nil || o != keptOwner {
		t.Fatalf("%s moved too: %q (%v), want it on %s", kept, o, err, keptOwner)
	}
	after, err := get()
	if err != nil {
		t.Fatalf("the connection to %s through %s, established before %s handed %s over to %s: %v", kept, keptOwner, movedOwner, moved, now, err)
	}
	if after.Pod != before.Pod {
		t.Errorf("the same connection was answered by %s, then %s", before.Pod, after.Pod)
	}
	t.Logf("%s handed %s over to %s; the connection to %s through %s still answered by %s", movedOwner, moved, now, kept, keptOwner, after.Pod)
}
