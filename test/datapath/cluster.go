// Package datapath turns a netlab LAN of node namespaces into a small real
// Kubernetes data path, so traffic to an announced address lands where it
// lands in a cluster: kube-controller-manager makes EndpointSlices from
// Pods and gives every node a pod CIDR; one kube-proxy per node, inside the
// node's namespace, programs Service forwarding (nftables or iptables);
// routes between the nodes' pod CIDRs are the lab's "CNI" (host-gw); Pods
// are namespaces plugged into their node by the real CNI ptp plugin, each
// with a backend that answers with its pod, its node and the source
// address it saw. No kubelet runs here (see docs/lab.md): a small one of
// ours writes the Pod status a kubelet would, from the Pod's readiness
// probe.
package datapath

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/netlab"
	"github.com/ironlb/ironlb/test/proc"
)

// Proxy modes of kube-proxy.
const (
	NFTables = "nftables"
	IPTables = "iptables"
)

// DefaultClusterCIDR is the pods' range when Config leaves it empty.
var DefaultClusterCIDR = netip.MustParsePrefix("10.244.0.0/16")

// Config says what to build on.
type Config struct {
	// Env is the API server; the nodes' kube-proxies dial Env.Config.Host,
	// so it must serve on the LAN (apiserver.NewOn + Lab.AttachThisHost).
	Env *apiserver.Env
	Lab *netlab.Lab
	// Nodes are the Lab's hosts that are nodes; their Node objects exist.
	Nodes []string
	// Dir holds kubeconfigs, configs, logs and the CNI's state.
	Dir string
	// ProxyMode is NFTables (the default) or IPTables.
	ProxyMode string
	// ClusterCIDR is the pods' range, a /24 per node; DefaultClusterCIDR
	// if zero.
	ClusterCIDR netip.Prefix
	// ServiceCIDR is the API server's Service range (the default is
	// apiserver's IPv4 one).
	ServiceCIDR netip.Prefix
	// Workloads runs what real kubelets' pods need (test/kubelet): the
	// Deployment, ReplicaSet and DaemonSet controllers, the ServiceAccount,
	// root CA publisher and node lifecycle controllers (every node must
	// then run a kubelet), kube-scheduler, and routes from
	// this host (the control plane) to the pod CIDRs, so pods reach the
	// API server through the kubernetes Service.
	Workloads bool
}

// Cluster is the running data path.
type Cluster struct {
	cfg      Config
	c        client.Client
	podCIDRs map[string]netip.Prefix
	procs    []*proc.Proc
	// ctx ends when Close begins: what stops after is being stopped.
	ctx     context.Context
	cancel  context.CancelFunc
	kubelet *kubelet

	mu   sync.Mutex
	pods map[string]*Pod // by namespace/name
}

// Start runs kube-controller-manager, waits for every node's pod CIDR,
// routes the pod CIDRs between nodes and runs a kube-proxy per node, until
// every kube-proxy's healthz says it has programmed its rules. Close stops
// it all; on error Start has already cleaned up.
func Start(ctx context.Context, cfg Config) (_ *Cluster, err error) {
	if cfg.ProxyMode == "" {
		cfg.ProxyMode = NFTables
	}
	if cfg.ProxyMode != NFTables && cfg.ProxyMode != IPTables {
		return nil, fmt.Errorf("proxy mode %q: want %q or %q", cfg.ProxyMode, NFTables, IPTables)
	}
	if !cfg.ClusterCIDR.IsValid() {
		cfg.ClusterCIDR = DefaultClusterCIDR
	}
	if !cfg.ServiceCIDR.IsValid() {
		cfg.ServiceCIDR = netip.MustParsePrefix(apiserver.ServiceCIDRv4)
	}
	if err := check(cfg.ProxyMode); err != nil {
		return nil, err
	}
	bin, err := binaries()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(ctx)
	cl := &Cluster{cfg: cfg, c: cfg.Env.Client, podCIDRs: map[string]netip.Prefix{}, ctx: ctx, cancel: cancel, pods: map[string]*Pod{}}
	defer func() {
		if err != nil {
			cl.Close()
		}
	}()
	if err := cl.grant(ctx); err != nil {
		return nil, err
	}
	if err := cl.startControllerManager(ctx, bin); err != nil {
		return nil, err
	}
	if err := cl.waitPodCIDRs(ctx, 30*time.Second); err != nil {
		return nil, err
	}
	if err := cl.route(); err != nil {
		return nil, err
	}
	if cfg.Workloads {
		if err := cl.startScheduler(ctx, bin); err != nil {
			return nil, err
		}
	}
	// One identity for every node's kube-proxy, as the DaemonSet's
	// ServiceAccount is.
	proxyKubeconfig, err := cl.kubeconfig(ctx, "kube-proxy")
	if err != nil {
		return nil, err
	}
	for _, n := range cfg.Nodes {
		if err := cl.startProxy(bin, proxyKubeconfig, n); err != nil {
			return nil, err
		}
	}
	for _, n := range cfg.Nodes {
		if err := cl.waitProxy(ctx, n, 30*time.Second); err != nil {
			return nil, err
		}
	}
	cl.kubelet = newKubelet(ctx, cl)
	return cl, nil
}

// check names the missing Debian package of what the mode drives.
func check(mode string) error {
	tools := map[string]string{"conntrack": "conntrack", "/usr/lib/cni/ptp": "containernetworking-plugins", "/usr/lib/cni/host-local": "containernetworking-plugins"}
	if mode == IPTables {
		tools["iptables-restore"], tools["ip6tables-restore"] = "iptables", "iptables"
	} else {
		tools["nft"] = "nftables"
	}
	var missing []string
	for tool, pkg := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", tool, pkg))
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return fmt.Errorf("kube-proxy in %s mode and the lab's CNI need %s: run `make deps`", mode, strings.Join(missing, ", "))
	}
	return nil
}

// binaries returns the folder holding kube-proxy, kube-controller-manager
// and kube-scheduler, or which make target builds them.
func binaries() (string, error) {
	dir, err := apiserver.BinDir()
	if err != nil {
		return "", err
	}
	for _, b := range []string{"kube-proxy", "kube-controller-manager", "kube-scheduler"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run `make k8s-binaries` (it builds it from source)", b, dir)
		}
	}
	return dir, nil
}

// grant makes the identities the components run as, bound to the roles a
// cluster gives them: kube-proxy to system:node-proxier, the controller
// manager to system:kube-controller-manager (it then runs each controller
// under that controller's own ServiceAccount, as kubeadm's does), the
// scheduler to system:kube-scheduler and system:volume-scheduler.
func (cl *Cluster) grant(ctx context.Context) error {
	for sa, roles := range map[string][]string{
		"kube-proxy":              {"system:node-proxier"},
		"kube-controller-manager": {"system:kube-controller-manager"},
		"kube-scheduler":          {"system:kube-scheduler", "system:volume-scheduler"},
	} {
		if err := cl.cfg.Env.Grant(ctx, sa, roles...); err != nil {
			return err
		}
	}
	return nil
}

// kubeconfig writes a kubeconfig of ServiceAccount kube-system/sa.
func (cl *Cluster) kubeconfig(ctx context.Context, sa string) (string, error) {
	return cl.cfg.Env.WriteKubeconfig(ctx, cl.cfg.Dir, metav1.NamespaceSystem, sa)
}

// startControllerManager runs the EndpointSlice and node IPAM controllers
// (nothing else: no node lifecycle controller, which would taint nodes
// whose kubelet never posts a heartbeat) on this machine, the control
// plane host.
func (cl *Cluster) startControllerManager(ctx context.Context, bin string) error {
	kc, err := cl.kubeconfig(ctx, "kube-controller-manager")
	if err != nil {
		return err
	}
	controllers := "endpointslice-controller,node-ipam-controller"
	if cl.cfg.Workloads {
		// The node lifecycle controller lifts the not-ready taint a
		// kubelet registers with, and marks nodes whose kubelet stops.
		controllers += ",deployment-controller,replicaset-controller,daemonset-controller,serviceaccount-controller,root-ca-certificate-publisher-controller,node-lifecycle-controller"
	}
	return cl.run("kube-controller-manager", nil, filepath.Join(bin, "kube-controller-manager"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--controllers="+controllers,
		"--use-service-account-credentials", "--leader-elect=false", "--secure-port=0",
		"--allocate-node-cidrs", "--cluster-cidr="+cl.cfg.ClusterCIDR.String(), "--node-cidr-mask-size=24",
		"--service-cluster-ip-range="+cl.cfg.ServiceCIDR.String(), "--v=2")
}

// startScheduler runs kube-scheduler on this machine, the control plane
// host, as ServiceAccount kube-system/kube-scheduler.
func (cl *Cluster) startScheduler(ctx context.Context, bin string) error {
	kc, err := cl.kubeconfig(ctx, "kube-scheduler")
	if err != nil {
		return err
	}
	return cl.run("kube-scheduler", nil, filepath.Join(bin, "kube-scheduler"),
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--leader-elect=false", "--secure-port=0", "--v=2")
}

// run starts a process (inside namespace ns if not nil) logging to Dir.
func (cl *Cluster) run(name string, ns *netlab.Host, path string, args ...string) error {
	argv := append([]string{path}, args...)
	if ns != nil {
		argv = append([]string{"ip", "netns", "exec", ns.Name}, argv...)
	}
	p, err := proc.Start(name, filepath.Join(cl.cfg.Dir, name+".log"), nil, argv...)
	if err != nil {
		return err
	}
	cl.procs = append(cl.procs, p)
	return nil
}

// exited returns the named process's state and last log lines if it has
// ended, else "".
func (cl *Cluster) exited(name string) string {
	for _, p := range cl.procs {
		if p.Name == name {
			return p.Ended()
		}
	}
	return ""
}

// waitPodCIDRs waits until node IPAM has given every node a pod CIDR.
func (cl *Cluster) waitPodCIDRs(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		var missing []string
		for _, n := range cl.cfg.Nodes {
			if _, ok := cl.podCIDRs[n]; ok {
				continue
			}
			var node corev1.Node
			if err := cl.c.Get(ctx, client.ObjectKey{Name: n}, &node); err != nil {
				return fmt.Errorf("node %s: %w", n, err)
			}
			if p, err := netip.ParsePrefix(node.Spec.PodCIDR); err == nil {
				cl.podCIDRs[n] = p
				continue
			}
			missing = append(missing, n)
		}
		if len(missing) == 0 {
			return nil
		}
		if msg := cl.exited("kube-controller-manager"); msg != "" {
			return errors.New(msg)
		}
		// Node IPAM says at once when the cluster CIDR has no room left.
		var events corev1.EventList
		if err := cl.c.List(ctx, &events, client.InNamespace(metav1.NamespaceDefault)); err == nil {
			for _, e := range events.Items {
				if e.InvolvedObject.Kind == "Node" && slices.Contains(missing, e.InvolvedObject.Name) && e.Reason == "CIDRNotAvailable" {
					return fmt.Errorf("node %s has no spec.podCIDR: kube-controller-manager's node IPAM controller says %s (%s): cluster CIDR %s has no free /24 for it",
						e.InvolvedObject.Name, e.Reason, e.Message, cl.cfg.ClusterCIDR)
				}
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node(s) %s have no spec.podCIDR after %s: kube-controller-manager's node IPAM controller gave none (log %s)",
				strings.Join(missing, ", "), timeout, filepath.Join(cl.cfg.Dir, "kube-controller-manager.log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// route is the lab's CNI between nodes (host-gw): every node forwards and
// reaches every other node's pod CIDR through that node's LAN address.
// Nodes send no ICMP redirects, as routers on a LAN should not: a packet
// for an address with no endpoint goes back out the link it came in on,
// and the redirect the kernel would send for it uses up the per-host ICMP
// rate limit that kube-proxy's reject (port unreachable) needs, so the
// client's connection would time out instead of being refused.
func (cl *Cluster) route() error {
	for _, n := range cl.cfg.Nodes {
		h := cl.cfg.Lab.Hosts[n]
		if cl.cfg.Workloads {
			// This host's link into the LAN takes these routes with it.
			if _, err := netlab.Run("ip", "route", "replace", cl.podCIDRs[n].String(), "via", h.IPv4.Addr().String()); err != nil {
				return err
			}
			// A hostNetwork pod's connection to a ClusterIP needs a
			// route before kube-proxy rewrites it; nodes here have no
			// default route.
			if _, err := h.In("ip", "route", "replace", cl.cfg.ServiceCIDR.String(), "dev", h.Link); err != nil {
				return err
			}
		}
		for _, s := range []string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.send_redirects=0", "net.ipv4.conf.default.send_redirects=0", "net.ipv4.conf." + h.Link + ".send_redirects=0"} {
			if _, err := h.In("sysctl", "-qw", s); err != nil {
				return err
			}
		}
		for _, m := range cl.cfg.Nodes {
			if m == n {
				continue
			}
			if _, err := h.In("ip", "route", "replace", cl.podCIDRs[m].String(), "via", cl.cfg.Lab.Hosts[m].IPv4.Addr().String()); err != nil {
				return err
			}
		}
	}
	return nil
}

// PodCIDR returns the pod CIDR node IPAM gave the node.
func (cl *Cluster) PodCIDR(node string) netip.Prefix { return cl.podCIDRs[node] }

// startProxy runs kube-proxy inside the node's namespace, as on the
// node's host network, as ServiceAccount kube-system/kube-proxy.
func (cl *Cluster) startProxy(bin, kc, node string) error {
	// Conntrack limits and timeouts are left as they are (0): they are
	// the machine's, shared with every other namespace.
	conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: %s
hostnameOverride: %s
mode: %s
clusterCIDR: %s
detectLocalMode: NodeCIDR
healthzBindAddress: 0.0.0.0:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [primary]
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
`, kc, node, cl.cfg.ProxyMode, cl.cfg.ClusterCIDR)
	path := filepath.Join(cl.cfg.Dir, "kube-proxy-"+node+".yaml")
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		return err
	}
	return cl.run("kube-proxy-"+node, cl.cfg.Lab.Hosts[node], filepath.Join(bin, "kube-proxy"), "--config="+path, "--v=2")
}

// waitProxy waits until the node's kube-proxy says on its healthz that it
// has synced its rules.
func (cl *Cluster) waitProxy(ctx context.Context, node string, timeout time.Duration) error {
	h := cl.cfg.Lab.Hosts[node]
	hc := h.HTTPClient(time.Second)
	url := fmt.Sprintf("http://%s:10256/healthz", h.IPv4.Addr())
	deadline := time.Now().Add(timeout)
	last := ""
	for {
		resp, err := hc.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		if msg := cl.exited("kube-proxy-" + node); msg != "" {
			return fmt.Errorf("kube-proxy on %s: %s", node, msg)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("kube-proxy on %s not healthy after %s (%s: %s); log %s", node, timeout, url, last, filepath.Join(cl.cfg.Dir, "kube-proxy-"+node+".log"))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Problems says which component has stopped, or "" if all run: the lab
// prints it, tests fail with it.
func (cl *Cluster) Problems() string { return proc.Ended(cl.procs...) }

// Watch reports, once each, every component that stops (its state and
// last log lines), until ctx ends or Close begins: the lab prints them.
func (cl *Cluster) Watch(ctx context.Context, every time.Duration, report func(string)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(cl.ctx, cancel)()
	reported := map[string]bool{}
	proc.Poll(ctx, every, func() {
		for _, p := range cl.procs {
			if msg := p.Ended(); msg != "" && !reported[p.Name] && cl.ctx.Err() == nil {
				reported[p.Name] = true
				report(msg)
			}
		}
	})
}

// Close deletes the pods' namespaces and stops every process, the
// kube-proxies first (their rules go with the nodes' namespaces).
func (cl *Cluster) Close() {
	cl.cancel()
	if cl.kubelet != nil {
		cl.kubelet.wait()
	}
	cl.mu.Lock()
	pods := make([]*Pod, 0, len(cl.pods))
	for _, p := range cl.pods {
		pods = append(pods, p)
	}
	cl.mu.Unlock()
	for _, p := range pods {
		p.teardown()
	}
	for _, p := range slices.Backward(cl.procs) {
		p.Stop(5 * time.Second)
	}
}
