//go:build bench

package bench

import (
	"context"
	"flag"
	"fmt"
	"math/rand/v2"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/mdreport"
)

var (
	scaleServices = flag.Int("scale-services", 10000, "TestBenchScale: Services created for the controller process")
	scaleRatioN   = flag.Int("scale-ratio-services", 1000, "TestBenchScale: Services per writer in the interleaved ironlb/plain-client sample")
	scaleChurn    = flag.Int("scale-churn", 1000, "TestBenchScale: Services deleted, and as many created, in the churn phase")
	scaleRate     = flag.Float64("scale-rate", 25, "TestBenchScale: creates (and deletes) per second, open loop")
	scaleReport   = flag.String("scale-report", "", "markdown file whose controller section TestBenchScale (re)writes")
)

const scalePools = 20

// TestBenchScale: the controller as its own process (bin/controller)
// against a real API server, with 10,000 Services over 20 pools; the ratio
// to a plain client writing the same statuses; then churn, during which no
// surviving Service's address may change.
func TestBenchScale(t *testing.T) {
	root, err := apiserver.Root()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "controller")); err != nil {
		t.Fatal("bin/controller missing: run `make build`")
	}
	env := apiserver.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := env.Config // QPS -1: no client-side rate limit
	cs := kubernetes.NewForConfigOrDie(cfg)
	c := env.Client
	for _, ns := range []string{"ironlb", "ratio", "plain"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for k := range scalePools {
		if err := c.Create(ctx, scalePoolObject(k)); err != nil {
			t.Fatal(err)
		}
	}

	dir := t.TempDir()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, env.KubeConfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(dir, "controller.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(root, "bin", "controller"), "--kubeconfig="+kubeconfig, "--leader-elect=false",
		"--metrics-bind-address=0", "--health-probe-bind-address=0", "--zap-log-level=error")
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(exited) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			s := string(b)
			if len(s) > 3000 {
				s = s[len(s)-3000:]
			}
			t.Logf("controller log:\n%s", s)
		}
	}()
	pid := cmd.Process.Pid
	apiPID := apiserverPID(env.Config.Host)

	// Warm up: the controller is running once it answers one Service.
	warm := newPhase("warm-up")
	warmDone := scaleWatch(ctx, t, cs, "default", warm, 1)
	if err := createOp(ctx, cs, warm, scaleService("default", "warmup", 0, nil), nil)(); err != nil {
		t.Fatal(err)
	}
	waitDone(t, "warm-up", warm, 1, warmDone, time.Minute)
	time.Sleep(time.Second)
	p0, a0 := readProc(pid), readProc(apiPID)

	// Phase 1: 10,000 Services for ironlb alone.
	n := *scaleServices
	mainP := newPhase("ironlb controller process")
	mainDone := scaleWatch(ctx, t, cs, "ironlb", mainP, n)
	var ops []op
	for i := range n {
		ops = append(ops, createOp(ctx, cs, mainP, scaleService("ironlb", fmt.Sprintf("s%05d", i), i, nil), nil))
	}
	w0 := writeCounts(ctx, cs)
	createTime := pace(t, *scaleRate, ops)
	waitDone(t, "10k", mainP, n, mainDone, 5*time.Minute)
	mainTotal := mainP.lastSeen().Sub(mainP.firstCreate())
	time.Sleep(2 * time.Second)
	w1 := writeCounts(ctx, cs)
	p1, a1 := readProc(pid), readProc(apiPID)
	before, distinct := checkAddresses(ctx, t, c, "ironlb")
	if t.Failed() {
		t.FailNow()
	}

	// Phase 2: the ratio to a plain client writing the same statuses,
	// interleaved so both see the same API server at the same moment.
	m := *scaleRatioN
	ratioP := newPhase("ironlb controller process")
	plainP := newPhase("plain client (create, then write status)")
	ratioDone := scaleWatch(ctx, t, cs, "ratio", ratioP, m)
	plainDone := scaleWatch(ctx, t, cs, "plain", plainP, m)
	var ipMu sync.Mutex
	next4, next6 := netip.MustParseAddr("100.64.0.0"), netip.MustParseAddr("fd00:64::")
	vip := corev1.LoadBalancerIPModeVIP
	plainWrite := func(s *corev1.Service) error {
		ipMu.Lock()
		var ing []corev1.LoadBalancerIngress
		for _, f := range s.Spec.IPFamilies {
			ip := &next4
			if f == corev1.IPv6Protocol {
				ip = &next6
			}
			ing = append(ing, corev1.LoadBalancerIngress{IP: ip.String(), IPMode: &vip})
			*ip = ip.Next()
		}
		ipMu.Unlock()
		s.Status.LoadBalancer.Ingress = ing
		_, err := cs.CoreV1().Services(s.Namespace).UpdateStatus(ctx, s, metav1.UpdateOptions{})
		return err
	}
	ops = ops[:0]
	for i := range m {
		ops = append(ops,
			createOp(ctx, cs, plainP, scaleService("plain", fmt.Sprintf("p%05d", i), i, ptr.To(plainClass)), plainWrite),
			createOp(ctx, cs, ratioP, scaleService("ratio", fmt.Sprintf("r%05d", i), i, nil), nil))
	}
	ratioTime := pace(t, *scaleRate, ops)
	waitDone(t, "ratio ironlb", ratioP, m, ratioDone, 5*time.Minute)
	waitDone(t, "ratio plain", plainP, m, plainDone, 5*time.Minute)
	p2 := readProc(pid)
	time.Sleep(2 * time.Second)
	before2, _ := checkAddresses(ctx, t, c, "ironlb", "ratio")
	for k, v := range before {
		if before2[k] != v {
			t.Errorf("%s changed from %s to %s during the ratio phase", k, v, before2[k])
		}
	}

	// Phase 3: churn. Delete random Services and create as many new ones,
	// interleaved; no surviving Service's address may change.
	names := make([]string, n)
	for i := range n {
		names[i] = fmt.Sprintf("s%05d", i)
	}
	rand.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	gone := map[string]bool{}
	churnP := newPhase("ironlb, churn creates")
	churnDone := scaleWatch(ctx, t, cs, "ironlb", churnP, *scaleChurn)
	ops = ops[:0]
	for i := range *scaleChurn {
		name := names[i]
		gone["ironlb/"+name] = true
		ops = append(ops, func() error {
			return cs.CoreV1().Services("ironlb").Delete(ctx, name, metav1.DeleteOptions{})
		}, createOp(ctx, cs, churnP, scaleService("ironlb", fmt.Sprintf("s%05d", n+i), n+i, nil), nil))
	}
	churnTime := pace(t, *scaleRate, ops)
	waitDone(t, "churn", churnP, *scaleChurn, churnDone, 5*time.Minute)
	time.Sleep(2 * time.Second)
	p3 := readProc(pid)
	after, distinctAfter := checkAddresses(ctx, t, c, "ironlb", "ratio")
	changed, survivors := 0, 0
	for k, v := range before2 {
		if gone[k] {
			if _, still := after[k]; still {
				t.Errorf("%s was deleted but is still listed", k)
			}
			continue
		}
		survivors++
		if after[k] != v {
			changed++
			if changed <= 10 {
				t.Errorf("%s changed from %s to %s during churn", k, v, after[k])
			}
		}
	}
	if changed > 0 {
		t.Errorf("%d surviving Services changed address during churn", changed)
	}
	empty := 0
	for _, v := range after {
		if v == "[]" {
			empty++
		}
	}
	if empty > 0 {
		t.Errorf("%d Services without an address after churn", empty)
	}

	// The report.
	var b strings.Builder
	fmt.Fprintf(&b, "## Controller at scale (`TestBenchScale`)\n\n")
	fmt.Fprintf(&b, "- date: %s\n- machine: %s\n", time.Now().UTC().Format(time.RFC3339), mdreport.Machine())
	fmt.Fprintf(&b, "- command: `make bench-scale` → `go test -tags bench -run '^TestBenchScale$' ./test/bench/ -args -scale-services=%d -scale-ratio-services=%d -scale-churn=%d -scale-rate=%g`\n",
		n, m, *scaleChurn, *scaleRate)
	fmt.Fprintf(&b, "- setup: one kube-apiserver + etcd (envtest, same machine); bin/controller as its own process (`--leader-elect=false`, 16 workers, no client-side QPS limit); the bench's client has no client-side QPS limit (rest.Config QPS -1); creates paced open loop at %g/s, each call in its own goroutine\n", *scaleRate)
	fmt.Fprintf(&b, "- Services: %d pools (8 IPv4 /22, 6 IPv6 /118, 6 dual-stack), Service i in pool i%%20 by annotation; Services in dual-stack pools are RequireDualStack (2 addresses); in single-family pools 4 of 10 share an address (`%s`, one key per group of 4, distinct ports)\n\n",
		scalePools, v1beta1.AnnotationAllowSharedIP)
	fmt.Fprintf(&b, "Latency = create sent → address seen in a watch of Services.\n\n")
	fmt.Fprintf(&b, "| phase | Services | p50 | p90 | p99 | max | wall time |\n|---|---|---|---|---|---|---|\n")
	fmt.Fprintln(&b, latencyLine(fmt.Sprintf("1. %d Services, ironlb alone (creates took %s)", n, createTime.Round(time.Millisecond)), mainP, mainTotal))
	fmt.Fprintln(&b, latencyLine("2. interleaved sample: ironlb", ratioP, ratioTime))
	fmt.Fprintln(&b, latencyLine("2. interleaved sample: plain client (create, then write status)", plainP, ratioTime))
	fmt.Fprintln(&b, latencyLine(fmt.Sprintf("3. churn: %d deletes + %d creates interleaved, the creates", *scaleChurn, *scaleChurn), churnP, churnTime))
	rl, pl := ratioP.latencies(), plainP.latencies()
	fmt.Fprintf(&b, "\n- ratio ironlb / plain client (phase 2, %d + %d Services interleaved at %g/s in all, with %d Services already allocated): p50 **%.2fx**, p90 %.2fx, p99 **%.2fx** (target ≤ 1.3x)\n",
		m, m, *scaleRate, n, ratio(pct(rl, .5), pct(pl, .5)), ratio(pct(rl, .9), pct(pl, .9)), ratio(pct(rl, .99), pct(pl, .99)))
	fmt.Fprintf(&b, "- the ratio is measured on a %d-Service interleaved sample, not at 10,000 per writer: 2 × 10,000 creates at the same pace would double the run; phase 1 gives the 10,000-Service numbers\n", m)
	fmt.Fprintf(&b, "- controller process CPU: %.1f s over phase 1 (%.1f ms per Service), %.1f s over phase 2, %.1f s over phase 3; %.1f s in all since start\n",
		(p1.CPU - p0.CPU).Seconds(), float64((p1.CPU-p0.CPU).Microseconds())/1000/float64(n), (p2.CPU - p1.CPU).Seconds(), (p3.CPU - p2.CPU).Seconds(), p3.CPU.Seconds())
	fmt.Fprintf(&b, "- controller process memory: peak RSS (VmHWM) %s, RSS at the end %s (after phase 1: VmHWM %s)\n", mib(p3.HWM), mib(p3.RSS), mib(p1.HWM))
	if apiPID > 0 {
		fmt.Fprintf(&b, "- for scale, the kube-apiserver process used %.1f s of CPU over phase 1 (%.1f ms per Service), peak RSS %s\n",
			(a1.CPU - a0.CPU).Seconds(), float64((a1.CPU-a0.CPU).Microseconds())/1000/float64(n), mib(readProc(apiPID).HWM))
	}
	fmt.Fprintf(&b, "- addresses after phase 1: %d Services hold %d distinct addresses (sharing and dual-stack)\n", n, distinct)
	fmt.Fprintf(&b, "- API writes per Service in phase 1: %s\n", diffCounts(w0, w1, n))
	fmt.Fprintf(&b, "- churn: %d surviving Services compared before/after: %d changed address; duplicates (an address held by Services without one common sharing key) over %d Services and %d addresses: %s\n",
		survivors, changed, len(after), distinctAfter, map[bool]string{true: "some (see test log)", false: "none"}[t.Failed()])
	fmt.Fprintf(&b, "- result: %s\n\n", map[bool]string{true: "**FAILED** (see the test log)", false: "passed (invariants: no address changed, no duplicate, every Service addressed within 5 min of its phase's last create)"}[t.Failed()])
	t.Log("\n" + b.String())
	if *scaleReport != "" {
		if err := mdreport.WriteSection(*scaleReport, "controller", b.String()); err != nil {
			t.Error(err)
		}
	}
}
