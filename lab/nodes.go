package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/datapath"
	"github.com/ironlb/ironlb/test/kubelet"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
	"github.com/ironlb/ironlb/test/proc"
)

// startNodes runs a real node (containerd, kubelet) on every lab node,
// with the image loaded, and waits for the chart's DaemonSet and
// Deployment, which the scheduler and the kubelets then run, to be ready.
// stop ends the nodes.
func startNodes(ctx context.Context, env *apiserver.Env, dp *datapath.Cluster, lab *netlab.Lab, dir, archive string) (map[string]*kubelet.Node, func(), error) {
	running := map[string]*kubelet.Node{}
	stop := func() {
		for _, n := range running {
			n.Close()
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, stop, err
	}
	kc, err := kubelet.Grant(ctx, env, dir)
	if err != nil {
		return nil, stop, err
	}
	step("starting a real node on %s: containerd v2 with runc and the pause, backend and ironlb images loaded, and a kubelet v1.37 (cgroup v1, cgroupfs), each in the node's namespace", strings.Join(nodes, ", "))
	started := time.Now()
	for _, n := range nodes {
		node, err := kubelet.Start(ctx, kubelet.Config{Env: env, Host: lab.Hosts[n], Name: n, Dir: filepath.Join(dir, n),
			Kubeconfig: kc, CNI: dp.CNIConfig(n), Images: []string{archive}})
		if err != nil {
			return nil, stop, err
		}
		running[n] = node
	}
	step("every kubelet has its Node Ready (%s); the scheduler places the chart's pods", time.Since(started).Round(time.Millisecond))
	took, err := kubelet.WaitWorkloads(ctx, env.Client, labNamespace, running, 2*time.Minute)
	if err != nil {
		return running, stop, err
	}
	step("the kubelets run the chart's pods from the image, ready %s later (their probes pass):", took.Round(time.Millisecond))
	for _, line := range kubelet.PodTimes(ctx, env.Client, labNamespace) {
		fmt.Println("    " + line)
	}
	return running, stop, nil
}

// sweepNodes removes what a killed lab's real nodes left (containers,
// mounts, cgroups) under dir.
func sweepNodes(dir string) {
	for _, n := range nodes {
		kubelet.Sweep(filepath.Join(dir, n), nsPrefix+n)
	}
}

// startProcesses runs the controller and one speaker per node as host
// processes (lab -processes), each with its ServiceAccount's token:
// exactly the permissions the chart grants it. stop ends them.
func startProcesses(ctx context.Context, env *apiserver.Env, root, dir string, lab *netlab.Lab) (stop func(), err error) {
	var stops []func()
	stop = func() {
		for _, f := range slices.Backward(stops) {
			f()
		}
	}
	var key corev1.Secret
	if err := env.Client.Get(ctx, types.NamespacedName{Namespace: labNamespace, Name: "ironlb-mesh-key"}, &key); err != nil {
		return stop, err
	}
	keyFile := filepath.Join(dir, "mesh.key")
	if err := os.WriteFile(keyFile, key.Data["key"], 0o600); err != nil {
		return stop, err
	}
	saKubeconfig := func(sa string) (string, error) { return env.WriteKubeconfig(ctx, dir, labNamespace, sa) }
	step("starting the controller as ServiceAccount %s/ironlb-controller", labNamespace)
	ctrlKubeconfig, err := saKubeconfig("ironlb-controller")
	if err != nil {
		return stop, err
	}
	ctl, err := proc.Start("controller", filepath.Join(dir, "controller.log"), nil, filepath.Join(root, "bin", "controller"),
		"--kubeconfig="+ctrlKubeconfig, "--leader-election-namespace="+labNamespace,
		"--metrics-bind-address=0", "--health-probe-bind-address=0")
	if err != nil {
		return stop, fmt.Errorf("%w (run `make build` first)", err)
	}
	stops = append(stops, func() { ctl.Stop(10 * time.Second) })
	step("starting a speaker per node as ServiceAccount %s/ironlb-speaker", labNamespace)
	spkKubeconfig, err := saKubeconfig("ironlb-speaker")
	if err != nil {
		return stop, err
	}
	for _, n := range nodes {
		s, err := labkit.StartSpeaker(root, dir, n, lab.Hosts[n], spkKubeconfig, keyFile, "--namespace="+labNamespace)
		if err != nil {
			return stop, err
		}
		stops = append(stops, s.Stop)
	}
	return stop, nil
}

// labConfig is the lab's ironlb configuration: a LAN pool announced in
// layer 2, and a routed pool announced over BGP to the router.
func labConfig(router netip.Addr) []client.Object {
	return []client.Object{
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"},
			Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.200-198.18.0.220", "2001:db8:18::200-2001:db8:18::220"}}},
		&v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"},
			Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"lan"}}},
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "routed"},
			Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.19.0.0/24"}, AutoAssign: ptr.To(false), AvoidBuggyIPs: true}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: labNamespace, Name: "bgp-password"},
			Data: map[string][]byte{"password": []byte(bgpPassword)}},
		// BFD takes a dead node out of the router's ECMP set in under a
		// second; without it the router waits out the hold time (90 s).
		&v1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "fast"}, Spec: v1beta1.BFDProfileSpec{
			ReceiveInterval: ptr.To[int32](300), TransmitInterval: ptr.To[int32](300), DetectMultiplier: ptr.To[int32](3),
		}},
		&v1beta1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router"}, Spec: v1beta1.BGPPeerSpec{
			MyASN: nodeASN, PeerASN: routerASN, PeerAddress: v1beta1.IPAddress(router.String()),
			PasswordSecret: &v1beta1.SecretKeyRef{Namespace: labNamespace, Name: "bgp-password", Key: "password"},
			BFDProfile:     "fast",
		}},
		&v1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "routed"}, Spec: v1beta1.BGPAdvertisementSpec{
			IPAddressPools: []v1beta1.PoolName{"routed"}, Communities: []v1beta1.CommunityValue{"64512:100"},
		}},
	}
}

func labService(name string) *corev1.Service {
	pool := "lan"
	if name == "web-bgp" {
		pool = "routed"
	}
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: map[string]string{v1beta1.AnnotationAddressPool: pool}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(datapath.BackendPort), Protocol: corev1.ProtocolTCP}},
		},
	}
}

// waitCRDs waits until the API server serves the ironlb kinds.
func waitCRDs(ctx context.Context, env *apiserver.Env) error {
	deadline := time.Now().Add(30 * time.Second)
	for {
		var pools v1beta1.IPAddressPoolList
		err := env.Client.List(ctx, &pools)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("ironlb CRDs not served after 30s: %w", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
