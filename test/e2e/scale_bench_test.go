//go:build bench

package e2e

import (
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/mdreport"
	"github.com/ironlb/ironlb/test/netlab"
)

var (
	scaleSpeakers = flag.Int("scale-speakers", 50, "TestBenchSpeakerScale: speaker processes (one node namespace each)")
	scaleIPs      = flag.Int("scale-ips", 2000, "TestBenchSpeakerScale: announced L2 addresses (one single-stack Service each)")
	scaleFewIPs   = flag.Int("scale-few-ips", 0, "TestBenchSpeakerScale: delete Services down to this many addresses for a second idle window (0 skips it)")
	scaleIdle     = flag.Duration("scale-idle", 30*time.Second, "TestBenchSpeakerScale: idle window")
	scaleBound    = flag.Duration("scale-announce-bound", 5*time.Minute, "TestBenchSpeakerScale: fail if not every address is answered over ARP within this")
	scaleProfile  = flag.String("scale-profile", "", "TestBenchSpeakerScale: save a CPU profile of the first speaker over the idle window to this file")
	scaleArgs     = flag.String("scale-speaker-args", "", "TestBenchSpeakerScale: extra speaker flags, space-separated (e.g. --mesh-max-rate=100)")
	scaleLogs     = flag.String("scale-logs", "", "TestBenchSpeakerScale: keep the speakers' logs in this directory (default: a temporary one)")
	scaleReportTo = flag.String("scale-report", "", "markdown file whose speaker section TestBenchSpeakerScale (re)writes")
)

const scaleMetricsAddr = "127.0.0.1:7474"

// TestBenchSpeakerScale: 50 speaker processes, each in its own node
// namespace on one bridge, one API server, the controller in this process,
// and 2,000 Services announced over L2. It measures how long until every
// address answers ARP from a client, and each speaker's memory, idle CPU
// and idle API requests; then again with fewer Services.
func TestBenchSpeakerScale(t *testing.T) {
	if err := netlab.Check(); err != nil {
		t.Fatalf("needs network namespaces: %v", err)
	}
	root, _ := apiserver.Root()
	for _, b := range []string{"speaker", "controller"} {
		if _, err := os.Stat(filepath.Join(root, "bin", b)); err != nil {
			t.Fatalf("bin/%s missing: run `make build`", b)
		}
	}
	nSpeakers, nIPs := *scaleSpeakers, *scaleIPs
	var b strings.Builder
	if *scaleArgs == "" {
		fmt.Fprintf(&b, "## Speakers at scale (`TestBenchSpeakerScale`)\n\n")
	} else {
		fmt.Fprintf(&b, "## Speakers at scale, speakers run with `%s`\n\n", *scaleArgs)
	}
	fmt.Fprintf(&b, "- date: %s\n- machine: %s\n", time.Now().UTC().Format(time.RFC3339), mdreport.Machine())
	fmt.Fprintf(&b, "- command: `make bench-scale` → `go test -tags bench -run '^TestBenchSpeakerScale$' ./test/e2e/ -args -scale-speakers=%d -scale-ips=%d -scale-few-ips=%d -scale-idle=%s -scale-speaker-args=%q`\n",
		nSpeakers, nIPs, *scaleFewIPs, *scaleIdle, *scaleArgs)
	fmt.Fprintf(&b, "- setup: %d bin/speaker processes, each in its own node namespace on one bridge (plus a client namespace), default log level, metrics on %s (plain HTTP, scraped from inside each namespace); one kube-apiserver + etcd (envtest) and the controller in the test process, all on this machine; one IPAddressPool, one L2Advertisement, %d single-stack IPv4 LoadBalancer Services (externalTrafficPolicy Cluster)\n",
		nSpeakers, scaleMetricsAddr, nIPs)
	// A run with other speaker flags gets a section of its own, next to
	// the default run's.
	section := "speaker"
	if *scaleArgs != "" {
		section += " " + *scaleArgs
	}
	// flush writes what was measured so far, so a run that fails or is
	// stopped still leaves its numbers.
	flush := func() {
		if *scaleReportTo != "" {
			_ = mdreport.WriteSection(*scaleReportTo, section, b.String()+"\n- (run in progress or stopped: partial)\n\n")
		}
	}
	defer func() {
		if t.Failed() {
			fmt.Fprintf(&b, "\n- result: **FAILED** (see the test log); the numbers above are what was measured before the failure\n\n")
		} else {
			fmt.Fprintf(&b, "\n- result: passed (invariants: every address answered over ARP within %s, each by exactly one node)\n\n", *scaleBound)
		}
		t.Log("\n" + b.String())
		if *scaleReportTo != "" {
			if err := mdreport.WriteSection(*scaleReportTo, section, b.String()); err != nil {
				t.Error(err)
			}
		}
	}()

	// The LAN.
	prefix := fmt.Sprintf("ilbsc%d-", os.Getpid()%10000)
	nodes := make([]string, nSpeakers)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("n%02d", i+1)
	}
	labStart := time.Now()
	lab, err := netlab.New(prefix, netip.MustParsePrefix("198.18.64.0/18"), netip.MustParsePrefix("2001:db8:64::/64"), 11, append(append([]string{}, nodes...), "client")...)
	if err != nil {
		t.Fatal(err)
	}
	labTime := time.Since(labStart)
	t.Cleanup(func() {
		if err := lab.Close(); err != nil {
			t.Error(err)
		}
	})
	fmt.Fprintf(&b, "- netlab: %d namespaces on one bridge built in %s (%.0f ms per namespace; `ip` commands run one by one)\n", nSpeakers+2, labTime.Round(time.Millisecond), float64(labTime.Milliseconds())/float64(nSpeakers+2))

	// The API server on the LAN, as a control-plane host.
	apiOn := netip.MustParsePrefix("198.18.127.250/18")
	if err := lab.AttachThisHost(apiOn); err != nil {
		t.Fatal(err)
	}
	env, err := apiserver.NewOn(apiOn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := env.Client
	for _, n := range nodes {
		if err := labkit.CreateNode(ctx, c, n, lab.Hosts[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: speakerNamespace}}); err != nil {
		t.Fatal(err)
	}
	runController(ctx, t, env)
	dir := t.TempDir()
	if *scaleLogs != "" {
		dir = *scaleLogs
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kubeconfig, key := filepath.Join(dir, "kubeconfig"), filepath.Join(dir, "mesh.key")
	if err := os.WriteFile(kubeconfig, env.KubeConfig(), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(key, []byte("scale-bench-mesh-key-0123456789"), 0o600); err != nil {
		t.Fatal(err)
	}

	// The Services, with their addresses, before any speaker runs.
	first := netip.MustParseAddr("198.18.96.0")
	last := nthAddr(first, nIPs-1)
	if err := c.Create(ctx, &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{v1beta1.AddressRange(first.String() + "-" + last.String())}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}}); err != nil {
		t.Fatal(err)
	}
	svcStart := time.Now()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i := range nIPs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			s := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: fmt.Sprintf("v%04d", i)},
				Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "x"},
					IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol}, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
					Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}}}
			if err := c.Create(ctx, s); err != nil {
				t.Errorf("create %s: %v", s.Name, err)
			}
		}()
	}
	wg.Wait()
	var ips []netip.Addr
	byName := map[string]netip.Addr{}
	for deadline := time.Now().Add(3 * time.Minute); ; time.Sleep(500 * time.Millisecond) {
		var list corev1.ServiceList
		if err := c.List(ctx, &list, client.InNamespace("default")); err != nil {
			t.Fatal(err)
		}
		ips, byName = ips[:0], map[string]netip.Addr{}
		for i := range list.Items {
			if got := config.IngressIPs(&list.Items[i]); len(got) > 0 {
				ips = append(ips, got[0])
				byName[list.Items[i].Name] = got[0]
			}
		}
		if len(ips) == nIPs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d Services got an address", len(ips), nIPs)
		}
	}
	fmt.Fprintf(&b, "- %d Services created (8 at a time) and all given addresses by the controller in %s\n", nIPs, time.Since(svcStart).Round(time.Millisecond))

	// The speakers, all at once.
	announced := watchAnnounced(ctx, t, env.Config, "default")
	probe := newARPProbe(t, lab.Hosts["client"].Name)
	t.Cleanup(func() { probe.closed.Store(true); _ = probe.c.Close() })
	speakers := make([]*labkit.Speaker, nSpeakers)
	pids := make([]int, nSpeakers)
	spStart := time.Now()
	for i, n := range nodes {
		args := []string{"--namespace=" + speakerNamespace, "--metrics-bind-address=" + scaleMetricsAddr, "--metrics-insecure"}
		if *scaleProfile != "" {
			// Only then: heap sampling costs the speakers memory.
			args = append(args, "--pprof")
		}
		args = append(args, strings.Fields(*scaleArgs)...)
		s, err := labkit.StartSpeaker(root, dir, n, lab.Hosts[n], kubeconfig, key, args...)
		if err != nil {
			t.Fatal(err)
		}
		speakers[i] = s
		t.Cleanup(func() {
			s.Kill()
			if t.Failed() && i < 3 {
				lb, _ := os.ReadFile(s.Log)
				t.Logf("speaker %s log:\n%s", n, tail(string(lb), 3000))
			}
		})
		pids[i] = speakerPID(t, s)
	}
	t0 := time.Now()
	fmt.Fprintf(&b, "- %d speaker processes started in %s\n", nSpeakers, t0.Sub(spStart).Round(time.Millisecond))
	if *scaleProfile != "" {
		// Where a speaker's start-up CPU goes: its first 40 s.
		go func() {
			// Its metrics endpoint comes up a moment after the process.
			var err error
			for range 50 {
				if err = profileSpeaker(lab.Hosts[nodes[len(nodes)/2]].Name, 40*time.Second, *scaleProfile+".start"); err == nil {
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			t.Logf("start-up profile: %v", err)
		}()
	}
	allAt, missing := announced.untilAll(nIPs, *scaleBound)
	if missing > 0 {
		fmt.Fprintf(&b, "- **%d of %d Services not Announced** within %s of the last speaker start\n", missing, nIPs, *scaleBound)
		t.Fatalf("%d of %d Services not Announced within %s", missing, nIPs, *scaleBound)
	}
	allAnnounced := allAt.Sub(t0)
	// A speaker that exited (e.g. gave up waiting for its caches) would
	// make the rest look fine: its addresses just move to the others.
	checkRunning := func(when string) {
		for _, s := range speakers {
			if s.Exited() {
				lb, _ := os.ReadFile(s.Log)
				fmt.Fprintf(&b, "- **speaker %s exited** %s\n", s.Node, when)
				t.Errorf("speaker %s exited %s; log tail:\n%s", s.Node, when, tail(string(lb), 2000))
			}
		}
	}
	checkRunning("before every address was announced")
	var startCPU durs
	for _, pid := range pids {
		p, _ := mdreport.ReadProc(pid)
		startCPU = append(startCPU, p.CPU.Seconds())
	}
	fmt.Fprintf(&b, "- all **%d of %d** Services `Announced=True` **%s after the last speaker started** (a watch of the Services: a speaker writes the condition once its announcer answers for the address; the ARP passes below check the wire)\n",
		nIPs, nIPs, allAnnounced.Round(time.Millisecond))
	fmt.Fprintf(&b, "- speaker CPU from start until then: median %.2f s, max %.2f s per speaker (%.1f s in all)\n", startCPU.median(), startCPU.max(), sum(startCPU))

	// Each address is answered by exactly one node, and the spread.
	time.Sleep(5 * time.Second)
	owners := func(ips []netip.Addr) (multi []string, perNode map[string]int) {
		probe.reset()
		probe.ask(ips)
		time.Sleep(2 * time.Second)
		probe.ask(probe.pending(ips))
		time.Sleep(time.Second)
		probe.mu.Lock()
		defer probe.mu.Unlock()
		macNode := map[string]string{}
		for n, h := range lab.Hosts {
			macNode[h.MAC.String()] = n
		}
		perNode = map[string]int{}
		for _, ip := range ips {
			ms := probe.macs[ip]
			if len(ms) != 1 {
				var who []string
				for m := range ms {
					who = append(who, macNode[m])
				}
				multi = append(multi, fmt.Sprintf("%s answered by %d nodes %v", ip, len(ms), who))
			}
			for m := range ms {
				perNode[macNode[m]]++
			}
		}
		return multi, perNode
	}
	multi, perNode := owners(ips)
	var counts durs
	for _, n := range nodes {
		counts = append(counts, float64(perNode[n]))
	}
	fmt.Fprintf(&b, "- ownership (a second ARP pass over all %d addresses, 5 s later): addresses per node min %.0f, median %.0f, max %.0f; addresses not answered by exactly one node: %d\n",
		nIPs, counts.q(0), counts.median(), counts.max(), len(multi))
	for i, m := range multi {
		if i < 5 {
			t.Logf("5 s after: %s", m)
		}
	}
	flush()

	// Idle with all the addresses: let the Announced conditions land first.
	time.Sleep(15 * time.Second)
	if *scaleProfile != "" {
		go func() {
			if err := profileSpeaker(lab.Hosts[nodes[0]].Name, *scaleIdle-2*time.Second, *scaleProfile); err != nil {
				t.Logf("profile: %v", err)
			}
			if err := heapProfile(lab.Hosts[nodes[0]].Name, *scaleProfile+".heap"); err != nil {
				t.Logf("heap profile: %v", err)
			}
		}()
	}
	idleMany := measureIdle(t, lab, speakers, pids, *scaleIdle)
	fmt.Fprintf(&b, "\nPer speaker (%d speakers; median and max across speakers):\n\n| measure | median | max |\n|---|---|---|\n", nSpeakers)
	idleMany.lines(&b, fmt.Sprintf("%d IPs", nIPs), *scaleIdle)
	flush()
	// After the idle window the ownership must be settled: one node per
	// address.
	checkRunning("during the idle window")
	multi, perNode = owners(ips)
	for i, m := range multi {
		if i < 10 {
			t.Errorf("after the idle window: %s", m)
		}
	}
	counts = counts[:0]
	for _, n := range nodes {
		counts = append(counts, float64(perNode[n]))
	}
	ownerLine := fmt.Sprintf("- ownership again after the idle window: addresses per node min %.0f, median %.0f, max %.0f; not answered by exactly one node: %d; mesh liveness changes seen by all speakers during the window: %.0f\n",
		counts.q(0), counts.median(), counts.max(), len(multi), idleMany.transitions)

	var idleFew idleResult
	few := *scaleFewIPs
	if few > 0 && few < nIPs {
		// Fewer Services: the idle request rate must not depend on it.
		var del []string
		for name := range byName {
			del = append(del, name)
		}
		sort.Strings(del)
		del = del[few:]
		for _, name := range del {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				if err := c.Delete(ctx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}}); err != nil {
					t.Errorf("delete %s: %v", name, err)
				}
			}()
		}
		wg.Wait()
		time.Sleep(15 * time.Second)
		idleFew = measureIdle(t, lab, speakers, pids, *scaleIdle)
		idleFew.lines(&b, fmt.Sprintf("%d IPs", few), *scaleIdle)
	}
	fmt.Fprintf(&b, "\n- API requests by all %d speakers at idle, %d IPs: **%.3f requests/s** in all (%.4f per speaker per second); by method over the window: %s\n",
		nSpeakers, nIPs, idleMany.reqPerSec, idleMany.reqPerSec/float64(nSpeakers), idleMany.methods())
	if few > 0 && few < nIPs {
		fmt.Fprintf(&b, "- API requests by all %d speakers at idle, %d IPs (after deleting %d Services): **%.3f requests/s** in all; by method: %s\n",
			nSpeakers, few, nIPs-few, idleFew.reqPerSec, idleFew.methods())
	}
	b.WriteString(ownerLine)
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	fmt.Fprintf(&b, "- targets at %d IPs: RSS ≤ 40 MB: %s (max VmRSS %.1f MiB, max VmHWM %.1f MiB); idle CPU ≤ 1%% of a core: %s (max %.3f%%)\n",
		nIPs, verdict(idleMany.rssMiB.max() <= 40e6/(1<<20)), idleMany.rssMiB.max(), idleMany.hwmMiB.max(), verdict(idleMany.cpuPct.max() <= 1), idleMany.cpuPct.max())
}
