// Package kubelet runs real Kubernetes nodes on a netlab LAN: per node a
// containerd v2 (with Debian's runc and CNI plugins) and a kubelet v1.37,
// both built from source by hack/k8s-binaries.sh, so the chart's
// DaemonSet and Deployment run as real pods from the real image, with the
// kubelet mounting their ServiceAccount tokens and Secrets, enforcing
// their securityContext through the runtime and polling their liveness
// and readiness probes.
//
// Both run inside the node's network namespace, entered with nsenter
// alone: `ip netns exec` would also give each its own mount namespace,
// and the kubelet's volume mounts would then be invisible to containerd's
// containers. hostNetwork pods therefore share the node's network, as on
// a real node; other pods are plugged in by the CNI configuration the
// caller gives (test/datapath's ptp network).
//
// What this machine needs, and docs/kubelet.md explains: cgroup v1 (the
// kubelet's failCgroupV1 is off; Kubernetes 1.35 was the last release for
// containerd 1.x, so containerd is v2), the cgroupfs driver (no systemd),
// and containerd's restrict_oom_score_adj, because this sandbox's root has
// no CAP_SYS_RESOURCE and runc cannot give a pod's sandbox the -998 OOM
// score the kubelet asks for.
package kubelet

import (
	"context"
	"crypto/sha256"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/netlab"
	"github.com/ironlb/ironlb/test/proc"
)

// PauseImage is the pods' sandbox image hack/k8s-binaries.sh builds into
// bin/k8s/pause.tar (the upstream one is in a registry out of reach).
// Every node also loads bin/k8s/backend.tar, datapath.BackendImage.
const PauseImage = "localhost/ironlb-lab/pause:1"

// Config says what node to run.
type Config struct {
	// Env is the API server, serving on the LAN (apiserver.NewForKubelets).
	Env *apiserver.Env
	// Host is the node's namespace; Name its Node's name.
	Host *netlab.Host
	Name string
	// Dir holds everything of this node: containerd's images and state,
	// the kubelet's pods and volumes, logs. Close removes what is mounted
	// there.
	Dir string
	// Kubeconfig is the kubelet's identity (Grant).
	Kubeconfig string
	// CNI is the network configuration list for the node's pods that are
	// not on the host network (test/datapath's Cluster.CNIConfig).
	CNI []byte
	// Images are docker archives loaded into the node's containerd before
	// the kubelet starts, as a registry would serve them.
	Images []string
}

// Node is one running node.
type Node struct {
	cfg        Config
	bin        string
	cgroup     string // the node's cgroup root in every hierarchy
	containerd *proc.Proc
	kubelet    *proc.Proc
}

// Check says in one sentence what this machine lacks to run nodes, or nil.
func Check() error {
	var missing []string
	for tool, pkg := range map[string]string{"runc": "runc", "nsenter": "util-linux", "/usr/lib/cni/ptp": "containernetworking-plugins", "/usr/lib/cni/loopback": "containernetworking-plugins", "iptables": "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, fmt.Sprintf("%s (Debian package %s)", tool, pkg))
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("real kubelets need %s: run `make deps`", strings.Join(missing, ", "))
	}
	if _, err := os.Stat("/sys/fs/cgroup/pids"); err != nil {
		return fmt.Errorf("test/kubelet runs on a cgroup v1 hierarchy (this machine's kind), and /sys/fs/cgroup/pids is missing: %w", err)
	}
	return nil
}

// binaries returns bin/k8s, or which target builds what is missing.
func binaries() (string, error) {
	dir, err := apiserver.BinDir()
	if err != nil {
		return "", err
	}
	for _, b := range []string{"kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "pause.tar", "backend.tar"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run `make k8s-binaries` (it builds it from source)", b, dir)
		}
	}
	return dir, nil
}

// Grant makes the kubelets' identity, ServiceAccount kube-system/kubelet
// bound to the system:node role (no Node authorizer runs here), and
// writes its kubeconfig to dir.
func Grant(ctx context.Context, env *apiserver.Env, dir string) (string, error) {
	if err := env.Grant(ctx, "kubelet", "system:node"); err != nil {
		return "", err
	}
	return env.WriteKubeconfig(ctx, dir, metav1.NamespaceSystem, "kubelet")
}

// Start runs containerd, loads the images and runs the kubelet, until the
// node's Ready condition is True. On error it has cleaned up.
func Start(ctx context.Context, cfg Config) (_ *Node, err error) {
	if err := Check(); err != nil {
		return nil, err
	}
	bin, err := binaries()
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, bin: bin, cgroup: "/" + cfg.Host.Name}
	// A killed run's mounts and cgroups, if any.
	n.sweep()
	defer func() {
		if err != nil {
			n.Close()
		}
	}()
	for _, d := range []string{"cni", "logs", "pods"} {
		if err := os.MkdirAll(filepath.Join(cfg.Dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, "cni", "10-lab.conflist"), cfg.CNI, 0o644); err != nil {
		return nil, err
	}
	if err := makeCgroup(n.cgroup); err != nil {
		return nil, err
	}
	if err := n.startContainerd(ctx); err != nil {
		return nil, err
	}
	// The sandbox image and the lab's backend (datapath.BackendImage),
	// then the caller's.
	for _, img := range append([]string{filepath.Join(bin, "pause.tar"), filepath.Join(bin, "backend.tar")}, cfg.Images...) {
		if out, err := n.ctr("images", "import", img); err != nil {
			return nil, fmt.Errorf("node %s: load %s into containerd: %w: %s", cfg.Name, img, err, out)
		}
	}
	if err := n.startKubelet(); err != nil {
		return nil, err
	}
	if err := n.waitReady(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	return n, nil
}

// socket is containerd's API socket.
func (n *Node) socket() string { return socketOf(n.cfg.Dir) }

// socketOf is the API socket of the containerd of a node's Dir.
func socketOf(dir string) string { return filepath.Join(dir, "containerd.sock") }

// inNode is argv run in the node's network namespace, and only there.
func (n *Node) inNode(argv ...string) []string {
	return append([]string{"nsenter", "--net=/run/netns/" + n.cfg.Host.Name, "--"}, argv...)
}

// ctr runs containerd's client against this node's containerd, in the
// namespace the CRI plugin uses.
func (n *Node) ctr(args ...string) (string, error) {
	out, err := exec.Command(filepath.Join(n.bin, "ctr"), append([]string{"--address", n.socket(), "--namespace", "k8s.io"}, args...)...).CombinedOutput()
	return string(out), err
}

// startContainerd writes containerd's configuration and runs it, in a
// cgroup of the node's own so that every shim and container it starts
// can be found and stopped by Close.
func (n *Node) startContainerd(ctx context.Context) error {
	d := n.cfg.Dir
	conf := fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q
[plugins.'io.containerd.cri.v1.runtime']
  # No CAP_SYS_RESOURCE here: never below containerd's own OOM score.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = %q
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = "runc"
      SystemdCgroup = false
`, filepath.Join(d, "containerd"), filepath.Join(d, "state"), n.socket(), PauseImage, filepath.Join(d, "cni"))
	path := filepath.Join(d, "containerd.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := proc.Start("containerd-"+n.cfg.Name, filepath.Join(d, "logs", "containerd.log"),
		[]string{"PATH=" + n.bin + ":" + os.Getenv("PATH")}, n.inNode(filepath.Join(n.bin, "containerd"), "--config", path)...)
	if err != nil {
		return err
	}
	n.containerd = p
	if err := joinPids(n.cgroup+"/runtime", p.Pid()); err != nil {
		return err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.Dial("unix", n.socket()); err == nil {
			c.Close()
			return nil
		}
		if msg := p.Ended(); msg != "" {
			return fmt.Errorf("node %s: %s", n.cfg.Name, msg)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("node %s: containerd not serving on %s after 20 s; log %s", n.cfg.Name, n.socket(), p.Log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// startKubelet writes the kubelet's configuration and runs it. No kubelet
// server (no exec, logs or metrics through the API server: pod logs are
// read from PodLogs), cgroupfs under the node's cgroup root.
func (n *Node) startKubelet() error {
	d := n.cfg.Dir
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://%s
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %s
failSwapOn: false
enableServer: false
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
podLogsDir: %s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
authorization:
  mode: AlwaysAllow
`, n.socket(), n.cgroup, filepath.Join(d, "pods"))
	path := filepath.Join(d, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := proc.Start("kubelet-"+n.cfg.Name, filepath.Join(d, "logs", "kubelet.log"), nil, n.inNode(filepath.Join(n.bin, "kubelet"),
		"--config="+path, "--kubeconfig="+n.cfg.Kubeconfig, "--root-dir="+filepath.Join(d, "kubelet"), "--cert-dir="+filepath.Join(d, "pki"),
		"--hostname-override="+n.cfg.Name, "--node-ip="+n.cfg.Host.IPv4.Addr().String(), "--v=2")...)
	if err != nil {
		return err
	}
	n.kubelet = p
	return nil
}

// waitReady waits for the kubelet to report its Node Ready.
func (n *Node) waitReady(ctx context.Context, timeout time.Duration) error {
	start := metav1.Now().Rfc3339Copy() // heartbeats have 1 s resolution
	deadline := time.Now().Add(timeout)
	last := "no Node object"
	for {
		var node corev1.Node
		if err := n.cfg.Env.Client.Get(ctx, client.ObjectKey{Name: n.cfg.Name}, &node); err == nil {
			last = "no Ready condition from the kubelet yet"
			for _, c := range node.Status.Conditions {
				// The kubelet's own heartbeat, not a Ready condition
				// someone wrote before it started.
				if c.Type != corev1.NodeReady || node.Status.NodeInfo.KubeletVersion == "" || c.LastHeartbeatTime.Before(&start) {
					continue
				}
				if c.Status == corev1.ConditionTrue {
					return nil
				}
				last = fmt.Sprintf("Ready %s: %s: %s", c.Status, c.Reason, c.Message)
			}
		}
		if msg := n.Problems(); msg != "" {
			return fmt.Errorf("node %s: %s", n.cfg.Name, msg)
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("node %s not Ready after %s (%s); kubelet log %s", n.cfg.Name, timeout, last, n.kubelet.Log)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Problems says which of the node's components has stopped, or "".
func (n *Node) Problems() string { return proc.Ended(n.containerd, n.kubelet) }

// PodLogs returns, for each container of a pod on this node, the first
// lines and the last n of its latest run's log, as the kubelet keeps it: a
// crashed program usually says why first, then maybe its usage.
func (n *Node) PodLogs(namespace, pod string, lines int) string {
	dirs, _ := filepath.Glob(filepath.Join(n.cfg.Dir, "pods", namespace+"_"+pod+"_*", "*"))
	var out []string
	for _, d := range dirs {
		files, _ := filepath.Glob(filepath.Join(d, "*.log"))
		latest, run := "", -1
		for _, f := range files {
			if i, err := strconv.Atoi(strings.TrimSuffix(filepath.Base(f), ".log")); err == nil && i > run {
				latest, run = f, i
			}
		}
		if latest == "" {
			continue
		}
		b, _ := os.ReadFile(latest)
		all := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(all) > lines+3 {
			all = slices.Concat(all[:3], []string{"[...]"}, all[len(all)-lines:])
		}
		out = append(out, latest+":\n"+strings.Join(all, "\n"))
	}
	if len(out) == 0 {
		return fmt.Sprintf("(no logs of pod %s/%s on node %s)", namespace, pod, n.cfg.Name)
	}
	return strings.Join(out, "\n")
}

// Close stops the kubelet, kills every process of the node's cgroup
// (containerd, its shims, the pods' containers), and removes the
// node's mounts and cgroups.
func (n *Node) Close() {
	if n.kubelet != nil {
		n.kubelet.Stop(5 * time.Second)
	}
	n.sweep()
	if n.containerd != nil {
		n.containerd.Stop(time.Second)
	}
}

// sweep kills what runs in the node's cgroups, unmounts what is mounted
// under its Dir and removes the cgroups: what Close does, and what Start
// does first after a run that was killed.
func (n *Node) sweep() { Sweep(n.cfg.Dir, n.cfg.Host.Name) }

// Sweep removes what a node of Dir dir on the namespace named host left
// running, mounted or made (its pods' containers, shims, containerd, their
// mounts, cgroups and shim sockets), for a run that was killed before
// Close: `lab -down` calls it.
func Sweep(dir, host string) {
	cgroup := "/" + host
	sockets := shimSockets(dir)
	killCgroup(cgroup)
	for _, s := range sockets {
		_ = os.Remove(s)
	}
	unmountUnder(dir)
	removeCgroup(cgroup)
}

// shimSockets returns the sockets of the runc shims of the containerd
// whose files are under dir: containerd v2 puts them in /run/containerd/s
// whatever its state directory, named by the hash of its address, the
// namespace and the container's ID (each has a task directory in the
// state directory), and a killed shim leaves its socket there.
func shimSockets(dir string) []string {
	ids, _ := os.ReadDir(filepath.Join(dir, "state", "io.containerd.runtime.v2.task", "k8s.io"))
	var paths []string
	for _, id := range ids {
		sum := sha256.Sum256([]byte(filepath.Join(socketOf(dir), "k8s.io", id.Name())))
		paths = append(paths, fmt.Sprintf("/run/containerd/s/%x", sum))
	}
	return paths
}

// Processes returns the IDs of the processes named comm (their
// /proc/PID/comm) in the node's cgroups: a pod's container processes, to
// see what the runtime gave them.
func (n *Node) Processes(comm string) []int {
	var out []int
	for _, pid := range pidsUnder(n.cgroup) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && strings.TrimSpace(string(b)) == comm {
			out = append(out, pid)
		}
	}
	return out
}
