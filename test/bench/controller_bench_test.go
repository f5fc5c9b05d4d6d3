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
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/controller"
	"github.com/ironlb/ironlb/internal/app"
	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/metallb"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

var (
	nServices = flag.Int("bench-services", 1000, "Services to create per phase")
	rate      = flag.Float64("bench-rate", 60, "Services created per second (open loop: the same offered load in every phase)")
	report    = flag.String("bench-report", "", "file to append the result table to")
	pacedMLB  = flag.Bool("bench-metallb", false, "TestBenchController: also run MetalLB's controller (bin/peers/, `make peers`) as a fourth writer, for Services of its class")
	ownAPI    = flag.Bool("bench-own-apiserver", true, "TestBenchController: each writer on its own fresh API server (the burst's rule); false puts them all on one")
)

const plainClass = "bench.example/plain"

var benchTimeout = 5 * time.Minute

// waitFor is how long n Services may take to get their addresses: at
// least benchTimeout, and 10 a second (MetalLB's controller does 20).
func waitFor(n int) time.Duration { return max(benchTimeout, time.Duration(n)*100*time.Millisecond) }

// phase is one run: N creates, and the time each Service's IP shows up in
// a watch of Services.
type phase struct {
	name    string
	created map[string]time.Time
	// createdDone is when the create call returned: seen-createdDone is
	// the writer's own share, without the create's queueing.
	createdDone map[string]time.Time
	seen        map[string]time.Time
	mu          sync.Mutex
}

func newPhase(name string) *phase {
	return &phase{name: name, created: map[string]time.Time{}, createdDone: map[string]time.Time{}, seen: map[string]time.Time{}}
}

func (p *phase) latencies() []time.Duration { return p.since(p.created) }

func (p *phase) afterCreate() []time.Duration { return p.since(p.createdDone) }

func (p *phase) since(from map[string]time.Time) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []time.Duration
	for k, c := range from {
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

// stream is one kind of writer under test: Services created in its own
// namespace on its API server, with afterCreate (if any) run by the
// creating goroutine.
type stream struct {
	p           *phase
	env         *apiserver.Env
	cs          kubernetes.Interface
	ns          string
	class       *string
	afterCreate func(*corev1.Service) error
}

// run creates n Services per stream at a fixed total rate, round-robin
// across the streams, each create in its own goroutine: an open-loop load,
// and every stream sees the same machine at the same moment, so their
// ratio does not drift with it.
func run(ctx context.Context, t *testing.T, streams []*stream) time.Duration {
	var dones []chan struct{}
	for _, st := range streams {
		done := make(chan struct{})
		dones = append(dones, done)
		watchIPs(ctx, t, st.cs, st.ns, st.p, done, *nServices)
	}
	var wg sync.WaitGroup
	start := time.Now()
	interval := time.Duration(float64(time.Second) / *rate)
	for i := range *nServices * len(streams) {
		st := streams[i%len(streams)]
		time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := service(st.ns, i/len(streams), st.class)
			t0 := time.Now()
			st.p.mu.Lock()
			st.p.created[s.Name] = t0
			st.p.mu.Unlock()
			created, err := st.cs.CoreV1().Services(st.ns).Create(ctx, s, metav1.CreateOptions{})
			if err != nil {
				t.Errorf("create: %v", err)
				return
			}
			st.p.mu.Lock()
			st.p.createdDone[s.Name] = time.Now()
			st.p.mu.Unlock()
			if st.afterCreate != nil {
				if err := st.afterCreate(created); err != nil {
					t.Errorf("after create: %v", err)
				}
			}
		}()
	}
	wg.Wait()
	for i, done := range dones {
		select {
		case <-done:
		case <-time.After(waitFor(*nServices)):
			t.Fatalf("%s: only %d of %d Services got an IP", streams[i].p.name, len(streams[i].p.latencies()), *nServices)
		}
	}
	return time.Since(start)
}

// startReactiveWriter writes an ingress IP into every Service added to ns,
// from workers fed by one raw watch.
func startReactiveWriter(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, workers int) {
	w, err := cs.CoreV1().Services(ns).Watch(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	jobs := make(chan *corev1.Service, 10000)
	go func() {
		defer close(jobs)
		defer w.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-w.ResultChan():
				if !ok {
					return
				}
				if ev.Type == watch.Added {
					jobs <- ev.Object.(*corev1.Service)
				}
			}
		}
	}()
	write := statusWriter(ctx, cs, netip.MustParseAddr("198.18.128.0"))
	for range workers {
		go func() {
			for s := range jobs {
				if err := write(s); err != nil && ctx.Err() == nil {
					t.Errorf("reactive write: %v", err)
				}
			}
		}()
	}
}

// statusWriter returns a function that writes the next address, counting
// from first, into a Service's status, as a plain client or watcher does.
func statusWriter(ctx context.Context, cs kubernetes.Interface, first netip.Addr) func(*corev1.Service) error {
	var mu sync.Mutex
	next := first
	vip := corev1.LoadBalancerIPModeVIP
	return func(s *corev1.Service) error {
		mu.Lock()
		ip := next
		next = next.Next()
		mu.Unlock()
		s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip.String(), IPMode: &vip}}
		_, err := cs.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{})
		return err
	}
}

// startIronlb runs ironlb's controller in this process, as in production
// (its metrics into reg, if not nil), with one pool of 198.19.0.0/16 (made
// unless it exists), and waits for its caches. Each call makes a new
// manager: the controllers' names repeat. stop ends it and waits until it
// has.
func startIronlb(ctx context.Context, t *testing.T, env *apiserver.Env, reg prometheus.Registerer) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(ctx)
	mcfg := rest.CopyConfig(env.Config)
	app.TuneRESTConfig(mcfg)
	mgr, err := ctrl.NewManager(mcfg, ctrl.Options{Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: ctrlconfig.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controller.Setup(mgr, controller.Options{Filter: config.ClassFilter{Default: true}, Registry: reg}); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "bench"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.19.0.0/16"}}}); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	stopped := make(chan struct{})
	go func() { _ = mgr.Start(ctx); close(stopped) }()
	if !mgr.GetCache().WaitForCacheSync(ctx) {
		t.Fatal("cache sync")
	}
	return func() { cancel(); <-stopped }
}

func TestBenchController(t *testing.T) {
	ctrl.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var shared *apiserver.Env
	// on gives a writer its API server, with its namespace made: a fresh
	// one each, unless -bench-own-apiserver=false.
	on := func(st *stream) *stream {
		env := shared
		if env == nil {
			var err error
			if env, err = apiserver.New(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = env.Stop() })
			if !*ownAPI {
				shared = env
			}
		}
		st.env, st.cs = env, kubernetes.NewForConfigOrDie(env.Config)
		if _, err := st.cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: st.ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		return st
	}

	// Three writers, interleaved in one run:
	// - plain: the creating client writes the status itself right after
	//   its create: no watch, no queue, no allocator. The API server's limit.
	// - reactive: a raw watch of Services and a status write per ADDED
	//   event, 16 workers. The least any controller must do.
	// - ironlb: the controller, in this process, as in production.
	plain := on(&stream{p: newPhase("plain client (create, then write status)"), ns: "plain", class: ptr.To(plainClass)})
	plain.afterCreate = statusWriter(ctx, plain.cs, netip.MustParseAddr("198.18.0.0"))
	reactive := on(&stream{p: newPhase("plain watcher (watch, then write status)"), ns: "reactive", class: ptr.To(plainClass)})
	startReactiveWriter(ctx, t, reactive.cs, "reactive", 16)
	ours := on(&stream{p: newPhase("ironlb controller"), ns: "ironlb"})
	streams := []*stream{plain, reactive, ours}
	if *pacedMLB {
		// MetalLB takes its class only: ironlb keeps those with none.
		mlb := on(&stream{p: newPhase("MetalLB " + metallb.Version + " controller"), ns: "metallb", class: ptr.To(metallb.Class)})
		startMetalLB(ctx, t, mlb.env, "--lb-class="+metallb.Class)
		streams = append(streams, mlb)
	}

	startIronlb(ctx, t, ours.env, ctrlmetrics.Registry)
	time.Sleep(2 * time.Second) // let the pool be parsed and start-up settle
	var servers []kubernetes.Interface
	for i, st := range streams {
		if i == 0 || st.env != streams[0].env {
			servers = append(servers, st.cs)
		}
	}
	w0 := writeCounts(ctx, servers...)
	total := run(ctx, t, streams)
	time.Sleep(2 * time.Second) // let trailing writes (events, pool status) land
	w1 := writeCounts(ctx, servers...)

	// No two Services share an address.
	var list corev1.ServiceList
	if err := ours.env.Client.List(ctx, &list, client.InNamespace("ironlb")); err != nil {
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
	fmt.Fprintf(&b, "N=%d Services per writer, %d writers interleaved, %.0f creates/s in all (open loop), %d kube-apiserver+etcd (envtest), %d CPUs, %s total\n",
		*nServices, len(streams), *rate, len(servers), runtime.NumCPU(), total.Round(time.Millisecond))
	fmt.Fprintf(&b, "%-44s %26s %26s\n", "", "create sent -> IP seen", "create returned -> IP seen")
	fmt.Fprintf(&b, "%-44s %8s %8s %8s %8s %8s %8s\n", "writer", "p50", "p90", "p99", "p50", "p90", "p99")
	pl, rl, ol := plain.p.latencies(), reactive.p.latencies(), ours.p.latencies()
	for _, st := range streams {
		l, a := st.p.latencies(), st.p.afterCreate()
		fmt.Fprintf(&b, "%-44s %8s %8s %8s %8s %8s %8s\n", st.p.name, ms(pct(l, .5)), ms(pct(l, .9)), ms(pct(l, .99)), ms(pct(a, .5)), ms(pct(a, .9)), ms(pct(a, .99)))
	}
	fmt.Fprintf(&b, "ratio ironlb/plain client:  p50 %.2fx, p99 %.2fx\n", ratio(pct(ol, .5), pct(pl, .5)), ratio(pct(ol, .99), pct(pl, .99)))
	fmt.Fprintf(&b, "ratio ironlb/plain watcher: p50 %.2fx, p99 %.2fx\n", ratio(pct(ol, .5), pct(rl, .5)), ratio(pct(ol, .99), pct(rl, .99)))
	if len(streams) > 3 {
		ml := streams[3].p.latencies()
		fmt.Fprintf(&b, "ratio MetalLB/plain client:  p50 %.2fx, p99 %.2fx\n", ratio(pct(ml, .5), pct(pl, .5)), ratio(pct(ml, .99), pct(pl, .99)))
	}
	fmt.Fprintf(&b, "API writes per Service (all writers): %s\n", diffCounts(w0, w1, len(streams)**nServices))
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

// writeCounts reads the API servers' own request counters for mutating
// verbs, keyed "VERB resource/subresource", summed over the servers.
func writeCounts(ctx context.Context, servers ...kubernetes.Interface) map[string]float64 {
	out := map[string]float64{}
	for _, cs := range servers {
		raw, err := cs.CoreV1().RESTClient().Get().AbsPath("/metrics").DoRaw(ctx)
		if err != nil {
			continue
		}
		addWriteCounts(out, string(raw))
	}
	return out
}

// addWriteCounts adds one /metrics page's mutating request counts to out.
func addWriteCounts(out map[string]float64, raw string) {
	for _, line := range strings.Split(raw, "\n") {
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
