package datapath

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/test/netlab"
)

// BackendPort is where every pod's backend listens (the Services'
// targetPort).
const BackendPort = 8080

// probePeriod is the pods' readiness probe period: Kubernetes' minimum.
const probePeriod = time.Second

// PodSpec is what AddPod makes.
type PodSpec struct {
	Namespace, Name, Node string
	Labels                map[string]string
	// Unready starts the backend with its readiness probe failing (see
	// Pod.SetReady).
	Unready bool
}

// Pod is a running pod: its namespace, plugged into its node, and its
// backend.
type Pod struct {
	Namespace, Name, Node string
	IP                    netip.Addr
	// Host is the pod's network namespace (to dial from inside the pod);
	// nil for a pod a real kubelet runs.
	Host *netlab.Host

	cl *Cluster
	// real: a real kubelet runs it (Config.Workloads).
	real  bool
	ready atomic.Bool
	// probe is the kubelet's last readiness probe result.
	probe  atomic.Value // string
	srv    *http.Server
	cancel context.CancelFunc
	done   chan struct{}
	once   sync.Once
	cniEnv []string
	cniIn  string
}

// Answer is what a backend answered: which pod on which node, and the
// source address it saw (the client's, or a node's after kube-proxy's
// SNAT).
type Answer struct {
	Pod, Node string
	From      netip.Addr
}

// ParseAnswer reads a backend's reply body.
func ParseAnswer(body string) (Answer, error) {
	var a Answer
	var from string
	if _, err := fmt.Sscanf(strings.TrimSpace(body), "pod=%s node=%s from=%s", &a.Pod, &a.Node, &from); err != nil {
		return a, fmt.Errorf("not a backend's answer: %q", body)
	}
	var err error
	a.From, err = netip.ParseAddr(from)
	return a, err
}

func (a Answer) String() string {
	return fmt.Sprintf("pod %s on %s, which saw source %s", a.Pod, a.Node, a.From)
}

// AddPod creates the Pod object bound to its node, makes its namespace,
// plugs it into the node with the CNI ptp plugin and an address from the
// node's pod CIDR (host-local IPAM), starts its backend (ready) and hands
// it to the lab kubelet, which writes its status from its readiness probe.
//
// With Config.Workloads, the node's real kubelet runs it instead, from
// BackendImage.
func (cl *Cluster) AddPod(ctx context.Context, spec PodSpec) (_ *Pod, err error) {
	node, ok := cl.cfg.Lab.Hosts[spec.Node]
	cidr, hasCIDR := cl.podCIDRs[spec.Node]
	if !ok || !hasCIDR {
		return nil, fmt.Errorf("pod %s/%s: node %q is not one of the cluster's (%s)", spec.Namespace, spec.Name, spec.Node, strings.Join(cl.cfg.Nodes, ", "))
	}
	if cl.cfg.Workloads {
		return cl.addRealPod(ctx, spec)
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name, Labels: spec.Labels},
		Spec: corev1.PodSpec{
			NodeName: spec.Node,
			Containers: []corev1.Container{{
				Name: "backend", Image: "lab.invalid/backend:v1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: BackendPort}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(BackendPort)}},
					PeriodSeconds: int32(probePeriod / time.Second), FailureThreshold: 1, SuccessThreshold: 1,
				},
			}},
		},
	}
	if err := cl.c.Create(ctx, obj); err != nil {
		return nil, fmt.Errorf("pod %s/%s: %w", spec.Namespace, spec.Name, err)
	}
	p := &Pod{Namespace: spec.Namespace, Name: spec.Name, Node: spec.Node, cl: cl, done: make(chan struct{})}
	defer func() {
		if err != nil {
			p.teardown()
			_ = cl.c.Delete(context.Background(), obj, client.GracePeriodSeconds(0))
		}
	}()
	if p.Host, err = cl.cfg.Lab.AddNamespace("p-" + spec.Name); err != nil {
		return nil, err
	}
	cl.mu.Lock()
	cl.pods[spec.Namespace+"/"+spec.Name] = p
	cl.mu.Unlock()
	if err := p.plug(node, cidr); err != nil {
		return nil, err
	}
	if err := p.serve(); err != nil {
		return nil, err
	}
	p.ready.Store(!spec.Unready)
	p.probe.Store("not probed yet")
	pctx, cancel := context.WithCancel(cl.kubelet.ctx)
	started := metav1.Now()
	if err := cl.kubelet.writeStatus(pctx, p, started, false); err != nil {
		cancel()
		return nil, fmt.Errorf("pod %s/%s status: %w", spec.Namespace, spec.Name, err)
	}
	cl.kubelet.run(pctx, p, started)
	p.cancel = cancel
	return p, nil
}

// cniResult is the part of a CNI ADD result we read.
type cniResult struct {
	IPs []struct {
		Address string `json:"address"`
	} `json:"ips"`
}

// plug runs the CNI ptp plugin in the node's namespace, as a kubelet's
// runtime would: a veth pair between pod and node, the pod's address and
// default route, the node's route to the pod.
func (p *Pod) plug(node *netlab.Host, cidr netip.Prefix) error {
	p.cniIn = `{"cniVersion":"1.0.0","name":"lab",` + p.cl.ptp(node.Name, cidr)[1:]
	p.cniEnv = []string{"CNI_CONTAINERID=" + p.Host.Name, "CNI_NETNS=/run/netns/" + p.Host.Name, "CNI_IFNAME=eth0", "CNI_PATH=/usr/lib/cni"}
	out, err := p.cni(node, "ADD")
	if err != nil {
		return err
	}
	var res cniResult
	if err := json.Unmarshal(out, &res); err != nil || len(res.IPs) == 0 {
		return fmt.Errorf("pod %s/%s: the CNI ptp plugin returned no address: %s", p.Namespace, p.Name, out)
	}
	addr, err := netip.ParsePrefix(res.IPs[0].Address)
	if err != nil {
		return fmt.Errorf("pod %s/%s: CNI address %q: %w", p.Namespace, p.Name, res.IPs[0].Address, err)
	}
	p.IP, p.Host.IPv4 = addr.Addr(), addr
	return nil
}

// ptp is the CNI ptp plugin's configuration for pods on node: one
// host-local allocator per node, shared by the pods we plug and those a
// real kubelet's containerd plugs (CNIConfig).
func (cl *Cluster) ptp(node string, cidr netip.Prefix) string {
	return fmt.Sprintf(`{"type":"ptp","ipMasq":false,`+
		`"ipam":{"type":"host-local","ranges":[[{"subnet":%q}]],"routes":[{"dst":"0.0.0.0/0"}],"dataDir":%q}}`,
		cidr.String(), filepath.Join(cl.cfg.Dir, "cni", node))
}

// CNIConfig is the network configuration list a container runtime on
// node (test/kubelet's containerd) plugs its pods in with: the same
// network as the pods AddPod makes.
func (cl *Cluster) CNIConfig(node string) []byte {
	return []byte(`{"cniVersion":"1.0.0","name":"lab","plugins":[` + cl.ptp(node, cl.podCIDRs[node]) + `]}`)
}

func (p *Pod) cni(node *netlab.Host, command string) ([]byte, error) {
	cmd := exec.Command("ip", "netns", "exec", node.Name, "/usr/lib/cni/ptp")
	cmd.Env = append(append(os.Environ(), "CNI_COMMAND="+command), p.cniEnv...)
	cmd.Stdin = strings.NewReader(p.cniIn)
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			out = append(out, ee.Stderr...)
		}
		return nil, fmt.Errorf("pod %s/%s: CNI ptp %s on %s: %w: %s", p.Namespace, p.Name, command, p.Node, err, strings.TrimSpace(string(out)))
	}
	return out, nil
}

// serve starts the backend in the pod's namespace: GET / answers with
// the pod, the node and the source address it saw; GET /ready is the
// readiness probe's path.
func (p *Pod) serve() error {
	ln, err := netlab.InNS(p.Host.Name, func() (net.Listener, error) {
		return net.Listen("tcp", fmt.Sprintf(":%d", BackendPort))
	})
	if err != nil {
		return fmt.Errorf("pod %s/%s: backend: %w", p.Namespace, p.Name, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) {
		if !p.ready.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		fmt.Fprintf(w, "pod=%s node=%s from=%s\n", p.Name, p.Node, host)
	})
	p.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return nil
}

// SetReady makes the backend's readiness probe pass or fail; the lab
// kubelet sees it within a probe period.
func (p *Pod) SetReady(ready bool) {
	p.ready.Store(ready)
	if p.real {
		p.setReal(ready)
	}
}

// Delete deletes the pod as the API server and a kubelet do together: the
// delete request marks it terminating, the kubelet stops the backend,
// unplugs and removes the namespace, then removes the object.
func (p *Pod) Delete(ctx context.Context) error {
	if p.real {
		return p.deleteReal(ctx)
	}
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
	if err := p.cl.c.Delete(ctx, obj); err != nil {
		return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	p.teardown()
	if err := p.cl.c.Delete(ctx, obj, client.GracePeriodSeconds(0)); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	return nil
}

// teardown stops the backend and the pod's status loop and removes its
// namespace (once).
func (p *Pod) teardown() {
	// A real pod has none of these: its kubelet stops it, and Close of
	// its test/kubelet node ends what is left.
	p.once.Do(func() {
		if p.cancel != nil {
			p.cancel()
			<-p.done
		}
		if p.srv != nil {
			_ = p.srv.Close()
		}
		if p.Host != nil {
			if p.cniIn != "" {
				_, _ = p.cni(p.cl.cfg.Lab.Hosts[p.Node], "DEL")
			}
			_ = p.cl.cfg.Lab.RemoveNamespace(p.Host)
		}
		p.cl.mu.Lock()
		delete(p.cl.pods, p.Namespace+"/"+p.Name)
		p.cl.mu.Unlock()
	})
}

// kubelet writes the status of the pods a kubelet would: Running, its
// addresses, and Ready as its readiness probe says, probed from the
// node's namespace every period.
type kubelet struct {
	ctx context.Context
	cl  *Cluster
	wg  sync.WaitGroup
}

func newKubelet(ctx context.Context, cl *Cluster) *kubelet { return &kubelet{ctx: ctx, cl: cl} }

func (k *kubelet) wait() { k.wg.Wait() }

func (k *kubelet) run(ctx context.Context, p *Pod, started metav1.Time) {
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer close(p.done)
		hc := k.cl.cfg.Lab.Hosts[p.Node].HTTPClient(probePeriod)
		url := fmt.Sprintf("http://%s/ready", netip.AddrPortFrom(p.IP, BackendPort))
		was := false
		t := time.NewTicker(probePeriod)
		defer t.Stop()
		for {
			ready := false
			if resp, err := hc.Get(url); err == nil {
				resp.Body.Close()
				ready = resp.StatusCode >= 200 && resp.StatusCode < 400
				p.probe.Store("readiness probe GET " + url + ": " + resp.Status)
			} else {
				p.probe.Store("readiness probe: " + err.Error())
			}
			if ready != was {
				if err := k.writeStatus(ctx, p, started, ready); err == nil {
					was = ready
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
}

func (k *kubelet) writeStatus(ctx context.Context, p *Pod, started metav1.Time, ready bool) error {
	node := k.cl.cfg.Lab.Hosts[p.Node].IPv4.Addr().String()
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		var obj corev1.Pod
		if err := k.cl.c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: p.Name}, &obj); err != nil {
			return err
		}
		now := metav1.Now()
		set := func(t corev1.PodConditionType, s corev1.ConditionStatus) corev1.PodCondition {
			for _, c := range obj.Status.Conditions {
				if c.Type == t && c.Status == s {
					return c
				}
			}
			return corev1.PodCondition{Type: t, Status: s, LastTransitionTime: now}
		}
		obj.Status = corev1.PodStatus{
			Phase:  corev1.PodRunning,
			HostIP: node, HostIPs: []corev1.HostIP{{IP: node}},
			PodIP: p.IP.String(), PodIPs: []corev1.PodIP{{IP: p.IP.String()}},
			StartTime: &started,
			Conditions: []corev1.PodCondition{
				set(corev1.PodReadyToStartContainers, corev1.ConditionTrue),
				set(corev1.PodInitialized, corev1.ConditionTrue),
				set(corev1.PodReady, cond),
				set(corev1.ContainersReady, cond),
				set(corev1.PodScheduled, corev1.ConditionTrue),
			},
			ContainerStatuses: []corev1.ContainerStatus{{
				Name: "backend", Image: "lab.invalid/backend:v1", ImageID: "lab.invalid/backend@sha256:" + strings.Repeat("0", 64),
				ContainerID: "lab://" + p.Host.Name, Ready: ready, Started: ptr.To(true),
				State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: started}},
			}},
		}
		if err := k.cl.c.Status().Update(ctx, &obj); err != nil {
			return err
		}
		return nil
	})
}

// WaitEndpoints waits until the EndpointSlices Kubernetes made for the
// Service list exactly the ready endpoints on the given pods, and returns
// how long that took.
func (cl *Cluster) WaitEndpoints(ctx context.Context, namespace, service string, timeout time.Duration, pods ...*Pod) (time.Duration, error) {
	start := time.Now()
	want := map[string]bool{}
	for _, p := range pods {
		want[p.IP.String()] = true
	}
	for {
		got, err := cl.ReadyEndpoints(ctx, namespace, service)
		if err == nil && len(got) == len(want) {
			match := true
			for ip := range got {
				match = match && want[ip]
			}
			if match {
				return time.Since(start), nil
			}
		}
		if time.Since(start) > timeout {
			var why []string
			for _, p := range pods {
				if _, ok := got[p.IP.String()]; !ok {
					why = append(why, fmt.Sprintf("pod %s/%s (%s) on %s is not a ready endpoint; last %s", p.Namespace, p.Name, p.IP, p.Node, p.probe.Load()))
				}
			}
			if err != nil {
				why = append(why, err.Error())
			}
			if pr := cl.Problems(); pr != "" {
				why = append(why, pr)
			}
			return 0, fmt.Errorf("service %s/%s: after %s the EndpointSlices list ready endpoints %v, want %d: %s", namespace, service, timeout, got, len(want), strings.Join(why, "; "))
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ReadyEndpoints returns the ready endpoints (address → node) of the
// Service's EndpointSlices.
func (cl *Cluster) ReadyEndpoints(ctx context.Context, namespace, service string) (map[string]string, error) {
	var slices discoveryv1.EndpointSliceList
	if err := cl.c.List(ctx, &slices, client.InNamespace(namespace), client.MatchingLabels{discoveryv1.LabelServiceName: service}); err != nil {
		return nil, err
	}
	got := map[string]string{}
	for _, s := range slices.Items {
		for _, e := range s.Endpoints {
			if e.Conditions.Ready == nil || !*e.Conditions.Ready {
				continue
			}
			for _, a := range e.Addresses {
				got[a] = ptr.Deref(e.NodeName, "")
			}
		}
	}
	return got, nil
}
