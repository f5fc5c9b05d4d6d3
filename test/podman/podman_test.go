package podman_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
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
	image string
	objs  map[string]*unstructured.Unstructured // "Kind/name"
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
	out, err := pm.Run("load", "--input", archive)
	if err != nil {
		t.Fatal(err)
	}
	_, image, ok := strings.Cut(strings.TrimSpace(out), "Loaded image: ")
	if !ok {
		t.Fatalf("podman load said %q", out)
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
	c := &chart{t: t, ctx: ctx, pm: pm, env: env, image: image, objs: map[string]*unstructured.Unstructured{}}
	for _, o := range objs {
		c.objs[o.GetKind()+"/"+o.GetName()] = o
	}
	return c
}

// podSpec returns the pod template of a rendered workload.
func (c *chart) podSpec(key string, into runtime.Object) corev1.PodSpec {
	c.t.Helper()
	o, ok := c.objs[key]
	if !ok {
		c.t.Fatalf("the chart renders no %s", key)
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
		c.t.Fatal(err)
	}
	var spec corev1.PodSpec
	switch w := into.(type) {
	case *appsv1.Deployment:
		spec = w.Spec.Template.Spec
	case *appsv1.DaemonSet:
		spec = w.Spec.Template.Spec
	}
	if spec.Containers[0].Image != c.image {
		c.t.Fatalf("%s's image is %q, want the loaded %q", key, spec.Containers[0].Image, c.image)
	}
	return spec
}

// tokenDir writes the token, CA and namespace the kubelet would mount for
// the pod's ServiceAccount, readable by any user.
func (c *chart) tokenDir(sa string) string {
	c.t.Helper()
	cfg, _, err := c.env.ServiceAccount(c.ctx, ns, sa)
	if err != nil {
		c.t.Fatal(err)
	}
	dir := filepath.Join(c.t.TempDir(), "sa")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		c.t.Fatal(err)
	}
	for f, data := range map[string][]byte{"token": []byte(cfg.BearerToken), "ca.crt": c.env.Config.CAData, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(dir, f), data, 0o644); err != nil {
			c.t.Fatal(err)
		}
	}
	return dir
}

// kubeletEnv is what the kubelet adds: where the API server is.
func (c *chart) kubeletEnv() map[string]string {
	host, err := url.Parse(c.env.Config.Host)
	if err != nil {
		c.t.Fatal(err)
	}
	return map[string]string{"KUBERNETES_SERVICE_HOST": host.Hostname(), "KUBERNETES_SERVICE_PORT": host.Port()}
}

// ulimits: runc cannot set podman's defaults inside this VM.
var ulimits = []string{"nofile=20000:20000", "nproc=4096:4096"}

// run starts the pod's first container and waits for its readiness probe
// (fetched by get, from the pod's network), returning the time from
// `podman run` to the first passing probe.
func (c *chart) run(spec corev1.PodSpec, pod podman.Pod, get func(url string) (int, error)) time.Duration {
	c.t.Helper()
	ctr := spec.Containers[0]
	args, err := podman.RunArgs(spec, ctr, pod)
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Logf("podman run %s", strings.Join(args, " "))
	start := time.Now()
	if _, err := c.pm.Run(append([]string{"run"}, args...)...); err != nil {
		c.t.Fatal(err)
	}
	probe := ctr.ReadinessProbe.HTTPGet
	port := probe.Port.IntValue()
	if probe.Port.Type == intstr.String {
		for _, p := range ctr.Ports {
			if p.Name == probe.Port.StrVal {
				port = int(p.ContainerPort)
			}
		}
	}
	readyURL := fmt.Sprintf("http://127.0.0.1:%d%s", port, probe.Path)
	for {
		code, err := get(readyURL)
		if err == nil && code == http.StatusOK {
			return time.Since(start)
		}
		if time.Since(start) > time.Minute {
			c.t.Fatalf("%s: readiness probe %s not passing a minute after start (%d, %v); container log:\n%s", pod.Name, readyURL, code, err, c.logs(pod.Name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// logs returns the container's state and the last lines of its output.
func (c *chart) logs(name string) string {
	state, err := c.pm.Run("inspect", "--format", "{{.State.Status}} exit {{.State.ExitCode}} {{.State.Error}}", name)
	return fmt.Sprintf("%s%v\n%s", state, err, c.pm.Logs(name, 30))
}

// checkRunning holds a container to what the chart asked for.
func (c *chart) checkRunning(name, want string) {
	c.t.Helper()
	state, err := c.pm.Run("inspect", "--format", "{{.State.Status}} {{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.EffectiveCaps}}", name)
	if err != nil || strings.TrimSpace(state) != want {
		c.t.Errorf("%s: state, user, read-only root, effective capabilities %q (%v), want %q; log:\n%s", name, state, err, want, c.logs(name))
	}
}

func httpGet(url string) (int, error) { return get(http.DefaultClient, url) }

func get(c *http.Client, url string) (int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// inNS fetches from inside a network namespace, as a kubelet on a
// hostNetwork pod's node probes it: each connection is dialled there.
func inNS(name string) func(url string) (int, error) {
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netlab.InNS(name, func() (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, network, addr) })
		}}}
	return func(url string) (int, error) { return get(c, url) }
}

// startController runs the chart's controller Deployment on this
// machine's network (it is no hostNetwork pod, but the API server is on
// this machine).
func (c *chart) startController() time.Duration {
	spec := c.podSpec("Deployment/ironlb-controller", &appsv1.Deployment{})
	ready := c.run(spec, podman.Pod{
		Name: "ironlb-controller", Network: "host",
		Fields:  map[string]string{"metadata.namespace": ns},
		Volumes: map[string]string{podman.ServiceAccountVolume: c.tokenDir(spec.ServiceAccountName)},
		Env:     c.kubeletEnv(), Ulimits: ulimits,
	}, httpGet)
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
		t.Fatalf("%v; container log:\n%s", err, c.logs("ironlb-controller"))
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
	lab, err := netlab.New(prefix, netip.MustParsePrefix("198.18.0.0/24"), netip.MustParsePrefix("2001:db8:18::/64"), 11, "node1", "node2", "client")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	apiAddr := netip.MustParsePrefix("198.18.0.250/24")
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

	spec := c.podSpec("DaemonSet/ironlb-speaker", &appsv1.DaemonSet{})
	volumes := map[string]string{podman.ServiceAccountVolume: c.tokenDir(spec.ServiceAccountName)}
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			t.Fatalf("speaker volume %s: only Secret volumes are translated", v.Name)
		}
		var sec corev1.Secret
		if err := c.env.Client.Get(c.ctx, client.ObjectKey{Namespace: ns, Name: v.Secret.SecretName}, &sec); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(t.TempDir(), v.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		mode := os.FileMode(0o644)
		if v.Secret.DefaultMode != nil {
			mode = os.FileMode(*v.Secret.DefaultMode)
		}
		for k, data := range sec.Data {
			if err := os.WriteFile(filepath.Join(dir, k), data, mode); err != nil {
				t.Fatal(err)
			}
		}
		volumes[v.Name] = dir
	}
	for _, n := range nodes {
		h := lab.Hosts[n]
		ready := c.run(spec, podman.Pod{
			Name: "ironlb-speaker-" + n, Network: "ns:/run/netns/" + h.Name,
			Fields:  map[string]string{"metadata.namespace": ns, "spec.nodeName": n},
			Volumes: volumes, Env: c.kubeletEnv(), Ulimits: ulimits,
		}, inNS(h.Name))
		t.Logf("speaker container on %s: podman run -> readiness probe passing %s", n, ready.Round(time.Millisecond))
		c.checkRunning("ironlb-speaker-"+n, "running 0 true [CAP_NET_ADMIN CAP_NET_BIND_SERVICE CAP_NET_RAW]")
	}

	for _, o := range []client.Object{
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.200-198.18.0.210"}}},
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
			t.Fatalf("the LAN client cannot reach %s: %v; speaker logs:\n%s\n%s", vip, err, c.logs("ironlb-speaker-node1"), c.logs("ironlb-speaker-node2"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}
