package e2e

import (
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
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
)

// dataPathPool is the data-path bed's layer-2 pool.
const dataPathPool = v1beta1.AddressRange("198.18.40.200-198.18.40.220")

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
	a := cl.askUntil(inside, ip, 10*time.Second)
	t.Logf("inside the range: %s", a)
	for i := range 3 {
		if body, err := labkit.Get(outside, ip, time.Second); err == nil {
			t.Fatalf("try %d: %s (%s, outside the range %s/32) was answered: %q", i, outside.Name, outside.IPv4.Addr(), inside.IPv4.Addr(), body)
		}
	}
	// Without the range the same host is answered: the ranges, nothing
	// else, kept it out.
	var s corev1.Service
	if err := cl.c.Get(cl.ctx, client.ObjectKey{Namespace: "default", Name: "ranged"}, &s); err != nil {
		t.Fatal(err)
	}
	s.Spec.LoadBalancerSourceRanges = nil
	if err := cl.c.Update(cl.ctx, &s); err != nil {
		t.Fatal(err)
	}
	t.Logf("without the range, %s: %s", outside.Name, cl.askUntil(outside, ip, 10*time.Second))
}
