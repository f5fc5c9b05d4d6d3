// Package metallb runs MetalLB beside ironlb, for the side-by-side
// comparison (docs/comparison.md): its CRDs from its own module, its
// controller and its speakers as processes of their own (built by `make
// peers` into bin/peers/), and the objects that configure them. Nothing
// of MetalLB is imported: the binaries are MetalLB's releases built from
// source, run as a user would run them.
package metallb

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
	"github.com/ironlb/ironlb/test/proc"
)

const (
	// Namespace is where MetalLB's configuration and speaker pods live.
	Namespace = "metallb-system"
	// Class is the loadBalancerClass MetalLB takes when it runs beside
	// ironlb (which keeps the Services that set none).
	Class = "metallb.io/metallb"
	// Version is what hack/peers.sh builds.
	Version = "v0.15.2"
	// memberlistPort is MetalLB's memberlist port here: ironlb's mesh
	// has the default 7946 on the same nodes.
	memberlistPort = "7947"
	speakerLabels  = "app=metallb,component=speaker"
)

// Bin is the path of MetalLB's binary name ("controller", "speaker").
func Bin(name string) (string, error) {
	root, err := apiserver.Root()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", "peers", "metallb-"+name)
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%w: run `make peers`", err)
	}
	return bin, nil
}

// Install creates MetalLB's CRDs, from the module hack/peers.sh built,
// and its namespace.
func Install(ctx context.Context, c client.Client) error {
	root, err := apiserver.Root()
	if err != nil {
		return err
	}
	list := exec.Command("go", "list", "-mod=readonly", "-m", "-f", "{{.Dir}}", "go.universe.tf/metallb")
	list.Dir, list.Env = filepath.Join(root, "hack", "tools", "metallb"), append(os.Environ(), "GOWORK=off")
	dir, err := list.Output()
	if err != nil {
		return fmt.Errorf("go.universe.tf/metallb's module: %w (run `make peers`)", err)
	}
	crds, _ := filepath.Glob(filepath.Join(strings.TrimSpace(string(dir)), "config", "crd", "bases", "*.yaml"))
	if len(crds) == 0 {
		return fmt.Errorf("no CRDs in %s/config/crd/bases", strings.TrimSpace(string(dir)))
	}
	for _, f := range crds {
		y, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		if _, err := apiserver.Apply(ctx, c, widenASNs(string(y))); err != nil {
			return fmt.Errorf("MetalLB CRD %s: %w", filepath.Base(f), err)
		}
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: Namespace}}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	return nil
}

// int32ASN is how MetalLB v0.15.2's CRDs declare an AS number: an int32
// whose maximum is 2^32-1. Kubernetes 1.37 accepts the CRD but rejects
// every object that sets the field ("Maximum boundary value must be of
// type integer with format int32"), so no BGPPeer could be created.
var int32ASN = regexp.MustCompile(`format: int32\n(\s+)maximum: 4294967295`)

// widenASNs drops the int32 format of those fields, keeping their range:
// the one change made to MetalLB's CRDs, so that its BGP can run here.
func widenASNs(crd string) string { return int32ASN.ReplaceAllString(crd, "maximum: 4294967295") }

// Apply creates MetalLB objects (JSON or YAML), retrying for up to 30 s
// while a CRD just created is not served yet.
func Apply(ctx context.Context, c client.Client, manifest string) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, err := apiserver.Apply(ctx, c, manifest)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// object renders one MetalLB object of kind (metallb.io/version) in
// Namespace.
func object(version, kind, name string, spec map[string]any) string {
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "metallb.io/" + version, "kind": kind,
		"metadata": map[string]any{"name": name, "namespace": Namespace}, "spec": spec,
	})
	return string(b)
}

// Pool is an IPAddressPool of addrs (CIDRs or ranges), auto-assigned.
func Pool(name string, addrs ...string) string {
	return object("v1beta1", "IPAddressPool", name, map[string]any{"addresses": addrs})
}

// L2Advertisement announces pool in layer 2 from every node.
func L2Advertisement(name, pool string) string {
	return object("v1beta1", "L2Advertisement", name, map[string]any{"ipAddressPools": []string{pool}})
}

// BGPAdvertisement announces pool over BGP to every peer.
func BGPAdvertisement(name, pool string) string {
	return object("v1beta1", "BGPAdvertisement", name, map[string]any{"ipAddressPools": []string{pool}})
}

// BGPPeer peers every node with addr (native BGP: MetalLB's own
// implementation; BFD needs its FRR mode, which needs frr-k8s). Native
// mode refuses a keepalive time ("has keepalive-time set on native bgp
// mode"): it sends keepalives every third of the hold time.
func BGPPeer(name string, myASN, peerASN uint32, addr string, hold time.Duration) string {
	return object("v1beta2", "BGPPeer", name, map[string]any{"myASN": myASN, "peerASN": peerASN, "peerAddress": addr,
		"holdTime": hold.String()})
}

// StartController runs MetalLB's controller (webhooks off, as nothing
// here could call them) with its output in dir.
func StartController(dir, kubeconfig string, args ...string) (*proc.Proc, error) {
	bin, err := Bin("controller")
	if err != nil {
		return nil, err
	}
	argv := append([]string{bin, "--kubeconfig=" + kubeconfig, "--namespace=" + Namespace, "--webhook-mode=disabled",
		"--disable-cert-rotation", "--port=17472"}, args...)
	return proc.Start("metallb-controller", filepath.Join(dir, "metallb-controller.log"), nil, argv...)
}

// StartSpeaker runs MetalLB's speaker for node inside the node's
// namespace, as its DaemonSet pod would on the host network, with
// memberlist on the node's address (encrypted, as the chart sets it up).
// MetalLB's speaker reads its own Pod and finds its memberlist peers by
// listing the speaker Pods' IPs, so the Pod the DaemonSet would have made
// is registered first (no kubelet runs it: this process is it).
func StartSpeaker(ctx context.Context, c client.Client, dir, node string, h *netlab.Host, kubeconfig string, args ...string) (*labkit.Speaker, error) {
	bin, err := Bin("speaker")
	if err != nil {
		return nil, err
	}
	ip := h.IPv4.Addr().String()
	pod := "speaker-" + node
	if err := registerPod(ctx, c, pod, node, ip); err != nil {
		return nil, err
	}
	keyDir := filepath.Join(dir, "metallb-memberlist")
	if err := os.MkdirAll(keyDir, 0o700); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(keyDir, "secretkey"), []byte("side-by-side-memberlist-key-0123"), 0o600); err != nil {
		return nil, err
	}
	argv := append([]string{"--kubeconfig=" + kubeconfig, "--namespace=" + Namespace, "--node-name=" + node, "--pod-name=" + pod,
		"--ml-bindaddr=" + ip, "--ml-bindport=" + memberlistPort, "--ml-labels=" + speakerLabels, "--ml-secret-key-path=" + keyDir,
		"--port=17473"}, args...)
	p, err := labkit.StartIn(h, "metallb-speaker-"+node, filepath.Join(dir, "metallb-speaker-"+node+".log"), bin, argv...)
	if err != nil {
		return nil, err
	}
	return &labkit.Speaker{Proc: p, Node: node}, nil
}

// registerPod creates the speaker's Pod, Running with the node's address,
// unless it exists.
func registerPod(ctx context.Context, c client.Client, name, node, ip string) error {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: name, Labels: map[string]string{"app": "metallb", "component": "speaker"}},
		Spec: corev1.PodSpec{NodeName: node, HostNetwork: true,
			Containers: []corev1.Container{{Name: "speaker", Image: "quay.io/metallb/speaker:" + Version}}},
	}
	if err := c.Create(ctx, p); err != nil {
		if apierrors.IsAlreadyExists(err) {
			return nil
		}
		return fmt.Errorf("pod %s/%s: %w", Namespace, name, err)
	}
	p.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip, PodIPs: []corev1.PodIP{{IP: ip}}, HostIP: ip,
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if err := c.Status().Update(ctx, p); err != nil {
		return fmt.Errorf("pod %s/%s status: %w", Namespace, name, err)
	}
	return nil
}
