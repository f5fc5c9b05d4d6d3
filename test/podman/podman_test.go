package podman_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/labkit"
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

// TestControllerFromChart runs the controller from the image `make image`
// built, in podman, with exactly the chart's Deployment container spec
// (args, env, user, read-only root, no capabilities, the ServiceAccount
// token where the kubelet mounts it), against a real API server with the
// chart installed: its readiness probe must pass at the rendered path and
// port, and it must give a LoadBalancer Service its address.
func TestControllerFromChart(t *testing.T) {
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

	env, err := apiserver.NewBare()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "ironlb-system"
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
	var dep appsv1.Deployment
	for _, o := range objs {
		if o.GetKind() == "Deployment" && o.GetName() == "ironlb-controller" {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &dep); err != nil {
				t.Fatal(err)
			}
		}
	}
	if dep.Name == "" {
		t.Fatal("the chart renders no Deployment ironlb-controller")
	}
	spec := dep.Spec.Template.Spec
	ctr := spec.Containers[0]
	if ctr.Image != image {
		t.Fatalf("the chart's image is %q, want the loaded %q", ctr.Image, image)
	}

	// The token, CA and namespace the kubelet would mount, readable by
	// the chart's user.
	cfg, _, err := env.ServiceAccount(ctx, ns, spec.ServiceAccountName)
	if err != nil {
		t.Fatal(err)
	}
	saDir := filepath.Join(t.TempDir(), "sa")
	if err := os.MkdirAll(saDir, 0o755); err != nil {
		t.Fatal(err)
	}
	for f, data := range map[string][]byte{"token": []byte(cfg.BearerToken), "ca.crt": env.Config.CAData, "namespace": []byte(ns)} {
		if err := os.WriteFile(filepath.Join(saDir, f), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	host, err := url.Parse(env.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	args, err := podman.RunArgs(spec, ctr, podman.Pod{
		Name:    "ironlb-controller",
		Network: "host", // the API server listens on this machine's loopback
		Fields:  map[string]string{"metadata.namespace": ns},
		Volumes: map[string]string{podman.ServiceAccountVolume: saDir},
		Env:     map[string]string{"KUBERNETES_SERVICE_HOST": host.Hostname(), "KUBERNETES_SERVICE_PORT": host.Port()},
		Ulimits: []string{"nofile=20000:20000", "nproc=4096:4096"},
	})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if _, err := pm.Run(append([]string{"run"}, args...)...); err != nil {
		t.Fatal(err)
	}
	logs := func() string { out, _ := pm.Run("logs", "--tail", "30", "ironlb-controller"); return out }
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
		resp, err := http.Get(readyURL)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				break
			}
		}
		if time.Since(start) > time.Minute {
			t.Fatalf("readiness probe %s not passing a minute after start (%v); container log:\n%s", readyURL, err, logs())
		}
		time.Sleep(20 * time.Millisecond)
	}
	ready := time.Since(start)

	// It works under the chart's RBAC: a Service gets its address.
	pool := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.200-198.18.0.210"}}}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer,
		Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}}}
	if err := env.Client.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if err := env.Client.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	ip, err := labkit.WaitIP(ctx, env.Client, "default", "web", 30*time.Second)
	if err != nil {
		t.Fatalf("%v; container log:\n%s", err, logs())
	}
	t.Logf("controller container from the chart's spec: podman run -> readiness probe %s passing %s; default/web got %s", probe.Path, ready.Round(time.Millisecond), ip)
	t.Logf("podman run %s", strings.Join(args, " "))
	if state, _ := pm.Run("inspect", "--format", "{{.State.Status}} {{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", "ironlb-controller"); strings.TrimSpace(state) != "running 65532:65532 true" {
		t.Errorf("container state, user, read-only root: %q, want running 65532:65532 true", state)
	}
}
