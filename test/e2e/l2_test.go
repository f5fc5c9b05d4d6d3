// Package e2e runs ironlb for real: a real API server, the controller, and
// speaker processes whose node-network sockets live in network namespaces
// acting as nodes on one LAN, with a client host on the same LAN.
package e2e

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/controller"
	"github.com/ironlb/ironlb/internal/app"
	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/datapath"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
	"github.com/ironlb/ironlb/test/proc"
)

// speakerNamespace is where the speakers look for BGP password Secrets.
const speakerNamespace = "ironlb-system"

// cluster is one e2e bed.
type cluster struct {
	t        *testing.T
	env      *apiserver.Env
	c        client.Client
	lab      *netlab.Lab
	speakers map[string]*labkit.Speaker
	dir      string
	ctx      context.Context
	// dp is the real data path, in a bed with a proxy mode.
	dp *datapath.Cluster
}

// runController runs the controller in this process until ctx ends.
func runController(ctx context.Context, t *testing.T, env *apiserver.Env) {
	t.Helper()
	cfg := rest.CopyConfig(env.Config)
	app.TuneRESTConfig(cfg)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		// One controller per test in this process: the names repeat.
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controller.Setup(mgr, controller.Options{Filter: config.ClassFilter{Default: true}}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
}

func newCluster(t *testing.T, nodes ...string) *cluster { return newBed(t, bed{}, nodes...) }

// bed is how an e2e cluster differs from the default one.
type bed struct {
	// proxyMode, if set, runs the real data path (test/datapath):
	// kube-controller-manager, a kube-proxy per node in this mode, and
	// Pods on the nodes; the API server then serves on the LAN (at
	// dataPathAPI), as kube-proxy on a node needs.
	proxyMode string
	// hosts are more LAN hosts beside the nodes, "client" and "router".
	hosts []string
}

// dataPathAPI is where the beds' API server serves: this host on the LAN
// (no other package attaches 198.18.0.0/24 to this host while the tests
// run; the lab does, but runs alone).
var dataPathAPI = netip.MustParsePrefix("198.18.0.250/24")

func newBed(t *testing.T, b bed, nodes ...string) *cluster {
	t.Helper()
	if err := netlab.Check(); err != nil {
		t.Fatalf("e2e needs network namespaces: %v", err)
	}
	root, _ := apiserver.Root()
	for _, b := range []string{"speaker", "controller"} {
		if _, err := os.Stat(filepath.Join(root, "bin", b)); err != nil {
			t.Fatalf("bin/%s missing: run `make build`", b)
		}
	}
	prefix := fmt.Sprintf("ilbe%d-", os.Getpid()%100000)
	lab, err := netlab.New(prefix, netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:db8:18::/64"), 11, append(append(nodes, "client", "router"), b.hosts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	// The API server serves on the LAN, as a control-plane host does:
	// speakers on the nodes reach it over the nodes' links.
	if err := lab.AttachThisHost(dataPathAPI); err != nil {
		t.Fatal(err)
	}
	env, err := apiserver.NewOn(dataPathAPI.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	cl := &cluster{t: t, env: env, c: env.Client, lab: lab, speakers: map[string]*labkit.Speaker{}, dir: t.TempDir(), ctx: ctx}
	for _, n := range nodes {
		cl.addNode(n)
	}
	if b.proxyMode != "" {
		cl.startDataPath(b.proxyMode, nodes)
	}
	runController(ctx, t, env)
	if err := os.WriteFile(filepath.Join(cl.dir, "kubeconfig"), env.KubeConfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cl.dir, "mesh.key"), []byte("e2e-test-mesh-key-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		cl.startSpeaker(n)
	}
	return cl
}

func (cl *cluster) addNode(name string) {
	if err := labkit.CreateNode(cl.ctx, cl.c, name, cl.lab.Hosts[name]); err != nil {
		cl.t.Fatal(err)
	}
}

func (cl *cluster) startSpeaker(name string) {
	root, _ := apiserver.Root()
	s, err := labkit.StartSpeaker(root, cl.dir, name, cl.lab.Hosts[name], filepath.Join(cl.dir, "kubeconfig"), filepath.Join(cl.dir, "mesh.key"), "--namespace="+speakerNamespace)
	if err != nil {
		cl.t.Fatal(err)
	}
	cl.speakers[name] = s
	cl.reap("speaker "+name, s.Proc)
}

// reap kills p when the test ends and, if it failed, logs the end of p's
// log.
func (cl *cluster) reap(what string, p *proc.Proc) {
	cl.t.Cleanup(func() {
		p.Kill()
		p.Wait()
		if cl.t.Failed() {
			b, _ := os.ReadFile(p.Log)
			cl.t.Logf("%s log:\n%s", what, tail(string(b), 3000))
		}
	})
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (cl *cluster) l2Setup(addrs ...v1beta1.AddressRange) {
	if err := cl.c.Create(cl.ctx, &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: addrs}}); err != nil {
		cl.t.Fatal(err)
	}
	if err := cl.c.Create(cl.ctx, &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}}); err != nil {
		cl.t.Fatal(err)
	}
}

// service creates a LoadBalancer Service and waits for its address.
func (cl *cluster) service(name string) netip.Addr {
	cl.createService(name)
	return cl.waitIP(name)
}

// createService creates a LoadBalancer Service and returns at once.
func (cl *cluster) createService(name string) {
	cl.t.Helper()
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": name},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := cl.c.Create(cl.ctx, s); err != nil {
		cl.t.Fatal(err)
	}
}

// servedService is service with "pods" on every node behind the address
// (kube-proxy's part, see labkit.ServePods): pings and HTTP get answers.
func (cl *cluster) servedService(name string) netip.Addr {
	cl.t.Helper()
	ip := cl.service(name)
	for n := range cl.speakers {
		if err := labkit.ServePods(cl.ctx, cl.lab.Hosts[n], n, ip); err != nil {
			cl.t.Fatal(err)
		}
	}
	return ip
}

// clientARP runs fn with an ARP client on the client host's LAN interface.
func clientARP[T any](cl *cluster, fn func(c *arp.Client, ifi *net.Interface) (T, error)) (T, error) {
	return netlab.InNS(cl.lab.Hosts["client"].Name, func() (T, error) {
		var zero T
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return zero, err
		}
		c, err := arp.Dial(ifi)
		if err != nil {
			return zero, err
		}
		defer c.Close()
		return fn(c, ifi)
	})
}

// resolve asks for ip's MAC from the client host, like a router would.
func (cl *cluster) resolve(ip netip.Addr, timeout time.Duration) (net.HardwareAddr, error) {
	return labkit.Resolve(cl.lab.Hosts["client"], ip, timeout)
}

// owner returns the node whose MAC answers for ip.
func (cl *cluster) owner(ip netip.Addr) (string, error) {
	mac, err := cl.resolve(ip, 300*time.Millisecond)
	if err != nil {
		return "", err
	}
	for n, h := range cl.lab.Hosts {
		if h.MAC.String() == mac.String() {
			return n, nil
		}
	}
	return "", fmt.Errorf("unknown MAC %s answers for %s", mac, ip)
}

func (cl *cluster) waitOwner(ip netip.Addr, timeout time.Duration, not string) string {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for time.Now().Before(deadline) {
		o, err := cl.owner(ip)
		if err == nil && o != not {
			return o
		}
		last = err
	}
	cl.t.Fatalf("nobody (other than %q) answers ARP for %s within %s: %v", not, ip, timeout, last)
	return ""
}

// watchGratuitous reports the time the first ARP reply or gratuitous ARP
// for ip from a MAC other than old arrives at the client.
func (cl *cluster) watchGratuitous(ip netip.Addr, old net.HardwareAddr, timeout time.Duration) (<-chan time.Time, func()) {
	got := make(chan time.Time, 1)
	c, err := netlab.InNS(cl.lab.Hosts["client"].Name, func() (*arp.Client, error) {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return nil, err
		}
		return arp.Dial(ifi)
	})
	if err != nil {
		cl.t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(timeout))
	go func() {
		for {
			p, _, err := c.Read()
			if err != nil {
				return
			}
			if p.SenderIP == ip && p.SenderHardwareAddr.String() != old.String() {
				got <- time.Now()
				return
			}
		}
	}()
	return got, func() { _ = c.Close() }
}

// crash kills node's speaker (SIGKILL), takes its link down and returns
// the time until the client sees another node's ARP for ip.
func (cl *cluster) crash(node string, ip netip.Addr) (time.Duration, error) {
	gratuitous, stop := cl.watchGratuitous(ip, cl.lab.Hosts[node].MAC, 10*time.Second)
	defer stop()
	start := time.Now()
	cl.speakers[node].Kill()
	if _, err := cl.lab.Hosts[node].In("ip", "link", "set", "eth0", "down"); err != nil {
		return 0, err
	}
	select {
	case at := <-gratuitous:
		return at.Sub(start), nil
	case <-time.After(10 * time.Second):
		return 0, fmt.Errorf("no node took over %s from %s within 10s", ip, node)
	}
}

func TestL2AnnounceAndFailover(t *testing.T) {
	cl := newCluster(t, "node1", "node2", "node3")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	ip := cl.service("web")
	first := cl.waitOwner(ip, 10*time.Second, "")
	t.Logf("%s announced by %s", ip, first)
	// Stable: every resolve gives the same owner.
	for range 5 {
		if o, err := cl.owner(ip); err != nil || o != first {
			t.Fatalf("owner flapped: %s %v", o, err)
		}
	}
	// Crash the owner: speaker SIGKILL and its link down.
	d, err := cl.crash(first, ip)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("crash failover: gratuitous ARP from the new owner after %s", d)
	if d > 2*time.Second {
		t.Errorf("failover took %s", d)
	}
	second := cl.waitOwner(ip, 5*time.Second, first)
	if second == first {
		t.Fatal("still the dead node")
	}
}
