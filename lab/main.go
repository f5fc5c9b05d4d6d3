// Command lab runs ironlb for real on a machine with no cluster: a real
// kube-apiserver and etcd, the controller as its own process, an example
// pool and Service, and prints what an admin would see. It stays up until
// Ctrl-C (or exits at once with -oneshot) and tears everything down.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
)

func main() {
	oneshot := flag.Bool("oneshot", false, "tear down as soon as the Service has its address (for tests)")
	flag.Parse()
	if err := run(*oneshot); err != nil {
		fmt.Fprintln(os.Stderr, "lab:", err)
		os.Exit(1)
	}
}

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

	step("starting kube-apiserver and etcd (bin/k8s)")
	env, err := apiserver.NewBare()
	if err != nil {
		return err
	}
	defer func() {
		step("stopping kube-apiserver and etcd")
		_ = env.Stop()
	}()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig(), 0o600); err != nil {
		return err
	}

	step("installing the chart (CRDs, RBAC, ServiceAccounts) into namespace " + labNamespace)
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: labNamespace}}); err != nil {
		return err
	}
	manifest, err := apiserver.Helm("template", "ironlb", "charts/ironlb", "--namespace", labNamespace, "--include-crds")
	if err != nil {
		return err
	}
	if _, err := apiserver.Apply(ctx, env.Client, manifest); err != nil {
		return err
	}
	if err := waitCRDs(ctx, env); err != nil {
		return err
	}
	// The controller runs with its ServiceAccount's token, exactly the
	// permissions the chart grants it.
	_, saKubeconfig, err := env.ServiceAccount(ctx, labNamespace, "ironlb-controller")
	if err != nil {
		return err
	}
	ctrlKubeconfig := filepath.Join(dir, "controller.kubeconfig")
	if err := os.WriteFile(ctrlKubeconfig, saKubeconfig, 0o600); err != nil {
		return err
	}

	step("starting the ironlb controller (bin/controller) as ServiceAccount " + labNamespace + "/ironlb-controller")
	ctrlLog, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		return err
	}
	defer ctrlLog.Close()
	cmd := exec.Command(filepath.Join(root, "bin", "controller"),
		"--kubeconfig="+ctrlKubeconfig, "--leader-election-namespace="+labNamespace,
		"--metrics-bind-address=0", "--health-probe-bind-address=127.0.0.1:0")
	cmd.Stdout, cmd.Stderr = ctrlLog, ctrlLog
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start controller (run `make build` first): %w", err)
	}
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
	}()

	step("creating an IPAddressPool and a LoadBalancer Service")
	c := env.Client
	pool := &v1beta1.IPAddressPool{
		ObjectMeta: metav1.ObjectMeta{Name: "lab"},
		Spec:       v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.100.0/28", "2001:db8:100::/124"}},
	}
	if err := c.Create(ctx, pool); err != nil {
		return err
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "default"},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": "web"},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
	if err := c.Create(ctx, svc); err != nil {
		return err
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "web"}, svc); err != nil {
			return err
		}
		if len(svc.Status.LoadBalancer.Ingress) > 0 {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("service default/web got no EXTERNAL-IP in 30s; see %s", ctrlLog.Name())
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	step(fmt.Sprintf("default/web has EXTERNAL-IP %s (%.1fs after start)", svc.Status.LoadBalancer.Ingress[0].IP, time.Since(start).Seconds()))
	// Pool usage is written in batches (at most every 500 ms per pool).
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		if err := c.Get(ctx, types.NamespacedName{Name: "lab"}, pool); err == nil && pool.Status.Assigned > 0 {
			break
		}
	}
	kubectl := filepath.Join(root, "bin", "k8s", "kubectl")
	show := exec.Command(kubectl, "--kubeconfig="+kubeconfig, "get", "ipaddresspools,svc", "-A")
	show.Stdout, show.Stderr = os.Stdout, os.Stderr
	_ = show.Run()
	if oneshot {
		return nil
	}
	fmt.Printf("\nThe lab is up. Try:\n  %s --kubeconfig=%s get svc -A\nController log: %s\nCtrl-C tears it down.\n", kubectl, kubeconfig, ctrlLog.Name())
	<-ctx.Done()
	stop()
	return nil
}

func step(msg string) { fmt.Printf("==> %s\n", msg) }

const labNamespace = "ironlb-system"

// waitCRDs waits until the API server serves the ironlb kinds.
func waitCRDs(ctx context.Context, env *apiserver.Env) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pools v1beta1.IPAddressPoolList
		if err := env.Client.List(ctx, &pools); err == nil {
			return nil
		} else if time.Now().After(deadline) {
			return fmt.Errorf("ironlb CRDs not served after 30s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
