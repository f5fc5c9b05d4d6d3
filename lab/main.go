// Command lab runs ironlb for real on a machine with no cluster: a real
// kube-apiserver and etcd with the chart installed, kube-controller-manager,
// kube-scheduler, and per node (a network namespace) a kube-proxy, a
// containerd and a kubelet that run the chart's speaker DaemonSet and
// controller Deployment as real pods from the image (with -processes: the
// controller and one speaker per node as host processes under the chart's
// ServiceAccounts), a client and an FRR router as network namespaces
// on one LAN, a second client behind the router, and two LoadBalancer
// Services: one the LAN client reaches over layer 2, one the client behind
// the router reaches over BGP. It stays up until Ctrl-C (or exits at once
// with -oneshot) and tears everything down. With -failover it starts no
// lab but cuts links in the running one (`make lab-failover`).
package main

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/datapath"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/kubelet"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
)

const (
	labNamespace = "ironlb-system"
	nsPrefix     = "ilblab-"
	routerASN    = 64512
	nodeASN      = 64513
	bgpPassword  = "lab-bgp-secret"
)

var nodes = []string{"node1", "node2", "node3"}

func main() {
	oneshot := flag.Bool("oneshot", false, "tear down as soon as the client reached the Service (for tests)")
	down := flag.Bool("down", false, "only remove leftovers of an earlier lab")
	processes := flag.Bool("processes", false, "run the controller and speakers as host processes, not the chart's pods from the image on real kubelets")
	failover := flag.Bool("failover", false, "start no lab: cut node links in the running one and print each client's outage")
	runs := flag.Int("runs", 1, "with -failover: how many times")
	flag.Parse()
	if *down {
		if root, err := apiserver.Root(); err == nil {
			sweepNodes(filepath.Join(root, "bin", "lab", "nodes"))
		}
		netlab.Cleanup(nsPrefix)
		return
	}
	if *failover {
		if err := runFailover(*runs); err != nil {
			fmt.Fprintln(os.Stderr, "lab -failover:", err)
			os.Exit(1)
		}
		return
	}
	if err := netlab.Check(); err != nil {
		fmt.Fprintln(os.Stderr, "lab: cannot run here:", err)
		os.Exit(2)
	}
	netlab.Cleanup(nsPrefix) // leftovers of a killed run
	restoreTTY := foreground()
	err := run(*oneshot, !*processes)
	netlab.Cleanup(nsPrefix)
	restoreTTY()
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

// apiAddr is where the API server serves when the pods run from the
// image: on the LAN, as a control-plane host next to the nodes, so that
// speakers on the nodes' host networks reach it.
var apiAddr = netip.MustParsePrefix("198.18.0.250/24")

func run(oneshot, fromImage bool) error {
	start := time.Now()
	// SIGHUP too: a closed terminal tears the lab down like Ctrl-C does.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	root, err := apiserver.Root()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "bin", "lab")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	record := filepath.Join(dir, "lab.json") // written once the lab is up
	_ = os.Remove(record)                    // a killed lab's

	step("building the LAN: %s on a bridge, addresses 198.18.0.0/24 and 2001:db8:18::/64; client2 behind the router on 203.0.113.0/30", strings.Join(append(nodes, "client", "router"), ", "))
	lab, err := netlab.New(nsPrefix, netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:db8:18::/64"), 11, append(nodes, "client", "router")...)
	if err != nil {
		return err
	}
	defer lab.Close()
	client2, err := lab.AddBehind("client2", "router", netip.MustParsePrefix("203.0.113.0/30"))
	if err != nil {
		return err
	}
	rtrHost := lab.Hosts["router"]
	var neighbors []frr.NeighborConf
	for _, n := range nodes {
		// The router is the nodes' gateway, for the replies to client2.
		if _, err := lab.Hosts[n].In("ip", "route", "replace", "default", "via", rtrHost.IPv4.Addr().String()); err != nil {
			return err
		}
		neighbors = append(neighbors, frr.NeighborConf{Addr: lab.Hosts[n].IPv4.Addr(), ASN: nodeASN, Password: bgpPassword, BFD: true})
	}
	step("starting FRR (zebra, bgpd, bfdd) in the router, AS %d, one eBGP neighbor with BFD per node", routerASN)
	router, err := frr.Start(rtrHost.Name, filepath.Join(dir, "frr"), frr.BGPConfig(routerASN, rtrHost.IPv4.Addr(), neighbors))
	if err != nil {
		return fmt.Errorf("%w (run `make deps` to install FRR)", err)
	}
	defer router.Close()

	image, archive := "", ""
	nodesDir := filepath.Join(dir, "nodes")
	if fromImage {
		archive = filepath.Join(root, "bin", "image", "ironlb-linux-"+goruntime.GOARCH+".tar")
		if err := kubelet.Check(); err != nil {
			return fmt.Errorf("%w (or run the lab with -processes)", err)
		}
		if image, err = kubelet.ArchiveTag(archive); err != nil {
			return fmt.Errorf("%w: run `make image` (`make lab` does), or the lab with -processes", err)
		}
		sweepNodes(nodesDir) // a killed lab's
		_ = os.RemoveAll(nodesDir)
	}
	if err := lab.AttachThisHost(apiAddr); err != nil {
		return err
	}
	step("starting kube-apiserver and etcd (bin/k8s) on %s, on the LAN as a control-plane host", apiAddr.Addr())
	newAPIServer := apiserver.NewBareOn
	if fromImage {
		newAPIServer = apiserver.NewForKubelets
	}
	env, err := newAPIServer(apiAddr.Addr().String())
	if err != nil {
		return err
	}
	defer func() {
		step("stopping everything")
		_ = env.Stop()
	}()
	c := env.Client
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig(), 0o600); err != nil {
		return err
	}

	step("installing the chart (CRDs, RBAC, ServiceAccounts, mesh key) into namespace %s", labNamespace)
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: labNamespace}}); err != nil {
		return err
	}
	helmArgs := []string{"template", "ironlb", "charts/ironlb", "--namespace", labNamespace, "--include-crds"}
	if fromImage {
		i := strings.LastIndex(image, ":")
		helmArgs = append(helmArgs, "--set", "image.repository="+image[:i], "--set", "image.tag="+image[i+1:])
	}
	manifest, err := apiserver.Helm(helmArgs...)
	if err != nil {
		return err
	}
	if _, err := apiserver.Apply(ctx, c, manifest); err != nil {
		return err
	}
	if err := waitCRDs(ctx, env); err != nil {
		return err
	}
	for _, n := range nodes {
		if err := labkit.CreateNode(ctx, c, n, lab.Hosts[n]); err != nil {
			return err
		}
	}
	if fromImage {
		step("starting kube-controller-manager (EndpointSlices, the nodes' pod CIDRs, Deployments, DaemonSets, node lifecycle), kube-scheduler, and a kube-proxy per node (nftables mode, in the node's namespace, as system:node-proxier)")
	} else {
		step("starting kube-controller-manager (EndpointSlices from Pods, the nodes' pod CIDRs) and a kube-proxy per node (nftables mode, in the node's namespace, as system:node-proxier)")
	}
	dp, err := datapath.Start(ctx, datapath.Config{Env: env, Lab: lab, Nodes: nodes, Dir: filepath.Join(dir, "datapath"), Workloads: fromImage})
	if err != nil {
		return err
	}
	defer dp.Close()
	// A component that stops later is said at once, with why.
	go dp.Watch(ctx, time.Second, func(r string) { fmt.Fprintln(os.Stderr, "lab: "+r) })
	var cidrs []string
	for _, n := range nodes {
		cidrs = append(cidrs, n+" "+dp.PodCIDR(n).String())
	}
	step("kube-proxy is healthy on every node; pod CIDRs %s, routed between the nodes", strings.Join(cidrs, ", "))
	logs := "Logs: " + dir
	if fromImage {
		running, stop, err := startNodes(ctx, env, dp, lab, nodesDir, archive)
		defer stop()
		if err != nil {
			return err
		}
		logs = fmt.Sprintf("Logs: pods' in %s/NODE/pods, kubelet's and containerd's in %s/NODE/logs; FRR: %s", nodesDir, nodesDir, router.Dir)
		// A pod that restarts or turns unready later is said at once,
		// with why; the kubelets restart it.
		go kubelet.Watch(ctx, c, labNamespace, running, time.Second, func(r string) { fmt.Fprintln(os.Stderr, "lab: "+r) })
	} else {
		stop, err := startProcesses(ctx, env, root, dir, lab)
		defer stop()
		if err != nil {
			return err
		}
	}

	step("creating pools lan (layer 2) and routed (BGP), an L2Advertisement, a BGPPeer with BFDProfile fast and its password Secret, a BGPAdvertisement")
	for _, o := range labConfig(rtrHost.IPv4.Addr()) {
		if err := c.Create(ctx, o); err != nil {
			return err
		}
	}
	step("creating the LoadBalancer Services default/web (pool lan) and default/web-bgp (pool routed)")
	vips := map[string]netip.Addr{}
	for _, name := range []string{"web", "web-bgp"} {
		if err := c.Create(ctx, labService(name)); err != nil {
			return err
		}
	}
	for _, name := range []string{"web", "web-bgp"} {
		vip, err := labkit.WaitIP(ctx, c, "default", name, 30*time.Second)
		if err != nil {
			return fmt.Errorf("%w; %s", err, logs)
		}
		vips[name] = vip
		step("default/%s has EXTERNAL-IP %s (%.1fs after start)", name, vip, time.Since(start).Seconds())
		var pods []*datapath.Pod
		for _, n := range nodes {
			p, err := dp.AddPod(ctx, datapath.PodSpec{Namespace: "default", Name: name + "-" + n, Node: n, Labels: map[string]string{"app": name}})
			if err != nil {
				return err
			}
			pods = append(pods, p)
		}
		took, err := dp.WaitEndpoints(ctx, "default", name, 30*time.Second, pods...)
		if err != nil {
			return err
		}
		step("pods %s-node1..3 run, one per node; kube-controller-manager listed them ready in the Service's EndpointSlice %s later", name, took.Round(time.Millisecond))
	}
	for _, r := range []struct {
		svc, how string
		from     *netlab.Host
	}{{"web", "layer 2", lab.Hosts["client"]}, {"web-bgp", "BGP, through the router", client2}} {
		vip := vips[r.svc]
		step("%s (%s) fetches http://%s/ over %s", r.from.Name, r.from.IPv4.Addr(), vip, r.how)
		body, err := fetch(ctx, r.from, vip)
		if err != nil {
			return fmt.Errorf("%s cannot reach %s: %w (%s)", r.from.Name, vip, err, logs)
		}
		a, err := datapath.ParseAnswer(body)
		if err != nil {
			return err
		}
		step("reachable %.1fs after start; %s was answered by %s", time.Since(start).Seconds(), r.from.Name, a)
		fmt.Println("    " + path(lab, dp, r.from, vip, a))
	}
	if out, err := router.Vtysh("show ip route bgp"); err == nil {
		fmt.Printf("    the router's BGP routes (vtysh):\n%s", indent(out))
	}

	for _, name := range []string{"web", "web-bgp"} {
		var svc corev1.Service
		_ = c.Get(ctx, types.NamespacedName{Namespace: "default", Name: name}, &svc)
		for _, cond := range svc.Status.Conditions {
			fmt.Printf("    %s %s=%s %s: %s\n", name, cond.Type, cond.Status, cond.Reason, cond.Message)
		}
	}
	kubectl := filepath.Join(root, "bin", "k8s", "kubectl")
	show := exec.Command(kubectl, "--kubeconfig="+kubeconfig, "get", "ipaddresspools,l2advertisements,bgppeers,bgpnodestatuses,svc", "-A")
	show.Stdout, show.Stderr = os.Stdout, os.Stderr
	_ = show.Run()
	if oneshot {
		return nil
	}
	if err := (&labkit.Lab{Hosts: lab.Hosts, Nodes: nodes, LAN: vips["web"], Routed: vips["web-bgp"], FRRDir: router.Dir}).Save(record); err != nil {
		return err
	}
	defer os.Remove(record)
	fmt.Printf("\nThe lab is up. Try:\n  %s --kubeconfig=%s get svc,bgpnodestatus -A\n  ip netns exec %sclient curl http://%s/\n  ip netns exec %sclient2 curl http://%s/\n  vtysh --vty_socket %s -c 'show bgp summary'\n  make lab-failover    # in another shell: cut a node's link, print both clients' outage, restore it\n%s\nCtrl-C tears it down.\n",
		kubectl, kubeconfig, nsPrefix, vips["web"], nsPrefix, vips["web-bgp"], router.Dir, logs)
	<-ctx.Done()
	// The teardown runs with signals still caught: a second Ctrl-C does
	// not cut it short and leave namespaces behind.
	step("Ctrl-C: tearing down")
	return nil
}
