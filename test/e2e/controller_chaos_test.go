package e2e

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
)

var controllerKills = flag.Int("controller-kills", 6, "leader kills in TestControllerChaos (make chaos uses 20)")

// controllerProc is one controller replica, a real bin/controller process.
type controllerProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	log  string
	from int64 // this process's part of the (shared, appended) log
}

// leads tells whether this process has acquired the leader lease.
func (p *controllerProc) leads() bool {
	b, err := os.ReadFile(p.log)
	if err != nil || int64(len(b)) < p.from {
		return false
	}
	return strings.Contains(string(b[p.from:]), "Successfully acquired lease")
}

func startController(t *testing.T, root, kubeconfig, logPath string) *controllerProc {
	t.Helper()
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	st, err := log.Stat()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "bin", "controller"), "--kubeconfig="+kubeconfig,
		"--leader-election-namespace=default", "--metrics-bind-address=0", "--health-probe-bind-address=0",
		// Short leases, so a crashed leader is replaced within seconds.
		"--leader-elect-lease-duration=2s", "--leader-elect-renew-deadline=1500ms", "--leader-elect-retry-period=250ms")
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start controller (make build): %v", err)
	}
	p := &controllerProc{cmd: cmd, done: make(chan struct{}), log: logPath, from: st.Size()}
	go func() { _ = cmd.Wait(); log.Close(); close(p.done) }()
	t.Cleanup(func() { _ = cmd.Process.Kill(); <-p.done })
	return p
}

// TestControllerChaos: two controller replicas; the leader is killed again
// and again (SIGKILL and SIGTERM in turn, so leadership moves both after a
// crash and after a clean release) and restarted at once, while Services
// are created and deleted. Nothing may be lost: no Service's address ever
// changes once seen, no address is ever held by two Services, and every
// Service ends with an address.
func TestControllerChaos(t *testing.T) {
	root, _ := apiserver.Root()
	env := apiserver.Start(t)
	c := env.Client
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, p := range []*v1beta1.IPAddressPool{
		// Room for every Service the churn can create: 25 a second, a
		// quarter deleted, two thirds wanting each family. With a /24, a
		// slow run (20 kills, each waiting for the next leader) filled
		// the pool and left Services pending for want of addresses.
		{ObjectMeta: metav1.ObjectMeta{Name: "v4"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.96.0/21"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "v6"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"2001:db8:100::/117"}}},
	} {
		if err := c.Create(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	logs := [2]string{filepath.Join(dir, "controller-a.log"), filepath.Join(dir, "controller-b.log")}
	replicas := [2]*controllerProc{startController(t, root, kubeconfig, logs[0]), startController(t, root, kubeconfig, logs[1])}
	defer func() {
		if t.Failed() {
			for _, l := range logs {
				b, _ := os.ReadFile(l)
				t.Logf("%s:\n%s", l, tail(string(b), 2000))
				if d := os.Getenv("IRONLB_KEEP_LOGS"); d != "" {
					_ = os.WriteFile(filepath.Join(d, filepath.Base(l)), b, 0o644)
				}
			}
		}
	}()

	// The observer: every address a Service is ever seen with, and every
	// moment two Services hold one address.
	var (
		mu         sync.Mutex
		first      = map[types.UID]string{}
		violations []string
	)
	observe := func() {
		var list corev1.ServiceList
		if err := c.List(ctx, &list, client.InNamespace("default")); err != nil {
			return
		}
		holder := map[string]string{}
		mu.Lock()
		defer mu.Unlock()
		for i := range list.Items {
			s := &list.Items[i]
			ips := config.IngressIPs(s)
			if len(ips) == 0 {
				continue
			}
			got := fmt.Sprint(ips)
			if was, ok := first[s.UID]; ok && was != got {
				violations = append(violations, fmt.Sprintf("%s changed from %s to %s", s.Name, was, got))
			} else if !ok {
				first[s.UID] = got
			}
			for _, ip := range ips {
				if other, dup := holder[ip.String()]; dup {
					violations = append(violations, fmt.Sprintf("%s held by %s and %s", ip, other, s.Name))
				}
				holder[ip.String()] = s.Name
			}
		}
	}
	var wg sync.WaitGroup
	churnDone := make(chan struct{})
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-churnDone:
				observe()
				return
			case <-time.After(50 * time.Millisecond):
				observe()
			}
		}
	}()
	created, deleted := 0, 0
	go func() {
		defer wg.Done()
		var live []string
		for i := 0; ; i++ {
			select {
			case <-churnDone:
				return
			case <-time.After(40 * time.Millisecond):
			}
			name := fmt.Sprintf("s%d", i)
			fams := []corev1.IPFamily{corev1.IPv4Protocol}
			policy := corev1.IPFamilyPolicySingleStack
			switch i % 3 {
			case 1:
				fams = []corev1.IPFamily{corev1.IPv6Protocol}
			case 2:
				fams, policy = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}, corev1.IPFamilyPolicyPreferDualStack
			}
			s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, IPFamilies: fams, IPFamilyPolicy: &policy,
					Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}}}}
			if err := c.Create(ctx, s); err == nil {
				live = append(live, name)
				created++
			}
			// Keep the pools from filling up: delete one in four.
			if i%4 == 3 && len(live) > 0 {
				k := rand.IntN(len(live))
				if err := c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: live[k]}}); err == nil {
					deleted++
				}
				live = append(live[:k], live[k+1:]...)
			}
		}
	}()

	transitions := func() int32 {
		var l coordinationv1.Lease
		if err := c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "ironlb-controller"}, &l); err != nil {
			return -1
		}
		return ptr.Deref(l.Spec.LeaseTransitions, 0)
	}
	time.Sleep(3 * time.Second)
	before := transitions()
	for k := range *controllerKills {
		// Kill the leader: SIGKILL (its lease must expire) and SIGTERM
		// (it releases the lease) in turn.
		i := -1
		for deadline := time.Now().Add(10 * time.Second); i < 0; time.Sleep(50 * time.Millisecond) {
			for j, r := range replicas {
				if r.leads() {
					i = j
				}
			}
			if time.Now().After(deadline) {
				t.Fatal("no controller replica became leader within 10s")
			}
		}
		sig := syscall.SIGKILL
		if k%2 == 1 {
			sig = syscall.SIGTERM
		}
		_ = replicas[i].cmd.Process.Signal(sig)
		<-replicas[i].done
		replicas[i] = startController(t, root, kubeconfig, logs[i])
		time.Sleep(time.Second)
	}
	close(churnDone)
	wg.Wait()
	after := transitions()

	// Every Service gets an address in the end.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var list corev1.ServiceList
		if err := c.List(ctx, &list, client.InNamespace("default")); err != nil {
			t.Fatal(err)
		}
		pending := 0
		for i := range list.Items {
			if list.Items[i].Spec.Type == corev1.ServiceTypeLoadBalancer && len(config.IngressIPs(&list.Items[i])) == 0 {
				pending++
			}
		}
		observe()
		if pending == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d Services still without an address 30s after the chaos", pending)
		}
		time.Sleep(200 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	summary := fmt.Sprintf("%d kills, %d leader changes, %d Services created, %d deleted, %d seen with addresses; %d violations",
		*controllerKills, after-before, created, deleted, len(first), len(violations))
	t.Log(summary)
	record(t, summary)
	for _, v := range violations {
		t.Error(v)
	}
	if after-before < int32(*controllerKills) {
		t.Errorf("only %d leader changes for %d leader kills", after-before, *controllerKills)
	}
}
