// Package podman runs ironlb's image in a real container runtime (Debian's
// podman with runc) with exactly the pod specs the Helm chart renders:
// RunArgs translates a Kubernetes container spec into `podman run`
// options mechanically, so a chart change that breaks the pod (a wrong
// argument, a missing capability, a write to the read-only root) breaks a
// test instead of a user's cluster. Every runtime file lives in a
// directory the caller owns.
package podman

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// Check says in one sentence why podman cannot run here, or nil.
func Check() error {
	if _, err := exec.LookPath("podman"); err != nil {
		return fmt.Errorf("podman is missing: run `make deps` (Debian packages podman and runc)")
	}
	return nil
}

// Podman is a podman with its own image store under Dir.
type Podman struct {
	Dir string
}

// New prepares a store under dir: vfs (works on any file system, also
// inside a VM's overlay), cgroupfs (no systemd here) and a file event log.
func New(dir string) (*Podman, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	conf := fmt.Sprintf("[storage]\ndriver = \"vfs\"\nrunroot = %q\ngraphroot = %q\n", filepath.Join(dir, "run"), filepath.Join(dir, "graph"))
	if err := os.WriteFile(filepath.Join(dir, "storage.conf"), []byte(conf), 0o644); err != nil {
		return nil, err
	}
	return &Podman{Dir: dir}, nil
}

// command is podman on this store: cgroupfs (no systemd here), a file
// event log, runtime files under Dir.
func (p *Podman) command(args ...string) *exec.Cmd {
	cmd := exec.Command("podman", append([]string{"--cgroup-manager=cgroupfs", "--events-backend=file", "--tmpdir", filepath.Join(p.Dir, "tmp")}, args...)...)
	cmd.Env = append(os.Environ(), "CONTAINERS_STORAGE_CONF="+filepath.Join(p.Dir, "storage.conf"))
	return cmd
}

// Run runs one podman command and returns its output.
func (p *Podman) Run(args ...string) (string, error) {
	cmd := p.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("podman %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(errb.String()))
	}
	return out.String(), nil
}

// Logs returns the last n lines a container wrote, both streams.
func (p *Podman) Logs(name string, n int) string {
	out, err := p.command("logs", "--tail", strconv.Itoa(n), name).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("%s(podman logs: %v)", out, err)
	}
	return string(out)
}

// Close removes every container and image of the store, and the store.
func (p *Podman) Close() {
	_, _ = p.Run("rm", "--all", "--force", "--time", "0")
	_, _ = p.Run("rmi", "--all", "--force")
	_ = os.RemoveAll(p.Dir)
}

// The ServiceAccount token's volume (as the kubelet names it) and where
// the kubelet mounts it: token, ca.crt and namespace, read by client-go's
// in-cluster config.
const (
	ServiceAccountVolume = "kube-api-access"
	ServiceAccountDir    = "/var/run/secrets/kubernetes.io/serviceaccount"
)

// Pod is what the translation needs beyond the container spec: the values
// of the downward API and where each volume is on this machine.
type Pod struct {
	Name string
	// Network is podman's --network: "host" on this machine's, or
	// "ns:/run/netns/NAME" for a node's (hostNetwork pods).
	Network string
	// Fields holds the values of fieldRef env vars by field path
	// (metadata.namespace, spec.nodeName, ...).
	Fields map[string]string
	// Volumes maps each volume name of the pod to a directory here.
	Volumes map[string]string
	// Env is added as the kubelet adds it (KUBERNETES_SERVICE_HOST, ...).
	Env map[string]string
	// Ulimits are podman's --ulimit values; runc fails to set podman's
	// defaults inside this VM.
	Ulimits []string
}

// RunArgs translates container c of pod spec into the arguments of
// `podman run`. Every field of the container that changes how it runs is
// either translated or refused with an error naming it, so nothing the
// chart sets is silently dropped.
func RunArgs(spec corev1.PodSpec, c corev1.Container, p Pod) ([]string, error) {
	// Output to a file, as the kubelet keeps it (no journald here).
	args := []string{"--name", p.Name, "--network", p.Network, "--detach", "--pull", "never", "--log-driver", "k8s-file"}
	for _, u := range p.Ulimits {
		args = append(args, "--ulimit", u)
	}
	// User and group: the container's securityContext over the pod's.
	uid, gid := int64(-1), int64(-1)
	nonRoot := false
	if psc := spec.SecurityContext; psc != nil {
		if psc.RunAsUser != nil {
			uid = *psc.RunAsUser
		}
		if psc.RunAsGroup != nil {
			gid = *psc.RunAsGroup
		}
		nonRoot = psc.RunAsNonRoot != nil && *psc.RunAsNonRoot
		if psc.SeccompProfile != nil && psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			return nil, fmt.Errorf("pod securityContext.seccompProfile %s: only RuntimeDefault (podman's default) is translated", psc.SeccompProfile.Type)
		}
	}
	if sc := c.SecurityContext; sc != nil {
		if sc.RunAsUser != nil {
			uid = *sc.RunAsUser
		}
		if sc.RunAsGroup != nil {
			gid = *sc.RunAsGroup
		}
		if sc.RunAsNonRoot != nil {
			nonRoot = *sc.RunAsNonRoot
		}
		if sc.Privileged != nil && *sc.Privileged {
			args = append(args, "--privileged")
		}
		if sc.ReadOnlyRootFilesystem != nil && *sc.ReadOnlyRootFilesystem {
			args = append(args, "--read-only", "--read-only-tmpfs=false")
		}
		if sc.AllowPrivilegeEscalation != nil && !*sc.AllowPrivilegeEscalation {
			args = append(args, "--security-opt", "no-new-privileges")
		}
		if caps := sc.Capabilities; caps != nil {
			for _, d := range caps.Drop {
				args = append(args, "--cap-drop", string(d))
			}
			for _, a := range caps.Add {
				args = append(args, "--cap-add", string(a))
			}
		}
	}
	if nonRoot && uid <= 0 {
		return nil, fmt.Errorf("container %s: runAsNonRoot without a runAsUser other than 0", c.Name)
	}
	if uid >= 0 {
		user := strconv.FormatInt(uid, 10)
		if gid >= 0 {
			user += ":" + strconv.FormatInt(gid, 10)
		}
		args = append(args, "--user", user)
	}
	for k, v := range p.Env {
		args = append(args, "--env", k+"="+v)
	}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom == nil:
			args = append(args, "--env", e.Name+"="+e.Value)
		case e.ValueFrom.FieldRef != nil:
			v, ok := p.Fields[e.ValueFrom.FieldRef.FieldPath]
			if !ok {
				return nil, fmt.Errorf("container %s env %s: no value for field %s", c.Name, e.Name, e.ValueFrom.FieldRef.FieldPath)
			}
			args = append(args, "--env", e.Name+"="+v)
		default:
			return nil, fmt.Errorf("container %s env %s: only values and fieldRefs are translated", c.Name, e.Name)
		}
	}
	if len(c.EnvFrom) > 0 {
		return nil, fmt.Errorf("container %s: envFrom is not translated", c.Name)
	}
	for _, m := range c.VolumeMounts {
		dir, ok := p.Volumes[m.Name]
		if !ok {
			return nil, fmt.Errorf("container %s volumeMount %s: no directory for volume %s", c.Name, m.MountPath, m.Name)
		}
		if m.SubPath != "" {
			dir = filepath.Join(dir, m.SubPath)
		}
		opt := dir + ":" + m.MountPath
		if m.ReadOnly {
			opt += ":ro"
		}
		args = append(args, "--volume", opt)
	}
	// The ServiceAccount token, where the kubelet mounts it unless the
	// pod opts out.
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		dir, ok := p.Volumes[ServiceAccountVolume]
		if !ok {
			return nil, fmt.Errorf("pod automounts its ServiceAccount token: no directory for volume %s", ServiceAccountVolume)
		}
		args = append(args, "--volume", dir+":"+ServiceAccountDir+":ro")
	}
	if len(c.Command) > 0 {
		if len(c.Command) > 1 {
			return nil, fmt.Errorf("container %s: a command of %d words is not translated", c.Name, len(c.Command))
		}
		args = append(args, "--entrypoint", c.Command[0])
	}
	if c.WorkingDir != "" {
		args = append(args, "--workdir", c.WorkingDir)
	}
	if lim, ok := c.Resources.Limits[corev1.ResourceMemory]; ok {
		args = append(args, "--memory", strconv.FormatInt(lim.Value(), 10))
	}
	args = append(args, c.Image)
	return append(args, c.Args...), nil
}
