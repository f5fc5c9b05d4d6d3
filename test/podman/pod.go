package podman

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/test/netlab"
	"github.com/ironlb/ironlb/test/proc"
)

// Ulimits: runc cannot set podman's defaults (nofile 1048576, nproc at
// the hard limit) inside this VM; these it can.
var Ulimits = []string{"nofile=20000:20000", "nproc=4096:4096"}

// Load loads a docker archive into the store and returns its image name.
func (p *Podman) Load(archive string) (string, error) {
	out, err := p.Run("load", "--input", archive)
	if err != nil {
		return "", err
	}
	_, image, ok := strings.Cut(strings.TrimSpace(out), "Loaded image: ")
	if !ok {
		return "", fmt.Errorf("podman load %s said %q", archive, out)
	}
	return image, nil
}

// PodSpecs returns the pod templates of the Deployments and DaemonSets
// among rendered objects, by "Kind/name".
func PodSpecs(objs []*unstructured.Unstructured) (map[string]corev1.PodSpec, error) {
	out := map[string]corev1.PodSpec{}
	for _, o := range objs {
		var spec corev1.PodSpec
		switch o.GetKind() {
		case "Deployment":
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				return nil, err
			}
			spec = d.Spec.Template.Spec
		case "DaemonSet":
			var d appsv1.DaemonSet
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				return nil, err
			}
			spec = d.Spec.Template.Spec
		default:
			continue
		}
		out[o.GetKind()+"/"+o.GetName()] = spec
	}
	return out, nil
}

// Cluster is what a pod's kubelet knows of the API server.
type Cluster struct {
	// Client reads the Secrets the pods mount.
	Client client.Client
	// Host is the API server's URL, CA its serving CA.
	Host string
	CA   []byte
	// Token returns a token of a ServiceAccount.
	Token func(ctx context.Context, namespace, name string) (string, error)
}

// Getter fetches a URL as the kubelet's prober does, returning the status.
type Getter func(url string) (int, error)

// HTTPGet probes from this machine's network.
func HTTPGet(url string) (int, error) { return get(http.DefaultClient, url) }

func get(c *http.Client, url string) (int, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

// GetInNS probes from inside a network namespace, as the kubelet of a
// hostNetwork pod's node does: each connection is dialled there.
func GetInNS(name string) Getter {
	c := (&netlab.Host{Name: name}).HTTPClient(0)
	return func(url string) (int, error) { return get(c, url) }
}

// RunPod does what a kubelet does for the first container of spec in
// namespace: it writes the ServiceAccount token and the Secret volumes
// under the store, adds the API server's address to the env, starts the
// container and waits for its readiness probe (fetched by probe). It
// returns the time from `podman run` to the first passing probe. pod
// gives the name and network; its Fields gain metadata.namespace.
func (p *Podman) RunPod(ctx context.Context, cl Cluster, namespace string, spec corev1.PodSpec, pod Pod, probe Getter) (time.Duration, error) {
	dir := filepath.Join(p.Dir, "pods", pod.Name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	vols := map[string]string{}
	for k, v := range pod.Volumes {
		vols[k] = v
	}
	fields := map[string]string{"metadata.namespace": namespace}
	for k, v := range pod.Fields {
		fields[k] = v
	}
	pod.Volumes, pod.Fields = vols, fields
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		token, err := cl.Token(ctx, namespace, spec.ServiceAccountName)
		if err != nil {
			return 0, err
		}
		sa := filepath.Join(dir, "serviceaccount")
		if err := writeFiles(sa, map[string][]byte{"token": []byte(token), "ca.crt": cl.CA, "namespace": []byte(namespace)}, 0o644); err != nil {
			return 0, err
		}
		vols[ServiceAccountVolume] = sa
	}
	for _, v := range spec.Volumes {
		if v.Secret == nil {
			return 0, fmt.Errorf("pod %s volume %s: only Secret volumes are translated", pod.Name, v.Name)
		}
		var sec corev1.Secret
		if err := cl.Client.Get(ctx, client.ObjectKey{Namespace: namespace, Name: v.Secret.SecretName}, &sec); err != nil {
			return 0, fmt.Errorf("pod %s volume %s: %w", pod.Name, v.Name, err)
		}
		mode := os.FileMode(0o644)
		if v.Secret.DefaultMode != nil {
			mode = os.FileMode(*v.Secret.DefaultMode)
		}
		if err := writeFiles(filepath.Join(dir, v.Name), sec.Data, mode); err != nil {
			return 0, err
		}
		vols[v.Name] = filepath.Join(dir, v.Name)
	}
	host, err := url.Parse(cl.Host)
	if err != nil {
		return 0, err
	}
	env := map[string]string{"KUBERNETES_SERVICE_HOST": host.Hostname(), "KUBERNETES_SERVICE_PORT": host.Port()}
	for k, v := range pod.Env {
		env[k] = v
	}
	pod.Env = env
	if pod.Ulimits == nil {
		pod.Ulimits = Ulimits
	}
	ctr := spec.Containers[0]
	args, err := RunArgs(spec, ctr, pod)
	if err != nil {
		return 0, err
	}
	start := time.Now()
	if _, err := p.Run(append([]string{"run"}, args...)...); err != nil {
		return 0, err
	}
	if ctr.ReadinessProbe == nil || ctr.ReadinessProbe.HTTPGet == nil {
		return 0, fmt.Errorf("pod %s: container %s has no HTTP readiness probe to wait for", pod.Name, ctr.Name)
	}
	hg := ctr.ReadinessProbe.HTTPGet
	port := hg.Port.IntValue()
	if hg.Port.Type == intstr.String {
		for _, cp := range ctr.Ports {
			if cp.Name == hg.Port.StrVal {
				port = int(cp.ContainerPort)
			}
		}
	}
	readyURL := fmt.Sprintf("http://127.0.0.1:%d%s", port, hg.Path)
	for {
		code, err := probe(readyURL)
		if err == nil && code == http.StatusOK {
			return time.Since(start), nil
		}
		if time.Since(start) > time.Minute || ctx.Err() != nil {
			return 0, fmt.Errorf("pod %s: readiness probe %s not passing %s after start (%d, %v); container:\n%s", pod.Name, readyURL, time.Since(start).Round(time.Second), code, err, p.Describe(pod.Name))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Describe returns a container's state and the last lines of its output.
func (p *Podman) Describe(name string) string {
	state, err := p.Run("inspect", "--format", "{{.State.Status}} exit {{.State.ExitCode}} {{.State.Error}}", name)
	if err != nil {
		state = err.Error()
	}
	return strings.TrimSpace(state) + "\n" + p.Logs(name, 30)
}

func writeFiles(dir string, files map[string][]byte, mode os.FileMode) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(dir, name), data, mode); err != nil {
			return err
		}
		if err := os.Chmod(filepath.Join(dir, name), mode); err != nil {
			return err
		}
	}
	return nil
}

// Watch reports, once each, the containers of names (container name →
// where its spec came from, e.g. the chart's workload and container) that
// stop running, with their state and last output, until ctx ends: a
// kubelet would restart them, the lab shows why instead.
func (p *Podman) Watch(ctx context.Context, names map[string]string, every time.Duration, report func(string)) {
	reported := map[string]bool{}
	proc.Poll(ctx, every, func() {
		for name, from := range names {
			if reported[name] {
				continue
			}
			state, err := p.Run("inspect", "--format", "{{.State.Status}}", name)
			if state = strings.TrimSpace(state); err != nil || state == "running" || state == "created" {
				continue
			}
			reported[name] = true
			report(fmt.Sprintf("container %s (%s) is %s:\n%s", name, from, state, p.Describe(name)))
		}
	})
}
