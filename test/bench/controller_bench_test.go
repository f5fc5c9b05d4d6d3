//go:build bench

// Package bench measures ironlb against the API server's own limit. It is
// behind the "bench" build tag: run it with `make bench-controller`.
package bench

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/controller"
	"github.com/ironlb/ironlb/test/apiserver"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

var (
	nServices = flag.Int("bench-services", 1000, "Services to create per phase")
	rate      = flag.Float64("bench-rate", 100, "Services created per second (open loop: the same offered load in every phase)")
	report    = flag.String("bench-report", "", "file to append the result table to")
)

const plainClass = "bench.example/plain"

var benchTimeout = 5 * time.Minute

// phase is one run: N creates, and the time each Service's IP shows up in
// a watch of Services.
type phase struct {
	name    string
	created map[string]time.Time
	seen    map[string]time.Time
	mu      sync.Mutex
}

func newPhase(name string) *phase {
	return &phase{name: name, created: map[string]time.Time{}, seen: map[string]time.Time{}}
}

func (p *phase) latencies() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Duration
	for k, c := range p.created {
		if s, ok := p.seen[k]; ok {
			out = append(out, s.Sub(c))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

func pct(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	i := int(q*float64(len(d))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(d) {
		i = len(d) - 1
	}
	return d[i]
}

// watchIPs records, for Services of ns, when an ingress IP first appears.
func watchIPs(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, p *phase, done chan<- struct{}, n int) {
	w, err := cs.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Error(err)
		return
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
			if _, ok := p.seen[s.Name]; !ok {
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
}

func service(ns string, i int, class *string) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: fmt.Sprintf("s%05d", i)},
		Spec: corev1.ServiceSpec{
			Type:                          corev1.ServiceTypeLoadBalancer,
			LoadBalancerClass:             class,
			AllocateLoadBalancerNodePorts: ptr.To(false),
			Selector:                      map[string]string{"app": "x"},
			Ports:                         []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// run creates n Services at a fixed rate, each in its own goroutine (an
// open-loop load: every phase is offered the same work, however slow the
// API server gets). afterCreate, if any, runs in the creating goroutine.
func run(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, p *phase, class *string, afterCreate func(*corev1.Service) error) time.Duration {
	done := make(chan struct{})
	watchIPs(ctx, t, cs, ns, p, done, *nServices)
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) / *rate)
	for i := range *nServices {
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := service(ns, i, class)
			t0 := time.Now()
			p.mu.Lock()
			p.created[s.Name] = t0
			p.mu.Unlock()
			created, err := cs.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{})
			if err != nil {
				t.Errorf("create: %v", err)
				return
			}
			if afterCreate != nil {
				if err := afterCreate(created); err != nil {
					t.Errorf("after create: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(benchTimeout):
		t.Fatalf("%s: only %d of %d Services got an IP", p.name, len(p.latencies()), *nServices)
	}
	return time.Since(start)
}

func TestBenchController(t *testing.T) {
	ctrl.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
	env, err := apiserver.New()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cs := kubernetes.NewForConfigOrDie(env.Config)
	for _, ns := range []string{"plain", "ironlb"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}

	// Phase 1: a plain client writes each status itself, right after its
	// create: no watch, no queue, no allocator. The API server's limit.
	w0 := writeCounts(ctx, cs)
	plain := newPhase("plain client (create, then write status)")
	next := netip.MustParseAddr("198.18.0.0")
	var ipMu sync.Mutex
	vip := corev1.LoadBalancerIPModeVIP
	plainTotal := run(ctx, t, cs, "plain", plain, ptr.To(plainClass), func(s *corev1.Service) error {
		ipMu.Lock()
		ip := next
		next = next.Next()
		ipMu.Unlock()
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String(), IPMode: &vip}}
		_, err := cs.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{})
		return err
	})

	w1 := writeCounts(ctx, cs)

	// Phase 2: ironlb's controller assigns.
	mcfg := rest.CopyConfig(env.Config)
	controller.TuneRESTConfig(mcfg)
	mgr, err := ctrl.NewManager(mcfg, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controller.Setup(mgr, controller.Options{Filter: controller.ClassFilter{Default: true}, Registry: ctrlmetrics.Registry}); err != nil {
		t.Fatal(err)
	}
	c, _ := client.New(env.Config, client.Options{Scheme: env.Scheme})
	if err := c.Create(ctx, &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.19.0.0/16"}}}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache sync")
	}
	time.Sleep(time.Second) // let the pool be parsed
	ours := newPhase("ironlb controller")
	if f := os.Getenv("BENCH_GOROUTINES"); f != "" {
		go func() {
			time.Sleep(8 * time.Second)
			out, _ := os.Create(f)
			_ = pprof.Lookup("goroutine").WriteTo(out, 1)
			out.Close()
		}()
	}
	oursTotal := run(ctx, t, cs, "ironlb", ours, nil, nil)
	time.Sleep(2 * time.Second) // let trailing writes (events, pool status) land
	w2 := writeCounts(ctx, cs)

	// No two Services share an address.
	var list corev1.ServiceList
	if err := c.List(ctx, &list, client.InNamespace("ironlb")); err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, s := range list.Items {
		for _, in := range s.Status.LoadBalancer.Ingress {
			if o, dup := seen[in.IP]; dup {
				t.Fatalf("%s held by %s and %s", in.IP, o, s.Name)
			}
			seen[in.IP] = s.Name
		}
	}

	var b strings.Builder
	fmt.Fprintf(&b, "N=%d Services created at %.0f/s (open loop), one kube-apiserver+etcd (envtest), %d CPUs\n", *nServices, *rate, runtime.NumCPU())
	fmt.Fprintf(&b, "%-44s %8s %8s %8s %10s\n", "phase", "p50", "p90", "p99", "total")
	pl, ol := plain.latencies(), ours.latencies()
	for _, r := range []struct {
		p     *phase
		l     []time.Duration
		total time.Duration
	}{{plain, pl, plainTotal}, {ours, ol, oursTotal}} {
		fmt.Fprintf(&b, "%-44s %8s %8s %8s %10s\n", r.p.name, ms(pct(r.l, .5)), ms(pct(r.l, .9)), ms(pct(r.l, .99)), r.total.Round(time.Millisecond))
	}
	fmt.Fprintf(&b, "ratio ironlb/plain: p50 %.2fx, p99 %.2fx, total %.2fx\n",
		ratio(pct(ol, .5), pct(pl, .5)), ratio(pct(ol, .99), pct(pl, .99)), ratio(oursTotal, plainTotal))
	fmt.Fprintf(&b, "API writes per Service, plain: %s\n", diffCounts(w0, w1, *nServices))
	fmt.Fprintf(&b, "API writes per Service, ironlb: %s\n", diffCounts(w1, w2, *nServices))
	if mfs, err := ctrlmetrics.Registry.Gather(); err == nil {
		for _, mf := range mfs {
			switch mf.GetName() {
			case "workqueue_queue_duration_seconds", "controller_runtime_reconcile_time_seconds", "ironlb_service_status_write_seconds":
				for _, m := range mf.GetMetric() {
					h := m.GetHistogram()
					if h == nil || h.GetSampleCount() == 0 {
						continue
					}
					var lbl []string
					for _, l := range m.GetLabel() {
						lbl = append(lbl, l.GetName()+"="+l.GetValue())
					}
					fmt.Fprintf(&b, "%s{%s}: n=%d mean=%.1fms\n", mf.GetName(), strings.Join(lbl, ","), h.GetSampleCount(), 1000*h.GetSampleSum()/float64(h.GetSampleCount()))
				}
			}
		}
	}
	t.Log("\n" + b.String())
	fmt.Println(b.String())
	if *report != "" {
		f, err := os.OpenFile(*report, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%s\n%s\n", time.Now().UTC().Format(time.RFC3339), b.String())
			f.Close()
		}
	}
}

// writeCounts reads the API server's own request counters for mutating
// verbs, keyed "VERB resource/subresource".
func writeCounts(ctx context.Context, cs kubernetes.Interface) map[string]float64 {
	raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
	if err != nil {
		return nil
	}
	out := map[string]float64{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "apiserver_request_total{") {
			continue
		}
		labels := line[strings.Index(line, "{")+1 : strings.LastIndex(line, "}")]
		get := func(k string) string {
			for _, kv := range strings.Split(labels, ",") {
				if strings.HasPrefix(kv, k+"=") {
					return strings.Trim(strings.TrimPrefix(kv, k+"="), `"`)
				}
			}
			return ""
		}
		verb := get("verb")
		if verb != "POST" && verb != "PUT" && verb != "PATCH" && verb != "DELETE" {
			continue
		}
		var v float64
		fmt.Sscan(line[strings.LastIndex(line, " ")+1:], &v)
		out[verb+" "+get("resource")+"/"+get("subresource")] += v
	}
	return out
}

func diffCounts(before, after map[string]float64, n int) string {
	var parts []string
	for k, v := range after {
		if d := v - before[k]; d > 0 {
			parts = append(parts, fmt.Sprintf("%s %.2f", k, d/float64(n)))
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.1fms", float64(d.Microseconds())/1000) }

func ratio(a, b time.Duration) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}
