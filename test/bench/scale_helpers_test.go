//go:build bench

package bench

import (
	"context"
	"fmt"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/mdreport"
)

// scalePool says what pool k holds: v4 only, v6 only or both.
func scalePool(k int) (v4, v6 bool) {
	switch {
	case k%10 < 4:
		return true, false
	case k%10 < 7:
		return false, true
	default:
		return true, true
	}
}

func scalePoolObject(k int) *v1beta1.IPAddressPool {
	v4, v6 := scalePool(k)
	var addrs []v1beta1.AddressRange
	if v4 {
		addrs = append(addrs, v1beta1.AddressRange(fmt.Sprintf("198.19.%d.0/22", 4*k)))
	}
	if v6 {
		addrs = append(addrs, v1beta1.AddressRange(fmt.Sprintf("2001:db8:64:%x::/118", k)))
	}
	return &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("pool%02d", k)}, Spec: v1beta1.IPAddressPoolSpec{Addresses: addrs}}
}

// scaleService is Service number i of ns: in pool i%20 (named by
// annotation); single-stack in a one-family pool, RequireDualStack in a
// two-family pool; in single-family pools four Services in ten share an
// address (one sharing key per group, each on its own port).
func scaleService(ns, name string, i int, class *string) *corev1.Service {
	k, j := i%scalePools, i/scalePools
	v4, v6 := scalePool(k)
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Annotations: map[string]string{v1beta1.AnnotationAddressPool: fmt.Sprintf("pool%02d", k)}},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:             class,
			AllocateLoadBalancerNodePorts: ptr.To(false),
			Selector:                      map[string]string{"app": "x"},
		},
	}
	port := int32(80)
	switch {
	case v4 && v6:
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
	default:
		s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol}
		if v6 {
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol}
		}
		s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
		if j%10 < 4 {
			s.Annotations[v1beta1.AnnotationAllowSharedIP] = fmt.Sprintf("%s-k%d-%d", ns, k, j/10)
			port = 8000 + int32(j%10)
		}
	}
	s.Spec.Ports = []corev1.ServicePort{{Port: port, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}
	return s
}

// scaleWatch records when Services of ns whose create was recorded in p
// first show an address; done is closed once n of them have.
func scaleWatch(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, p *phase, n int) <-chan struct{} {
	done := make(chan struct{})
	w, err := cs.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer w.Stop()
		count := 0
		for ev := range w.ResultChan() {
			if ev.Type != watch.Added && ev.Type != watch.Modified {
				continue
			}
			s := ev.Object.(*corev1.Service)
			if len(s.Status.LoadBalancer.Ingress) == 0 {
				continue
			}
			now := time.Now()
			p.mu.Lock()
			_, ours := p.created[s.Name]
			_, had := p.seen[s.Name]
			if ours && !had {
				p.seen[s.Name] = now
				count++
			}
			p.mu.Unlock()
			if count == n {
				close(done)
				return
			}
		}
	}()
	return done
}

// op is one paced API call.
type op func() error

// pace runs ops at rate per second, each in its own goroutine (an open
// loop: a slow call does not slow the offered load), and waits for all.
func pace(t *testing.T, rate float64, ops []op) time.Duration {
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) / rate)
	var errs sync.Map
	for i, o := range ops {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := o(); err != nil {
				errs.Store(i, err)
			}
		}()
	}
	wg.Wait()
	failed := 0
	errs.Range(func(k, v any) bool {
		if failed++; failed <= 10 {
			t.Errorf("op %v: %v", k, v)
		}
		return true
	})
	if failed > 0 {
		t.Fatalf("%d of %d API calls failed at %g/s: the API server cannot keep up with this rate here; lower -scale-rate", failed, len(ops), rate)
	}
	return time.Since(start)
}

func createOp(ctx context.Context, cs kubernetes.Interface, p *phase, s *corev1.Service, after func(*corev1.Service) error) op {
	return func() error {
		p.mu.Lock()
		p.created[s.Name] = time.Now()
		p.mu.Unlock()
		got, err := cs.CoreV1().Services(s.Namespace).Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			return err
		}
		p.mu.Lock()
		p.createdDone[s.Name] = time.Now()
		p.mu.Unlock()
		if after != nil {
			return after(got)
		}
		return nil
	}
}

// readProc samples a process; a process gone reads as zeros, which the
// report shows as such.
func readProc(pid int) mdreport.Proc {
	p, _ := mdreport.ReadProc(pid)
	return p
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// machine describes this host for the report.
// checkAddresses lists the Services of namespaces and fails on an address
// held by two Services that do not share one sharing key. It returns each
// Service's addresses and the number of distinct addresses.
func checkAddresses(ctx context.Context, t *testing.T, c client.Client, namespaces ...string) (map[string]string, int) {
	t.Helper()
	ips := map[string]string{}
	type holder struct{ name, key string }
	held := map[netip.Addr]holder{}
	for _, ns := range namespaces {
		var list corev1.ServiceList
		if err := c.List(ctx, &list, client.InNamespace(ns)); err != nil {
			t.Fatal(err)
		}
		for i := range list.Items {
			s := &list.Items[i]
			got := config.IngressIPs(s)
			ips[ns+"/"+s.Name] = fmt.Sprint(got)
			key := s.Annotations[v1beta1.AnnotationAllowSharedIP]
			for _, ip := range got {
				if h, dup := held[ip]; dup && (key == "" || h.key != key) {
					t.Errorf("duplicate: %s held by %s and %s/%s (sharing keys %q, %q)", ip, h.name, ns, s.Name, h.key, key)
				}
				held[ip] = holder{ns + "/" + s.Name, key}
			}
		}
	}
	return ips, len(held)
}

func latencyLine(name string, p *phase, total time.Duration) string {
	l := p.latencies()
	return fmt.Sprintf("| %s | %d | %s | %s | %s | %s | %s |", name, len(l), ms(pct(l, .5)), ms(pct(l, .9)), ms(pct(l, .99)), ms(pct(l, 1)), total.Round(time.Millisecond))
}

func waitDone(t *testing.T, name string, p *phase, n int, done <-chan struct{}, bound time.Duration) {
	t.Helper()
	select {
	case <-done:
	case <-time.After(bound):
		t.Fatalf("%s: only %d of %d Services got an address within %s after the last create", name, len(p.latencies()), n, bound)
	}
}

func (p *phase) firstCreate() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var first time.Time
	for _, c := range p.created {
		if first.IsZero() || c.Before(first) {
			first = c
		}
	}
	return first
}

func (p *phase) lastSeen() time.Time {
	p.mu.Lock()
	defer p.mu.Unlock()
	var last time.Time
	for _, s := range p.seen {
		if s.After(last) {
			last = s
		}
	}
	return last
}

// apiserverPID finds the kube-apiserver serving host (https://IP:PORT) by
// its command line, or 0.
func apiserverPID(host string) int {
	u, err := url.Parse(host) // envtest: https://127.0.0.1:PORT/
	if err != nil || u.Port() == "" {
		return 0
	}
	port := u.Port()
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		cmd := string(b)
		if strings.Contains(cmd, "kube-apiserver") && strings.Contains(cmd, "--secure-port="+port+"\x00") {
			return pid
		}
	}
	return 0
}
