package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/creack/pty"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/mdreport"
	"github.com/ironlb/ironlb/test/netlab"
)

var (
	failoverRuns = flag.Int("failover-runs", 5, "link cuts TestLab makes in the running lab")
	reportTo     = flag.String("report", "", "markdown file whose TestLab section the figures are written into")
)

// Outage bounds a user may rely on in the lab's setup: layer 2 fails over
// when the mesh declares the node dead (about 350 ms measured), BGP when
// BFD (300 ms x 3) takes it out of the router's ECMP set (about 900 ms).
const (
	maxLANOutage    = time.Second
	maxRoutedOutage = 1500 * time.Millisecond
)

// TestLab runs `make lab` as a user does, on a terminal: it waits for the
// lab to be up, cuts node links in it (what `make lab-failover` does) and
// bounds the outage each client sees, checks that the lab still works
// afterwards, then presses Ctrl-C and expects make to exit 0 with nothing
// left behind.
func TestLab(t *testing.T) {
	if err := netlab.Check(); err != nil {
		t.Fatal(err)
	}
	root, err := apiserver.Root()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()

	cmd := exec.Command("make", "lab")
	cmd.Dir = root
	// A user's shell, not the make running this test.
	cmd.Env = slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "MAKEFLAGS=") || strings.HasPrefix(kv, "MFLAGS=") || strings.HasPrefix(kv, "MAKELEVEL=")
	})
	tty, err := pty.Start(cmd) // make leads a new session on the terminal, as under a shell
	if err != nil {
		t.Fatal(err)
	}
	out := &transcript{up: make(chan struct{})}
	copied := make(chan struct{})
	go func() { _, _ = io.Copy(out, tty); close(copied) }()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	done := false
	t.Cleanup(func() {
		if !done {
			// Ctrl-C first: the lab runs in its own process group and
			// stops its API server and etcd only when it tears down.
			_, _ = tty.Write([]byte{3})
			select {
			case <-exited:
			case <-time.After(time.Minute):
				_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
				<-exited
			}
			t.Logf("make lab output:\n%s", out.String())
		}
		tty.Close()
		netlab.Cleanup(nsPrefix)
	})

	select {
	case <-out.up:
	case err := <-exited:
		done = true
		t.Fatalf("make lab exited before the lab was up (%v):\n%s", err, out.String())
	case <-ctx.Done():
		t.Fatal("the lab is not up after 15 minutes")
	}
	for _, want := range []string{"a BGPPeer with BFDProfile fast", "one eBGP neighbor with BFD per node", "make lab-failover",
		"the kubelets run the chart's pods from the image", "(DaemonSet/ironlb-speaker) on node3", "(Deployment/ironlb-controller) on node",
		"kube-proxy is healthy on every node", "listed them ready in the Service's EndpointSlice", "the path: ", "DNATed it to the pod"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the lab's output lacks %q", want)
		}
	}

	l, err := labkit.LoadLab(filepath.Join(root, "bin", "lab", "lab.json"))
	if err != nil {
		t.Fatal(err)
	}
	var lan, routed []time.Duration
	for i := range *failoverRuns {
		cuts, err := l.Failover(ctx)
		for _, c := range cuts {
			t.Logf("run %d: cut %s", i, c)
			if c.L2Owner {
				lan = append(lan, c.LAN)
				if c.LAN == 0 || c.LAN >= maxLANOutage || c.NewOwner == "" || c.NewOwner == c.Node {
					t.Errorf("run %d: cutting %s, the L2 owner: LAN client lost %s (want 0 < loss < %s), then %q answered", i, c.Node, c.LAN, maxLANOutage, c.NewOwner)
				}
			}
			if c.Flow {
				routed = append(routed, c.Routed)
				if c.Routed == 0 || c.Routed >= maxRoutedOutage || c.NewFlow == "" || c.NewFlow == c.Node {
					t.Errorf("run %d: cutting %s, client2's next hop: routed client lost %s (want 0 < loss < %s), then routed via %q", i, c.Node, c.Routed, maxRoutedOutage, c.NewFlow)
				}
			}
		}
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
	}
	figures := []string{
		fmt.Sprintf("the LAN client's outage when the L2 owner's link is cut (longest run of new connections, one every 10 ms through kube-proxy to the pods, not answered at once), %d cuts: %s", len(lan), mdreport.Percentiles(lan)),
		fmt.Sprintf("the routed client's outage when its next hop's link is cut, BFD 300 ms x 3, %d cuts: %s", len(routed), mdreport.Percentiles(routed)),
	}
	for _, f := range figures {
		t.Log(f)
	}
	if *reportTo != "" {
		section := fmt.Sprintf("### `TestLab` (written by the test)\n\n- date: %s; machine: %s\n- command: `go test %s` in lab/\n- %s\n",
			time.Now().UTC().Format(time.RFC3339), mdreport.Machine(), strings.Join(os.Args[1:], " "), strings.Join(figures, "\n- "))
		if err := mdreport.WriteSection(*reportTo, "TestLab", section); err != nil {
			t.Error(err)
		}
	}
	if len(lan) < *failoverRuns || len(routed) < *failoverRuns {
		t.Errorf("%d L2-owner cuts and %d next-hop cuts, want %d of each", len(lan), len(routed), *failoverRuns)
	}
	// The same from a second shell, as the lab's banner says.
	demo := exec.CommandContext(ctx, "make", "lab-failover")
	demo.Dir, demo.Env = root, cmd.Env
	got, err := demo.CombinedOutput()
	if err != nil || !strings.Contains(string(got), "    cut node") || !strings.Contains(string(got), "LAN client lost") {
		t.Errorf("make lab-failover: %v:\n%s", err, got)
	}
	t.Logf("make lab-failover:\n%s", got)
	// Restored completely: both clients are answered over HTTP as at start.
	for from, vip := range map[string]netip.Addr{"client": l.LAN, "client2": l.Routed} {
		if _, err := labkit.Get(l.Hosts[from], vip, 3*time.Second); err != nil {
			t.Errorf("after the cuts, %s cannot reach %s: %v", from, vip, err)
		}
	}

	// Ctrl-C, as typed on the terminal.
	if _, err := tty.Write([]byte{3}); err != nil {
		t.Fatal(err)
	}
	select {
	case err = <-exited:
		done = true
	case <-time.After(2 * time.Minute):
		t.Fatal("make lab still runs 2 minutes after Ctrl-C")
	}
	tty.Close()
	<-copied
	if err != nil || strings.Contains(out.String(), "make: ***") {
		t.Errorf("make lab after Ctrl-C: %v (want exit status 0, no make error):\n%s", err, tail(out.String(), 30))
	}
	if ns, _ := netlab.Run("ip", "netns", "list"); strings.Contains(ns, nsPrefix) {
		t.Errorf("namespaces left after Ctrl-C:\n%s", ns)
	}
	if _, err := os.Stat(filepath.Join(root, "bin", "lab", "lab.json")); err == nil {
		t.Error("bin/lab/lab.json is left after Ctrl-C: `make lab-failover` would act on a lab that is gone")
	}
}

// transcript collects the terminal's output and closes up once the lab
// says it is up.
type transcript struct {
	mu   sync.Mutex
	b    strings.Builder
	up   chan struct{}
	seen bool
}

func (t *transcript) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b.Write(p)
	if !t.seen && strings.Contains(t.b.String(), "Ctrl-C tears it down.") {
		t.seen = true
		close(t.up)
	}
	return len(p), nil
}

func (t *transcript) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.b.String()
}

func tail(s string, n int) string {
	var lines []string
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// TestREADMEBGPExampleIsTheLab: the README's BGP example is what users
// copy, so it must be the lab's own recommended configuration: every
// BGPPeer, BFDProfile and BGPAdvertisement in it has the spec labConfig
// creates.
func TestREADMEBGPExampleIsTheLab(t *testing.T) {
	root, err := apiserver.Root()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	text := string(readme)
	i := strings.Index(text, "### Announcing it to routers (BGP)")
	if i < 0 {
		t.Fatal("README has no BGP section")
	}
	text = text[i:]
	start := strings.Index(text, "```yaml\n")
	end := strings.Index(text[start+8:], "```")
	if start < 0 || end < 0 {
		t.Fatal("the README's BGP section has no yaml example")
	}
	want := map[string]client.Object{}
	for _, o := range labConfig(netip.MustParseAddr("198.18.0.15")) {
		want[fmt.Sprintf("%T/%s", o, o.GetName())] = o
	}
	decoder := serializer.NewCodecFactory(apiserver.Scheme()).UniversalDeserializer()
	compared := 0
	for _, doc := range strings.Split(text[start+8:start+8+end], "\n---\n") {
		obj, _, err := decoder.Decode([]byte(doc), nil, nil)
		if err != nil {
			t.Fatalf("README example %q: %v", doc, err)
		}
		co := obj.(client.Object)
		lab, ok := want[fmt.Sprintf("%T/%s", co, co.GetName())]
		if !ok {
			continue // e.g. the Community aliases, which the lab does not need
		}
		compared++
		got, wantSpec := reflect.ValueOf(co).Elem().FieldByName("Spec").Interface(), reflect.ValueOf(lab).Elem().FieldByName("Spec").Interface()
		if !equality.Semantic.DeepEqual(got, wantSpec) {
			t.Errorf("README's %T %q differs from the lab's:\nREADME %+v\nlab    %+v", co, co.GetName(), got, wantSpec)
		}
	}
	if compared != 3 {
		t.Errorf("compared %d README objects with the lab's, want the BGPPeer, BFDProfile and BGPAdvertisement", compared)
	}
}
