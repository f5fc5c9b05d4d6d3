package kubelet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	goruntime "runtime"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/datapath"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
)

// This package's LAN: not one another package's tests attach to this host
// at the same time.
var (
	lan   = netip.MustParsePrefix("198.18.43.0/24")
	apiOn = netip.MustParsePrefix("198.18.43.250/24")
	nodes = []string{"node1", "node2"}
)

const namespace = "ironlb-system"

// bed is a LAN of two real nodes (kubelet, containerd, kube-proxy), a
// client, and a control plane with the scheduler and the workload
// controllers, on this host.
type bed struct {
	l       *netlab.Lab
	env     *apiserver.Env
	dp      *datapath.Cluster
	nodes   map[string]*Node
	root    string
	image   string
	archive string
}

func newBed(t *testing.T, ctx context.Context) *bed {
	t.Helper()
	if err := Check(); err != nil {
		t.Fatal(err)
	}
	root, err := apiserver.Root()
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(root, "bin", "image", "ironlb-linux-"+goruntime.GOARCH+".tar")
	image, err := ArchiveTag(archive)
	if err != nil {
		t.Fatalf("%v (run `make image`)", err)
	}
	l, env := labkit.NewBed(t, labkit.BedConfig{Prefix: fmt.Sprintf("ilbk%d-", os.Getpid()%100000), LAN: lan, LAN6: netip.MustParsePrefix("2001:db8:43::/64"),
		APIOn: apiOn, Nodes: nodes, Others: []string{"client"}, APIServer: apiserver.NewForKubelets})
	dir := t.TempDir()
	dp, err := datapath.Start(ctx, datapath.Config{Env: env, Lab: l, Nodes: nodes, Dir: filepath.Join(dir, "datapath"), Workloads: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(dp.Close)
	kc, err := Grant(ctx, env, dir)
	if err != nil {
		t.Fatal(err)
	}
	b := &bed{l: l, env: env, dp: dp, nodes: map[string]*Node{}, root: root, image: image, archive: archive}
	for _, n := range nodes {
		start := time.Now()
		node, err := Start(ctx, Config{Env: env, Host: l.Hosts[n], Name: n, Dir: filepath.Join(dir, n), Kubeconfig: kc, CNI: dp.CNIConfig(n), Images: []string{archive}})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(node.Close)
		b.nodes[n] = node
		t.Logf("node %s: containerd up, images loaded, kubelet Ready in %s", n, time.Since(start).Round(time.Millisecond))
	}
	return b
}

// install applies the chart as `helm template | kubectl apply` does, each
// object through edit first.
func (b *bed) install(t *testing.T, ctx context.Context, edit func(*unstructured.Unstructured)) {
	t.Helper()
	if err := b.env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}}); err != nil {
		t.Fatal(err)
	}
	i := strings.LastIndex(b.image, ":")
	manifest, err := apiserver.Helm("template", "ironlb", filepath.Join(b.root, "charts", "ironlb"), "--namespace", namespace, "--include-crds",
		"--set", "image.repository="+b.image[:i], "--set", "image.tag="+b.image[i+1:])
	if err != nil {
		t.Fatal(err)
	}
	if edit != nil {
		dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
		var docs []string
		for {
			u := &unstructured.Unstructured{}
			if err := dec.Decode(&u.Object); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				t.Fatal(err)
			}
			if len(u.Object) == 0 {
				continue
			}
			edit(u)
			y, err := yaml.Marshal(u.Object)
			if err != nil {
				t.Fatal(err)
			}
			docs = append(docs, string(y))
		}
		manifest = strings.Join(docs, "---\n")
	}
	if _, err := apiserver.Apply(ctx, b.env.Client, manifest); err != nil {
		t.Fatal(err)
	}
}

// TestChartOnKubelets installs the chart as an admin does, on a cluster
// of two real kubelets (containerd v2, runc) with the scheduler and the
// workload controllers: the DaemonSet's speakers and the Deployment's
// controller run as real pods from the real image, the kubelets mount
// their tokens and Secrets and poll their probes, the runtime applies
// their securityContext, a LoadBalancer Service gets an address that a
// node answers ARP for, and backend pods the kubelets run answer through
// it.
func TestChartOnKubelets(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b := newBed(t, ctx)
	l, env, dp, running := b.l, b.env, b.dp, b.nodes
	installed := time.Now()
	b.install(t, ctx, nil)
	if _, err := WaitWorkloads(ctx, env.Client, namespace, running, 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	t.Logf("chart installed to every pod Ready: %s", time.Since(installed).Round(time.Millisecond))
	for _, line := range PodTimes(ctx, env.Client, namespace) {
		t.Log(line)
	}

	// What the runtime gave the containers is what the chart asks for:
	// its user and capabilities, no privilege escalation, and the
	// RuntimeDefault seccomp profile as containerd applies it.
	for _, w := range []struct {
		comm     string
		uid      string
		caps     uint64
		expected int
	}{
		{"speaker", "0", 1<<13 | 1<<12 | 1<<10, len(nodes)}, // NET_RAW, NET_ADMIN, NET_BIND_SERVICE
		{"controller", "65532", 0, 2},
	} {
		var pids []int
		for _, n := range running {
			pids = append(pids, n.Processes(w.comm)...)
		}
		if len(pids) != w.expected {
			t.Fatalf("%d %s processes in the nodes' cgroups, want %d", len(pids), w.comm, w.expected)
		}
		for _, pid := range pids {
			st := procStatus(t, pid)
			want := map[string]string{"Seccomp": "2", "NoNewPrivs": "1", "CapEff": fmt.Sprintf("%016x", w.caps), "CapBnd": fmt.Sprintf("%016x", w.caps)}
			for k, v := range want {
				if st[k] != v {
					t.Errorf("%s (pid %d): %s %s, want %s", w.comm, pid, k, st[k], v)
				}
			}
			if uid := strings.Fields(st["Uid"]); len(uid) == 0 || uid[0] != w.uid {
				t.Errorf("%s (pid %d): Uid %q, want %s", w.comm, pid, st["Uid"], w.uid)
			}
		}
		t.Logf("%d %s processes: uid %s, capabilities %#x, no new privileges, seccomp filter (containerd's RuntimeDefault)", len(pids), w.comm, w.uid, w.caps)
	}

	// The pods do their job: an address, announced by a node.
	for _, o := range []client.Object{
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.43.200-198.18.43.210"}}},
		&v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"lan"}}},
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(datapath.BackendPort), Protocol: corev1.ProtocolTCP}}}},
	} {
		if err := env.Client.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	vip, err := labkit.WaitIP(ctx, env.Client, "default", "web", 30*time.Second)
	if err != nil {
		t.Fatalf("%v\n%s", err, Diagnose(ctx, env.Client, namespace, running))
	}
	owner := ""
	for deadline := time.Now().Add(15 * time.Second); owner == "" && time.Now().Before(deadline); {
		mac, err := labkit.Resolve(l.Hosts["client"], vip, 300*time.Millisecond)
		if err != nil {
			continue
		}
		for _, n := range nodes {
			if l.Hosts[n].MAC.String() == mac.String() {
				owner = n
			}
		}
		if owner == "" {
			t.Fatalf("%s answered by %s, no node's MAC", vip, mac)
		}
	}
	if owner == "" {
		t.Fatalf("no node answers ARP for %s\n%s", vip, Diagnose(ctx, env.Client, namespace, running))
	}
	t.Logf("default/web has %s; %s's speaker pod answers ARP for it", vip, owner)

	// Backends as real pods: the kubelets run them from the backend
	// image, the EndpointSlice lists them, and the client's request
	// through the address reaches one.
	var pods []*datapath.Pod
	for _, n := range nodes {
		started := time.Now()
		p, err := dp.AddPod(ctx, datapath.PodSpec{Namespace: "default", Name: "web-" + n, Node: n, Labels: map[string]string{"app": "web"}})
		if err != nil {
			t.Fatalf("%v\n%s", err, running[n].PodLogs("default", "web-"+n, 10))
		}
		t.Logf("backend pod %s on %s runs at %s after %s", p.Name, n, p.IP, time.Since(started).Round(time.Millisecond))
		pods = append(pods, p)
	}
	took, err := dp.WaitEndpoints(ctx, "default", "web", 30*time.Second, pods...)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("both backends ready endpoints %s later", took.Round(time.Millisecond))
	// kube-proxy programs the new endpoints within moments of the
	// EndpointSlice; until then it rejects.
	var body string
	for deadline := time.Now().Add(10 * time.Second); ; {
		if body, err = labkit.Get(l.Hosts["client"], vip, 2*time.Second); err == nil || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	a, err := datapath.ParseAnswer(body)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("client → %s: answered by %s", vip, a)
	// Unready through the real kubelet's probe: the endpoint goes.
	pods[0].SetReady(false)
	if took, err = dp.WaitEndpoints(ctx, "default", "web", 30*time.Second, pods[1]); err != nil {
		t.Fatal(err)
	}
	t.Logf("%s unready: out of the EndpointSlice %s later (kubelet probe period 1 s)", pods[0].Name, took.Round(time.Millisecond))
	if err := pods[1].Delete(ctx); err != nil {
		t.Fatal(err)
	}
	for _, n := range running {
		if p := n.Problems(); p != "" {
			t.Error(p)
		}
	}
}

// procStatus returns the fields of /proc/PID/status.
func procStatus(t *testing.T, pid int) map[string]string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok {
			out[k] = strings.TrimSpace(v)
		}
	}
	return out
}

// TestBrokenPodsAreNamed: a chart whose speaker gets an argument it does
// not know and whose controller's liveness probe points at a path it
// does not serve. The speakers crash and never get ready; the kubelets
// restart the controllers on their failing probe. Waiting for the
// workloads fails naming each pod's workload and container, how it ended,
// the kubelet's events and the last log lines.
func TestBrokenPodsAreNamed(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	b := newBed(t, ctx)
	b.install(t, ctx, func(u *unstructured.Unstructured) {
		containers, _, _ := unstructured.NestedSlice(u.Object, "spec", "template", "spec", "containers")
		if len(containers) == 0 {
			return
		}
		c := containers[0].(map[string]any)
		switch u.GetKind() + "/" + u.GetName() {
		case "DaemonSet/ironlb-speaker":
			c["args"] = append(c["args"].([]any), "--no-such-flag")
		case "Deployment/ironlb-controller":
			c["livenessProbe"] = map[string]any{"httpGet": map[string]any{"path": "/nope", "port": "health"}, "periodSeconds": int64(1), "failureThreshold": int64(1)}
		}
		if err := unstructured.SetNestedSlice(u.Object, containers, "spec", "template", "spec", "containers"); err != nil {
			t.Fatal(err)
		}
	})
	// What the lab prints while it is up: each pod once per change for
	// the worse.
	reports := make(chan string, 100)
	wctx, stop := context.WithCancel(ctx)
	defer stop()
	go Watch(wctx, b.env.Client, namespace, b.nodes, 500*time.Millisecond, func(r string) { reports <- r })
	_, err := WaitWorkloads(ctx, b.env.Client, namespace, b.nodes, 25*time.Second)
	if err == nil {
		t.Fatal("a speaker with an unknown argument and a controller with a wrong liveness path: the workloads got ready")
	}
	msg := err.Error()
	for _, want := range []string{
		"(DaemonSet/ironlb-speaker)", "container speaker:", "no-such-flag", "BackOff",
		"(Deployment/ironlb-controller)", "container controller:", "Liveness probe failed: HTTP probe failed with statuscode: 404",
	} {
		if !strings.Contains(msg, want) {
			t.Errorf("the error does not say %q:\n%s", want, msg)
		}
	}
	t.Logf("%.1500s", msg)
	stop()
	watched := map[string]bool{}
	for len(reports) > 0 {
		r := <-reports
		for _, w := range []string{"(DaemonSet/ironlb-speaker)", "(Deployment/ironlb-controller)"} {
			if strings.Contains(r, w) && strings.Contains(r, "restarts") {
				watched[w] = true
			}
		}
	}
	if len(watched) != 2 {
		t.Errorf("Watch reported restarts of %v, want both the speakers and the controllers", watched)
	}
}
