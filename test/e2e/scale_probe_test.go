//go:build bench

package e2e

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/mdreport"
	"github.com/ironlb/ironlb/test/netlab"
)

// speakerPID is the speaker's own PID: `ip netns exec` execs it in place.
func speakerPID(t *testing.T, s *labkit.Speaker) int {
	pid := s.Pid()
	var comm []byte
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if comm, _ = os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid)); strings.TrimSpace(string(comm)) == "speaker" {
			return pid
		}
	}
	t.Fatalf("process %d of %s is %q, not the speaker", pid, s.Node, strings.TrimSpace(string(comm)))
	return 0
}

// speakerScrape is what the bench reads from a speaker's metrics: its
// client-go requests by method, and its view of the mesh.
type speakerScrape struct {
	requests    map[string]float64 // rest_client_requests_total by method
	peersAlive  float64            // ironlb_membership_peers_alive
	transitions float64            // ironlb_membership_peer_transitions_total, both directions
}

// speakerHTTP is a client that dials from inside namespace ns, where the
// speaker's metrics endpoint listens.
func speakerHTTP(ns string, timeout time.Duration) *http.Client {
	tr := &http.Transport{DisableKeepAlives: true, DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return netlab.InNS(ns, func() (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		})
	}}
	return &http.Client{Transport: tr, Timeout: timeout}
}

// scrapeSpeaker reads one speaker's metrics from inside its namespace.
func scrapeSpeaker(ns string) (speakerScrape, error) {
	out := speakerScrape{requests: map[string]float64{}}
	resp, err := speakerHTTP(ns, 5*time.Second).Get("http://" + scaleMetricsAddr + "/metrics")
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
		switch {
		case strings.HasPrefix(line, "rest_client_requests_total{"):
			method := "?"
			if i := strings.Index(line, `method="`); i >= 0 {
				method = line[i+8:]
				method = method[:strings.IndexByte(method, '"')]
			}
			out.requests[method] += v
		case strings.HasPrefix(line, "ironlb_membership_peers_alive "):
			out.peersAlive = v
		case strings.HasPrefix(line, "ironlb_membership_peer_transitions_total{"):
			out.transitions += v
		}
	}
	return out, sc.Err()
}

// heapProfile saves a heap profile of one speaker to file.
func heapProfile(ns, file string) error {
	return savePprof(ns, "heap", 30*time.Second, file)
}

// profileSpeaker saves a CPU profile of one speaker (its --pprof
// endpoint) over d to file.
func profileSpeaker(ns string, d time.Duration, file string) error {
	return savePprof(ns, fmt.Sprintf("profile?seconds=%d", int(d.Seconds())), d+30*time.Second, file)
}

// savePprof fetches /debug/pprof/<what> from the speaker of namespace ns
// and writes it to file.
func savePprof(ns, what string, timeout time.Duration, file string) error {
	resp, err := speakerHTTP(ns, timeout).Get("http://" + scaleMetricsAddr + "/debug/pprof/" + what)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("pprof %s: %s", what, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

// announcedWatch follows the Services' Announced conditions.
type announcedWatch struct {
	mu      sync.Mutex
	true_   map[string]bool
	allAt   time.Time // first time every Service was True at once
	changed chan struct{}
}

// watchAnnounced starts watching the Services of ns.
func watchAnnounced(ctx context.Context, t *testing.T, cfg *rest.Config, ns string) *announcedWatch {
	t.Helper()
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().Services(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A retrying watch: the API server drops watchers that fall behind,
	// and at start-up 50 speakers keep this machine busy.
	w, err := watchtools.NewRetryWatcherWithContext(ctx, list.ResourceVersion, &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (apiwatch.Interface, error) {
			return cs.CoreV1().Services(ns).Watch(ctx, o)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	aw := &announcedWatch{true_: map[string]bool{}, changed: make(chan struct{}, 1)}
	set := func(svc *corev1.Service) {
		c := meta.FindStatusCondition(svc.Status.Conditions, v1beta1.ServiceConditionAnnounced)
		aw.mu.Lock()
		aw.true_[svc.Name] = c != nil && c.Status == metav1.ConditionTrue
		aw.mu.Unlock()
		select {
		case aw.changed <- struct{}{}:
		default:
		}
	}
	for i := range list.Items {
		set(&list.Items[i])
	}
	go func() {
		defer w.Stop()
		for ev := range w.ResultChan() {
			if svc, ok := ev.Object.(*corev1.Service); ok && ev.Type != apiwatch.Deleted {
				set(svc)
			}
		}
	}()
	return aw
}

// untilAll waits until n Services are Announced=True at once, and returns
// when that first happened, or how many were not after bound.
func (aw *announcedWatch) untilAll(n int, bound time.Duration) (time.Time, int) {
	deadline := time.After(bound)
	for {
		aw.mu.Lock()
		count := 0
		for _, ok := range aw.true_ {
			if ok {
				count++
			}
		}
		aw.mu.Unlock()
		if count >= n {
			return time.Now(), 0
		}
		select {
		case <-aw.changed:
		case <-deadline:
			return time.Time{}, n - count
		}
	}
}

// arpProbe resolves many addresses at once from the client namespace:
// requests go out in paced bursts; one reader records every reply.
type arpProbe struct {
	c      *arp.Client
	closed atomic.Bool
	mu     sync.Mutex
	first  map[netip.Addr]time.Time
	macs   map[netip.Addr]map[string]bool
}

func newARPProbe(t *testing.T, ns string) *arpProbe {
	c, err := netlab.InNS(ns, func() (*arp.Client, error) {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return nil, err
		}
		return arp.Dial(ifi)
	})
	if err != nil {
		t.Fatal(err)
	}
	p := &arpProbe{c: c, first: map[netip.Addr]time.Time{}, macs: map[netip.Addr]map[string]bool{}}
	go func() {
		for {
			pkt, _, err := c.Read()
			if err != nil {
				if p.closed.Load() {
					return
				}
				// A frame that is not a valid ARP packet: skip it.
				time.Sleep(time.Millisecond)
				continue
			}
			if pkt.Operation != arp.OperationReply {
				continue
			}
			now := time.Now()
			p.mu.Lock()
			if _, ok := p.first[pkt.SenderIP]; !ok {
				p.first[pkt.SenderIP] = now
			}
			if p.macs[pkt.SenderIP] == nil {
				p.macs[pkt.SenderIP] = map[string]bool{}
			}
			p.macs[pkt.SenderIP][pkt.SenderHardwareAddr.String()] = true
			p.mu.Unlock()
		}
	}()
	return p
}

// ask sends one request per address, 50 every 50 ms: 1,000 broadcasts a
// second, each handled by every speaker. Much faster and the probe itself
// is the load: 50 speakers on 2 cores spent their time on the probe's
// ARP storm instead of settling.
func (p *arpProbe) ask(ips []netip.Addr) {
	for i, ip := range ips {
		_ = p.c.Request(ip)
		if i%50 == 49 {
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func (p *arpProbe) pending(ips []netip.Addr) []netip.Addr {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []netip.Addr
	for _, ip := range ips {
		if _, ok := p.first[ip]; !ok {
			out = append(out, ip)
		}
	}
	return out
}

func (p *arpProbe) reset() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.first = map[netip.Addr]time.Time{}
	p.macs = map[netip.Addr]map[string]bool{}
}

type durs []float64

func (d durs) median() float64 { return d.q(.5) }

func (d durs) max() float64 { return d.q(1) }

func (d durs) q(q float64) float64 {
	if len(d) == 0 {
		return 0
	}
	s := append(durs(nil), d...)
	sort.Float64s(s)
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}

// idleWindow measures every speaker over one idle window: CPU % of one
// core, RSS, and the API requests they make.
type idleResult struct {
	cpuPct, rssMiB, hwmMiB, anonMiB durs
	reqPerSec                       float64
	byMethod                        map[string]float64
	// peersAlive is each speaker's count of live peers at the end;
	// transitions the liveness changes all speakers saw in the window
	// (0 when the mesh is steady).
	peersAlive  durs
	transitions float64
}

func measureIdle(t *testing.T, lab *netlab.Lab, speakers []*labkit.Speaker, pids []int, window time.Duration) idleResult {
	t.Helper()
	n := len(speakers)
	// scrapeAll reads every speaker's metrics, all at once.
	scrapeAll := func() []speakerScrape {
		out := make([]speakerScrape, n)
		var wg sync.WaitGroup
		for i, s := range speakers {
			wg.Go(func() {
				var err error
				if out[i], err = scrapeSpeaker(lab.Hosts[s.Node].Name); err != nil {
					t.Errorf("scrape %s: %v", s.Node, err)
				}
			})
		}
		wg.Wait()
		return out
	}
	p0, r0 := make([]mdreport.Proc, n), scrapeAll()
	for i := range speakers {
		p0[i], _ = mdreport.ReadProc(pids[i])
	}
	start := time.Now()
	time.Sleep(window)
	var res idleResult
	res.byMethod = map[string]float64{}
	p1 := make([]mdreport.Proc, n)
	for i := range speakers {
		p1[i], _ = mdreport.ReadProc(pids[i])
	}
	elapsed := time.Since(start)
	r1 := scrapeAll()
	var total float64
	for i := range speakers {
		res.cpuPct = append(res.cpuPct, 100*(p1[i].CPU-p0[i].CPU).Seconds()/elapsed.Seconds())
		res.rssMiB = append(res.rssMiB, float64(p1[i].RSS)/(1<<20))
		res.hwmMiB = append(res.hwmMiB, float64(p1[i].HWM)/(1<<20))
		res.anonMiB = append(res.anonMiB, float64(p1[i].RSSAnon)/(1<<20))
		res.peersAlive = append(res.peersAlive, r1[i].peersAlive)
		res.transitions += r1[i].transitions - r0[i].transitions
		for m, v := range r1[i].requests {
			// Scrapes themselves are not API requests: they go to the
			// speaker's own metrics endpoint.
			d := v - r0[i].requests[m]
			res.byMethod[m] += d
			total += d
		}
	}
	res.reqPerSec = total / elapsed.Seconds()
	return res
}

func (r idleResult) lines(b *strings.Builder, label string, window time.Duration) {
	fmt.Fprintf(b, "| %s: idle CPU, %% of one core over %s | %.3f%% | %.3f%% |\n", label, window, r.cpuPct.median(), r.cpuPct.max())
	fmt.Fprintf(b, "| %s: RSS (VmRSS) at the end of the window | %.1f MiB | %.1f MiB |\n", label, r.rssMiB.median(), r.rssMiB.max())
	fmt.Fprintf(b, "| %s: of which private (RssAnon: heap, stacks; the rest is the executable's pages) | %.1f MiB | %.1f MiB |\n", label, r.anonMiB.median(), r.anonMiB.max())
	fmt.Fprintf(b, "| %s: peak RSS (VmHWM) since start | %.1f MiB | %.1f MiB |\n", label, r.hwmMiB.median(), r.hwmMiB.max())
	fmt.Fprintf(b, "| %s: peers seen alive at the end of the window (the max column: the fewest) | %.0f | %.0f |\n", label, r.peersAlive.median(), r.peersAlive.q(0))
}

func (r idleResult) methods() string {
	var parts []string
	for m, v := range r.byMethod {
		parts = append(parts, fmt.Sprintf("%s %.0f", m, v))
	}
	sort.Strings(parts)
	if len(parts) == 0 {
		return "none"
	}
	return strings.Join(parts, ", ")
}

func nthAddr(a netip.Addr, n int) netip.Addr {
	for range n {
		a = a.Next()
	}
	return a
}

func sum(d durs) float64 {
	var s float64
	for _, v := range d {
		s += v
	}
	return s
}
