package podman_test

import (
	"context"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
	"github.com/ironlb/ironlb/test/podman"
)

func TestRunArgs(t *testing.T) {
	spec := corev1.PodSpec{SecurityContext: &corev1.PodSecurityContext{RunAsNonRoot: ptr.To(true), RunAsUser: ptr.To[int64](65532), RunAsGroup: ptr.To[int64](65532),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault}}}
	ctr := corev1.Container{Name: "c", Image: "img:1", Command: []string{"/controller"}, Args: []string{"--a=1"},
		Env: []corev1.EnvVar{{Name: "NS", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.namespace"}}}, {Name: "X", Value: "y"}},
		SecurityContext: &corev1.SecurityContext{AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
			Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}, Add: []corev1.Capability{"NET_RAW"}}}}
	pod := podman.Pod{Name: "p", Network: "host", Fields: map[string]string{"metadata.namespace": "ns1"}, Volumes: map[string]string{podman.ServiceAccountVolume: "/sa"}}
	tests := []struct {
		name    string
		mut     func(*corev1.PodSpec, *corev1.Container, *podman.Pod)
		want    []string // consecutive words that must appear
		wantErr string
	}{
		{name: "chart-like", want: []string{"--user 65532:65532", "--read-only", "--security-opt no-new-privileges", "--cap-drop ALL", "--cap-add NET_RAW",
			"--env NS=ns1", "--env X=y", "--volume /sa:" + podman.ServiceAccountDir + ":ro", "--entrypoint /controller", "img:1 --a=1"}},
		{name: "container user wins", mut: func(_ *corev1.PodSpec, c *corev1.Container, _ *podman.Pod) {
			c.SecurityContext.RunAsUser = ptr.To[int64](7)
		}, want: []string{"--user 7:65532"}},
		{name: "no token", mut: func(s *corev1.PodSpec, _ *corev1.Container, p *podman.Pod) {
			s.AutomountServiceAccountToken = ptr.To(false)
			p.Volumes = nil
		}, want: []string{"img:1"}},
		{name: "secret env", mut: func(_ *corev1.PodSpec, c *corev1.Container, _ *podman.Pod) {
			c.Env = []corev1.EnvVar{{Name: "S", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{Key: "k"}}}}
		}, wantErr: "env S: only values and fieldRefs"},
		{name: "unknown field", mut: func(_ *corev1.PodSpec, _ *corev1.Container, p *podman.Pod) { p.Fields = nil }, wantErr: "no value for field metadata.namespace"},
		{name: "missing volume", mut: func(_ *corev1.PodSpec, c *corev1.Container, _ *podman.Pod) {
			c.VolumeMounts = []corev1.VolumeMount{{Name: "key", MountPath: "/key"}}
		}, wantErr: "no directory for volume key"},
		{name: "root despite runAsNonRoot", mut: func(s *corev1.PodSpec, _ *corev1.Container, _ *podman.Pod) { s.SecurityContext.RunAsUser = nil }, wantErr: "runAsNonRoot"},
		{name: "two-word command", mut: func(_ *corev1.PodSpec, c *corev1.Container, _ *podman.Pod) { c.Command = []string{"sh", "-c"} }, wantErr: "command of 2 words"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, c, p := *spec.DeepCopy(), *ctr.DeepCopy(), pod
			if tt.mut != nil {
				tt.mut(&s, &c, &p)
			}
			args, err := podman.RunArgs(s, c, p)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			line := " " + strings.Join(args, " ") + " "
			for _, w := range tt.want {
				if !strings.Contains(line, " "+w+" ") {
					t.Errorf("%q lacks %q", line, w)
				}
			}
		})
	}
}

// chart is a real API server with the chart installed, rendered for the
// image `make image` built and loaded into a podman store of the test.
type chart struct {
	t     *testing.T
	ctx   context.Context
	pm    *podman.Podman
	env   *apiserver.Env
	cl    podman.Cluster
	image string
	specs map[string]corev1.PodSpec // "Kind/name"
}

const ns = "ironlb-system"

// newChart serves the API server on addr ("" = loopback).
func newChart(t *testing.T, addr string) *chart {
	root, err := apiserver.Root()
	if err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(root, "bin", "image", "ironlb-linux-amd64.tar")
	if _, err := os.Stat(archive); err != nil {
		t.Fatalf("%v: run `make image` (make test does)", err)
	}
	pm, err := podman.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pm.Close)
	image, err := pm.Load(archive)
	if err != nil {
		t.Fatal(err)
	}
	repo, tag := image[:strings.LastIndex(image, ":")], image[strings.LastIndex(image, ":")+1:]

	env, err := apiserver.NewBareOn(addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	if err := env.Client.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	manifest, err := apiserver.Helm("template", "ironlb", filepath.Join(root, "charts", "ironlb"), "--namespace", ns, "--include-crds",
		"--set", "image.repository="+repo, "--set", "image.tag="+tag)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := apiserver.Apply(ctx, env.Client, manifest)
	if err != nil {
		t.Fatal(err)
	}
	specs, err := podman.PodSpecs(objs)
	if err != nil {
		t.Fatal(err)
	}
	for key, spec := range specs {
		if spec.Containers[0].Image != image {
			t.Fatalf("%s's image is %q, want the loaded %q", key, spec.Containers[0].Image, image)
		}
	}
	cl := podman.Cluster{Client: env.Client, Host: env.Config.Host, CA: env.Config.CAData,
		Token: func(ctx context.Context, namespace, name string) (string, error) {
			cfg, _, err := env.ServiceAccount(ctx, namespace, name)
			if err != nil {
				return "", err
			}
			return cfg.BearerToken, nil
		}}
	return &chart{t: t, ctx: ctx, pm: pm, env: env, cl: cl, image: image, specs: specs}
}

// run starts the first container of a rendered workload as its kubelet
// would and returns the time to its readiness.
func (c *chart) run(key string, pod podman.Pod, probe podman.Getter) time.Duration {
	c.t.Helper()
	spec, ok := c.specs[key]
	if !ok {
		c.t.Fatalf("the chart renders no %s", key)
	}
	ready, err := c.pm.RunPod(c.ctx, c.cl, ns, spec, pod, probe)
	if err != nil {
		c.t.Fatal(err)
	}
	return ready
}

// checkRunning holds a container to what the chart asked for.
func (c *chart) checkRunning(name, want string) {
	c.t.Helper()
	state, err := c.pm.Run("inspect", "--format", "{{.State.Status}} {{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.EffectiveCaps}}", name)
	if err != nil || strings.TrimSpace(state) != want {
		c.t.Errorf("%s: state, user, read-only root, effective capabilities %q (%v), want %q; container:\n%s", name, state, err, want, c.pm.Describe(name))
	}
}

// startController runs the chart's controller Deployment on this
// machine's network (it is no hostNetwork pod, but the API server is on
// this machine).
func (c *chart) startController() time.Duration {
	ready := c.run("Deployment/ironlb-controller", podman.Pod{Name: "ironlb-controller", Network: "host"}, podman.HTTPGet)
	c.checkRunning("ironlb-controller", "running 65532:65532 true []")
	return ready
}

// TestControllerFromChart runs the controller from the image `make image`
// built, in podman, with exactly the chart's Deployment container spec
// (args, env, user, read-only root, no capabilities, the ServiceAccount
// token where the kubelet mounts it), against a real API server with the
// chart installed: its readiness probe must pass at the rendered path and
// port, and it must give a LoadBalancer Service its address.
func TestControllerFromChart(t *testing.T) {
	c := newChart(t, "")
	ready := c.startController()
	// It works under the chart's RBAC: a Service gets its address.
	pool := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.200-198.18.0.210"}}}
	if err := c.env.Client.Create(c.ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := c.env.Client.Create(c.ctx, lbService("web")); err != nil {
		t.Fatal(err)
	}
	ip, err := labkit.WaitIP(c.ctx, c.env.Client, "default", "web", 30*time.Second)
	if err != nil {
		t.Fatalf("%v; container:\n%s", err, c.pm.Describe("ironlb-controller"))
	}
	t.Logf("controller container from the chart's spec: podman run -> readiness probe passing %s; default/web got %s", ready.Round(time.Millisecond), ip)
}

func lbService(name string) *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: name}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
		Selector: map[string]string{"app": name},
		Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}}}
}

// TestSpeakerFromChart runs the whole chart from the image: the
// controller, and the speaker DaemonSet's container on two lab nodes (each
// a network namespace, as the pod's host network) with the chart's
// capabilities, mesh key Secret volume and downward-API env. The API
// server serves on the LAN, as a control-plane host would. Each speaker's
// readiness probe must pass inside its node, and a LAN client must reach
// a layer-2 Service through the node that answers ARP.
func TestSpeakerFromChart(t *testing.T) {
	const prefix = "ilbpm-"
	netlab.Cleanup(prefix)
	lab, err := netlab.New(prefix, netip.MustParsePrefix("198.18.42.0/24"), netip.MustParsePrefix("2001:db8:42::/64"), 11, "node1", "node2", "client")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	apiAddr := netip.MustParsePrefix("198.18.42.250/24")
	if err := lab.AttachThisHost(apiAddr); err != nil {
		t.Fatal(err)
	}
	c := newChart(t, apiAddr.Addr().String())
	nodes := []string{"node1", "node2"}
	for _, n := range nodes {
		if err := labkit.CreateNode(c.ctx, c.env.Client, n, lab.Hosts[n]); err != nil {
			t.Fatal(err)
		}
	}
	c.startController()

	for _, n := range nodes {
		h := lab.Hosts[n]
		ready := c.run("DaemonSet/ironlb-speaker", podman.Pod{Name: "ironlb-speaker-" + n, Network: "ns:/run/netns/" + h.Name,
			Fields: map[string]string{"spec.nodeName": n}}, podman.GetInNS(h.Name))
		t.Logf("speaker container on %s: podman run -> readiness probe passing %s", n, ready.Round(time.Millisecond))
		c.checkRunning("ironlb-speaker-"+n, "running 0 true [CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW]")
	}

	for _, o := range []client.Object{
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.42.200-198.18.42.210"}}},
		&v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"lan"}}},
		lbService("web"),
	} {
		if err := c.env.Client.Create(c.ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	vip, err := labkit.WaitIP(c.ctx, c.env.Client, "default", "web", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if err := labkit.ServePods(c.ctx, lab.Hosts[n], n, vip); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		body, err := labkit.Get(lab.Hosts["client"], vip, time.Second)
		if err == nil {
			t.Logf("the LAN client reached %s through the speakers from the image: %s", vip, strings.TrimSpace(body))
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the LAN client cannot reach %s: %v; speakers:\n%s\n%s", vip, err, c.pm.Describe("ironlb-speaker-node1"), c.pm.Describe("ironlb-speaker-node2"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestWatchReportsExit: a container of the chart's controller spec with a
// wrong argument exits at once; Watch reports it once, naming where its
// spec came from, with the binary's own error.
func TestWatchReportsExit(t *testing.T) {
	c := newChart(t, "")
	spec := c.specs["Deployment/ironlb-controller"]
	spec.Containers[0].Args = append(spec.Containers[0].Args, "--no-such-flag")
	args, err := podman.RunArgs(spec, spec.Containers[0], podman.Pod{Name: "broken", Network: "none", Ulimits: podman.Ulimits,
		Fields: map[string]string{"metadata.namespace": ns}, Volumes: map[string]string{podman.ServiceAccountVolume: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.pm.Run(append([]string{"run"}, args...)...); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(c.ctx, 30*time.Second)
	defer cancel()
	reports := make(chan string, 4)
	go c.pm.Watch(ctx, map[string]string{"broken": "Deployment/ironlb-controller container controller"}, 100*time.Millisecond, func(r string) { reports <- r })
	select {
	case r := <-reports:
		if !strings.Contains(r, "Deployment/ironlb-controller container controller") || !strings.Contains(r, "is exited") || !strings.Contains(r, "exit 2") || !strings.Contains(r, "-kubeconfig") {
			t.Errorf("report %q lacks the spec's origin, the state, the exit code or the binary's output (its usage)", r)
		}
	case <-ctx.Done():
		t.Fatal("no report of the exited container")
	}
	time.Sleep(500 * time.Millisecond)
	if len(reports) > 0 {
		t.Errorf("reported twice: %q", <-reports)
	}
}
