// Command lab runs ironlb for real on a machine with no cluster: a real
// kube-apiserver and etcd with the chart installed, the controller and one
// speaker per "node" as their own processes under the chart's
// ServiceAccounts, nodes and a client as network namespaces on one LAN,
// and a LoadBalancer Service whose address the client reaches. It stays up
// until Ctrl-C (or exits at once with -oneshot) and tears everything down.
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
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
)

const (
	labNamespace = "ironlb-system"
	nsPrefix     = "ilblab-"
)

var nodes = []string{"node1", "node2", "node3"}

func main() {
	oneshot := flag.Bool("oneshot", false, "tear down as soon as the client reached the Service (for tests)")
	down := flag.Bool("down", false, "only remove leftovers of an earlier lab")
	flag.Parse()
	if *down {
		netlab.Cleanup(nsPrefix)
		return
	}
	if err := netlab.Check(); err != nil {
		fmt.Fprintln(os.Stderr, "lab: cannot run here:", err)
		os.Exit(2)
	}
	netlab.Cleanup(nsPrefix) // leftovers of a killed run
	err := run(*oneshot)
	netlab.Cleanup(nsPrefix)
	if err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

func step(format string, args ...any) { fmt.Printf("==> "+format+"\n", args...) }

func run(oneshot bool) error {
	start := time.Now()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root, err := apiserver.Root()
	if err != nil {
		return err
	}
	dir := filepath.Join(root, "bin", "lab")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	step("building the LAN: %s on a bridge, addresses 198.18.0.0/24 and 2001:db8:18::/64", strings.Join(append(nodes, "client"), ", "))
	lab, err := netlab.New(nsPrefix, netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:db8:18::/64"), 11, append(nodes, "client")...)
	if err != nil {
		return err
	}
	defer lab.Close()

	step("starting kube-apiserver and etcd (bin/k8s)")
	env, err := apiserver.NewBare()
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
	manifest, err := apiserver.Helm("template", "ironlb", "charts/ironlb", "--namespace", labNamespace, "--include-crds")
	if err != nil {
		return err
	}
	if _, err := apiserver.Apply(ctx, c, manifest); err != nil {
		return err
	}
	if err := waitCRDs(ctx, env); err != nil {
		return err
	}
	var key corev1.Secret
	if err := c.Get(ctx, types.NamespacedName{Namespace: labNamespace, Name: "ironlb-mesh-key"}, &key); err != nil {
		return err
	}
	keyFile := filepath.Join(dir, "mesh.key")
	if err := os.WriteFile(keyFile, key.Data["key"], 0o600); err != nil {
		return err
	}
	// Each component runs with its ServiceAccount's token: exactly the
	// permissions the chart grants it.
	saKubeconfig := func(sa string) (string, error) {
		_, data, err := env.ServiceAccount(ctx, labNamespace, sa)
		if err != nil {
			return "", err
		}
		path := filepath.Join(dir, sa+".kubeconfig")
		return path, os.WriteFile(path, data, 0o600)
	}

	for _, n := range nodes {
		if err := labkit.CreateNode(ctx, c, n, lab.Hosts[n]); err != nil {
			return err
		}
	}
	step("starting the controller as ServiceAccount %s/ironlb-controller", labNamespace)
	ctrlKubeconfig, err := saKubeconfig("ironlb-controller")
	if err != nil {
		return err
	}
	ctrlLog, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		return err
	}
	defer ctrlLog.Close()
	cmd := exec.Command(filepath.Join(root, "bin", "controller"),
		"--kubeconfig="+ctrlKubeconfig, "--leader-election-namespace="+labNamespace,
		"--metrics-bind-address=0", "--health-probe-bind-address=0")
	cmd.Stdout, cmd.Stderr = ctrlLog, ctrlLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start controller (run `make build` first): %w", err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()

	step("starting a speaker per node as ServiceAccount %s/ironlb-speaker", labNamespace)
	spkKubeconfig, err := saKubeconfig("ironlb-speaker")
	if err != nil {
		return err
	}
	var speakers []*labkit.Speaker
	defer func() {
		for _, s := range speakers {
			s.Stop()
		}
	}()
	for _, n := range nodes {
		s, err := labkit.StartSpeaker(root, dir, n, lab.Hosts[n], spkKubeconfig, keyFile)
		if err != nil {
			return err
		}
		speakers = append(speakers, s)
	}

	step("creating an IPAddressPool, an L2Advertisement and the LoadBalancer Service default/web")
	pool := &v1beta1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "lab"},
		Spec:       v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.200-198.18.0.220", "2001:db8:18::200-2001:db8:18::220"}},
	}
	if err := c.Create(ctx, pool); err != nil {
		return err
	}
	if err := c.Create(ctx, &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lab"}}); err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}},
		},
	}
	if err := c.Create(ctx, svc); err != nil {
		return err
	}
	vip, err := labkit.WaitIP(ctx, c, "default", "web", 30*time.Second)
	if err != nil {
		return fmt.Errorf("%w; see %s", err, ctrlLog.Name())
	}
	step("default/web has EXTERNAL-IP %s (%.1fs after start)", vip, time.Since(start).Seconds())
	for _, n := range nodes {
		if err := labkit.ServePods(ctx, lab.Hosts[n], n, vip); err != nil {
			return err
		}
	}

	step("the client (%s) fetches http://%s/ over layer 2", lab.Hosts["client"].IPv4.Addr(), vip)
	var body string
	deadline := time.Now().Add(20 * time.Second)
	for {
		body, err = labkit.Get(lab.Hosts["client"], vip, time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("client cannot reach %s: %w (see %s/speaker-*.log)", vip, err, dir)
		}
		time.Sleep(100 * time.Millisecond)
	}
	step("reachable %.1fs after start; the client got: %s", time.Since(start).Seconds(), strings.TrimSpace(body))

	_ = c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "web"}, svc)
	for _, cond := range svc.Status.Conditions {
		fmt.Printf("    %s=%s %s: %s\n", cond.Type, cond.Status, cond.Reason, cond.Message)
	}
	kubectl := filepath.Join(root, "bin", "k8s", "kubectl")
	show := exec.Command(kubectl, "--kubeconfig="+kubeconfig, "get", "ipaddresspools,l2advertisements,svc", "-A")
	show.Stdout, show.Stderr = os.Stdout, os.Stderr
	_ = show.Run()
	if oneshot {
		return nil
	}
	fmt.Printf("\nThe lab is up. Try:\n  %s --kubeconfig=%s get svc -A\n  ip netns exec %sclient curl http://%s/\nLogs: %s\nCtrl-C tears it down.\n", kubectl, kubeconfig, nsPrefix, vip, dir)
	<-ctx.Done()
	stop()
	return nil
}

// waitCRDs waits until the API server serves the ironlb kinds.
func waitCRDs(ctx context.Context, env *apiserver.Env) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pools v1beta1.IPAddressPoolList
		err := env.Client.List(ctx, &pools)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ironlb CRDs not served after 30s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
