//go:build bench

package bench

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"

	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/metallb"
	"github.com/ironlb/ironlb/test/proc"
	"go.uber.org/zap/zapcore"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

var (
	burstWriters = flag.Int("burst-writers", 8, "parallel writers creating Services as fast as they can")
	burstPairs   = flag.Int("burst-pairs", 3, "rounds of phases (plain client, plain watcher, ironlb), each phase on a fresh API server")
	burstProfile = flag.String("burst-cpuprofile", "", "write a CPU profile of the ironlb phases here")
	burstMetalLB = flag.Bool("burst-metallb", false, "also measure MetalLB's controller (bin/peers/metallb-controller, `make peers`)")
	burstRestart = flag.Bool("burst-restart", false, "after each controller's burst, restart it: time until a new Service gets its address, and addresses changed")
)

// burstPhase is one closed-loop burst: writers goroutines create n
// Services in ns as fast as they can (each waits for its create, and
// after it runs after, before its next create); the times the Services'
// first ingress IPs are seen in a watch give create-to-IP latencies.
func burstPhase(ctx context.Context, t *testing.T, cs kubernetes.Interface, name, ns string, class *string, n, writers int, after func(*corev1.Service) error) (*phase, time.Duration) {
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	p := newPhase(name)
	done := make(chan struct{})
	watchIPs(ctx, t, cs, ns, p, done, n)
	var wg sync.WaitGroup
	start := time.Now()
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n; i += writers {
				s := service(ns, i, class)
				p.mu.Lock()
				p.created[s.Name] = time.Now()
				p.mu.Unlock()
				created, err := cs.CoreV1().Services(ns).Create(ctx, s, metav1.CreateOptions{})
				if err != nil {
					t.Errorf("%s: create: %v", name, err)
					return
				}
				p.mu.Lock()
				p.createdDone[s.Name] = time.Now()
				p.mu.Unlock()
				if after != nil {
					if err := after(created); err != nil {
						t.Errorf("%s: %v", name, err)
						return
					}
				}
			}
		}()
	}
	wg.Wait()
	select {
	case <-done:
	case <-time.After(waitFor(n)):
		t.Fatalf("%s: only %d of %d Services got an IP", name, len(p.latencies()), n)
	}
	return p, time.Since(start)
}

// cpuTime is this process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type burstResult struct {
	p99, p50, total time.Duration
	writes          string
	cpu             time.Duration // this process's CPU per Service in the phase
	restart         string        // what restartOn saw, with -burst-restart
}

// TestBenchControllerBurst is issue 18's burst: per round, the plain
// client (create, then write the status itself: the API server's limit),
// the plain watcher (a raw watch and one status write per ADDED event:
// the least a controller driven by a watch does) and ironlb's controller
// (in this process, as in production), each on a fresh API server and fed
// by the same closed-loop writers, one after the other, the order rotating
// between rounds.
func TestBenchControllerBurst(t *testing.T) {
	ctrl.SetLogger(zap.New(zap.Level(zapcore.ErrorLevel)))
	n, writers := *nServices, *burstWriters
	var b strings.Builder
	fmt.Fprintf(&b, "burst: %d Services by %d closed-loop writers per phase, %d pairs, a fresh kube-apiserver+etcd (envtest) per phase, %d CPUs\n", n, writers, *burstPairs, runtime.NumCPU())
	fmt.Fprintf(&b, "%-6s %-8s %9s %9s %9s %10s  %s\n", "pair", "writer", "p50", "p99", "total", "CPU/Svc", "API writes per Service")
	var ratiosP99, ratiosTotal, watcherP99, watcherTotal, metallbP99, metallbTotal []float64
	var prof *os.File
	if *burstProfile != "" {
		var err error
		if prof, err = os.Create(*burstProfile); err != nil {
			t.Fatal(err)
		}
		defer prof.Close()
	}
	for pair := range *burstPairs {
		res := burstPair(t, pair, n, writers, prof)
		for _, w := range []string{"plain", "watcher", "ironlb", "metallb"} {
			r, ok := res[w]
			if !ok {
				continue
			}
			fmt.Fprintf(&b, "%-6d %-8s %9s %9s %9s %10s  %s\n", pair+1, w, ms(r.p50), ms(r.p99), r.total.Round(time.Millisecond), ms(r.cpu), r.writes)
			if r.restart != "" {
				fmt.Fprintf(&b, "%-6d %-8s %s\n", pair+1, w, r.restart)
			}
		}
		ratiosP99 = append(ratiosP99, ratio(res["ironlb"].p99, res["plain"].p99))
		ratiosTotal = append(ratiosTotal, ratio(res["ironlb"].total, res["plain"].total))
		watcherP99 = append(watcherP99, ratio(res["watcher"].p99, res["plain"].p99))
		watcherTotal = append(watcherTotal, ratio(res["watcher"].total, res["plain"].total))
		if m, ok := res["metallb"]; ok {
			metallbP99 = append(metallbP99, ratio(m.p99, res["plain"].p99))
			metallbTotal = append(metallbTotal, ratio(m.total, res["plain"].total))
		}
		prof = nil // one profile: the first pair's ironlb phase
	}
	fmt.Fprintf(&b, "ratio ironlb/plain client per pair: p99 %s; total %s\n", floats(ratiosP99), floats(ratiosTotal))
	fmt.Fprintf(&b, "ratio plain watcher/plain client per pair (any watch-driven controller's floor): p99 %s; total %s\n", floats(watcherP99), floats(watcherTotal))
	if len(metallbP99) > 0 {
		fmt.Fprintf(&b, "ratio MetalLB v0.15.2/plain client per pair: p99 %s; total %s\n", floats(metallbP99), floats(metallbTotal))
	}
	t.Log("\n" + b.String())
	if *report != "" {
		f, err := os.OpenFile(*report, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
		if err == nil {
			fmt.Fprintf(f, "%s\n%s\n", time.Now().UTC().Format(time.RFC3339), b.String())
			f.Close()
		}
	}
}

func floats(fs []float64) string {
	var s []string
	for _, f := range fs {
		s = append(s, fmt.Sprintf("%.2fx", f))
	}
	return strings.Join(s, " ")
}

func burstPair(t *testing.T, pair, n, writers int, prof *os.File) map[string]burstResult {
	kinds := []string{"plain", "watcher", "ironlb"}
	if *burstMetalLB {
		kinds = append(kinds, "metallb")
	}
	var order []string
	for i := range kinds {
		order = append(order, kinds[(i+pair)%len(kinds)])
	}
	out := map[string]burstResult{}
	for _, w := range order {
		out[w] = burstOn(t, w, n, writers, prof)
	}
	return out
}

// burstOn runs one writer's burst on a fresh API server: a second phase
// on the same server would find etcd and the watch caches 1,000s of
// objects bigger, and be measured slower for it (seen: 10-40 %).
func burstOn(t *testing.T, w string, n, writers int, prof *os.File) burstResult {
	env, err := apiserver.New()
	if err != nil {
		t.Fatal(err)
	}
	defer env.Stop()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := rest.CopyConfig(env.Config)
	cfg.QPS, cfg.Burst = -1, 0
	cs := kubernetes.NewForConfigOrDie(cfg)

	var restart func() // stops the controller and starts it anew
	switch w {
	case "ironlb":
		stop := startIronlb(ctx, t, env, nil)
		restart = func() { stop(); stop = startIronlb(ctx, t, env, nil) }
	case "metallb":
		p, again := startMetalLB(ctx, t, env)
		restart = func() { p.Kill(); p.Wait(); p = again() }
	}
	time.Sleep(2 * time.Second) // the pool parsed, start-up settled

	writeStatus := statusWriter(ctx, cs, netip.MustParseAddr("198.18.0.0"))
	w0, cpu0 := writeCounts(ctx, cs), cpuTime()
	if w == "ironlb" && prof != nil {
		if err := pprof.StartCPUProfile(prof); err != nil {
			t.Fatal(err)
		}
	}
	var p *phase
	var total time.Duration
	switch w {
	case "plain":
		p, total = burstPhase(ctx, t, cs, "plain client", "plain", ptr.To(plainClass), n, writers, writeStatus)
	case "watcher":
		startReactiveWriter(ctx, t, cs, "reactive", 16)
		p, total = burstPhase(ctx, t, cs, "plain watcher", "reactive", ptr.To(plainClass), n, writers, nil)
	case "metallb":
		p, total = burstPhase(ctx, t, cs, "MetalLB", "metallb", nil, n, writers, nil)
	default:
		p, total = burstPhase(ctx, t, cs, "ironlb", "ironlb", nil, n, writers, nil)
	}
	if w == "ironlb" && prof != nil {
		pprof.StopCPUProfile()
	}
	cpu := cpuTime() - cpu0
	time.Sleep(time.Second) // trailing writes (events, pool status)
	l := p.latencies()
	r := burstResult{p50: pct(l, .5), p99: pct(l, .99), total: total, writes: diffCounts(w0, writeCounts(ctx, cs), n), cpu: cpu / time.Duration(n)}
	if *burstRestart && restart != nil {
		r.restart = restartOn(ctx, t, cs, w, restart)
	}
	return r
}

// restartOn restarts a controller whose Services (in ns) all have their
// addresses, creating a new Service as the old controller stops, and
// says how long after the stop that Service had its address and how many
// of the others' addresses changed.
func restartOn(ctx context.Context, t *testing.T, cs kubernetes.Interface, ns string, restart func()) string {
	t.Helper()
	ips := func() map[string]string {
		l, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]string{}
		for _, s := range l.Items {
			if len(s.Status.LoadBalancer.Ingress) > 0 {
				out[s.Name] = s.Status.LoadBalancer.Ingress[0].IP
			}
		}
		return out
	}
	before := ips()
	start := time.Now()
	restarted := make(chan struct{})
	go func() { restart(); close(restarted) }()
	probe := service(ns, 99999, nil)
	probe.Name = "after-restart"
	if _, err := cs.CoreV1().Services(ns).Create(ctx, probe, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var took time.Duration
	for {
		s, err := cs.CoreV1().Services(ns).Get(ctx, probe.Name, metav1.GetOptions{})
		if err == nil && len(s.Status.LoadBalancer.Ingress) > 0 {
			took = time.Since(start)
			break
		}
		if limit := waitFor(len(before)); time.Since(start) > limit {
			t.Fatalf("%s: the Service created at the restart has no address after %s", ns, limit)
		}
		// Fine-grained while a controller may be quick; then gentle on
		// the API server the other controller is catching up on.
		if time.Since(start) < 5*time.Second {
			time.Sleep(2 * time.Millisecond)
		} else {
			time.Sleep(50 * time.Millisecond)
		}
	}
	<-restarted
	time.Sleep(2 * time.Second) // whatever the new controller would rewrite
	after, changed := ips(), 0
	for name, ip := range before {
		if after[name] != ip {
			changed++
		}
	}
	return fmt.Sprintf("restart with %d Services: new Service's address %s after the stop; addresses changed: %d", len(before), took.Round(time.Millisecond), changed)
}

// startMetalLB installs MetalLB's CRDs (from its module, as built by
// hack/peers.sh), a pool of the same size as ironlb's, and runs its
// controller (bin/peers/metallb-controller) as its own process, webhooks
// off (args added), until the test ends; again starts another once that
// one is gone.
func startMetalLB(ctx context.Context, t *testing.T, env *apiserver.Env, args ...string) (p *proc.Proc, again func() *proc.Proc) {
	t.Helper()
	if err := metallb.Install(ctx, env.Client); err != nil {
		t.Fatal(err)
	}
	if err := metallb.Apply(ctx, env.Client, metallb.Pool("bench", "198.19.0.0/16")); err != nil {
		t.Fatalf("MetalLB IPAddressPool: %v", err)
	}
	dir := t.TempDir()
	kc := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kc, env.KubeConfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	again = func() *proc.Proc {
		p, err := metallb.StartController(dir, kc, append([]string{"--log-level=error"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { p.Kill(); p.Wait() })
		return p
	}
	return again(), again
}
