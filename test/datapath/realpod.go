package datapath

import (
	"context"
	"fmt"
	"net/http"
	"net/netip"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// BackendImage is the lab's backend pods' image on real kubelets
// (hack/k8s-binaries.sh builds it into bin/k8s/backend.tar from
// hack/tools/image/backend; test/kubelet loads it into every node): the
// same answers and readiness switch as the backends AddPod serves itself.
const BackendImage = "localhost/ironlb-lab/backend:1"

// addRealPod is AddPod when real kubelets run the nodes (Workloads): the
// Pod runs the backend image, the node's kubelet starts it, plugs it in
// through containerd's CNI and probes it; this waits until it runs.
func (cl *Cluster) addRealPod(ctx context.Context, spec PodSpec) (*Pod, error) {
	field := func(path string) *corev1.EnvVarSource {
		return &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: path}}
	}
	obj := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: spec.Namespace, Name: spec.Name, Labels: spec.Labels},
		Spec: corev1.PodSpec{
			NodeName:                      spec.Node,
			TerminationGracePeriodSeconds: ptr.To[int64](5),
			AutomountServiceAccountToken:  ptr.To(false),
			Containers: []corev1.Container{{
				Name: "backend", Image: BackendImage, ImagePullPolicy: corev1.PullNever,
				Env: []corev1.EnvVar{
					{Name: "POD_NAME", ValueFrom: field("metadata.name")},
					{Name: "NODE_NAME", ValueFrom: field("spec.nodeName")},
					{Name: "READY", Value: fmt.Sprint(!spec.Unready)},
				},
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: BackendPort}},
				ReadinessProbe: &corev1.Probe{
					ProbeHandler:  corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: intstr.FromInt32(BackendPort)}},
					PeriodSeconds: int32(probePeriod / time.Second), FailureThreshold: 1, SuccessThreshold: 1,
				},
				SecurityContext: &corev1.SecurityContext{
					RunAsNonRoot: ptr.To(true), AllowPrivilegeEscalation: ptr.To(false), ReadOnlyRootFilesystem: ptr.To(true),
					Capabilities: &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	// The namespace's default ServiceAccount, which admission requires,
	// comes from the ServiceAccount controller shortly after the namespace.
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := cl.c.Create(ctx, obj)
		if err == nil {
			break
		}
		if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), "serviceaccount") || time.Now().After(deadline) {
			return nil, fmt.Errorf("pod %s/%s: %w", spec.Namespace, spec.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	p := &Pod{Namespace: spec.Namespace, Name: spec.Name, Node: spec.Node, cl: cl, real: true}
	p.ready.Store(!spec.Unready)
	p.probe.Store("probed by the node's kubelet")
	cl.mu.Lock()
	cl.pods[spec.Namespace+"/"+spec.Name] = p
	cl.mu.Unlock()
	deadline = time.Now().Add(60 * time.Second)
	for {
		var got corev1.Pod
		err := cl.c.Get(ctx, client.ObjectKeyFromObject(obj), &got)
		if err == nil && got.Status.PodIP != "" && len(got.Status.ContainerStatuses) == 1 && got.Status.ContainerStatuses[0].State.Running != nil {
			if p.IP, err = netip.ParseAddr(got.Status.PodIP); err != nil {
				return nil, err
			}
			return p, nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			state := fmt.Sprint(err)
			if err == nil {
				state = fmt.Sprintf("phase %s, IP %q, containers %+v", got.Status.Phase, got.Status.PodIP, got.Status.ContainerStatuses)
			}
			return nil, fmt.Errorf("pod %s/%s not running on %s after 60 s: %s", spec.Namespace, spec.Name, spec.Node, state)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// setReal switches a real pod's backend's readiness, from its node.
func (p *Pod) setReal(ready bool) {
	hc := p.cl.cfg.Lab.Hosts[p.Node].HTTPClient(time.Second)
	url := fmt.Sprintf("http://%s/ready?ready=%t", netip.AddrPortFrom(p.IP, BackendPort), ready)
	for range 10 {
		resp, err := hc.Post(url, "text/plain", nil)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
			err = fmt.Errorf("%s", resp.Status)
		}
		p.probe.Store(fmt.Sprintf("switching readiness to %t: POST %s: %v", ready, url, err))
		time.Sleep(100 * time.Millisecond)
	}
}

// deleteReal deletes a real pod and waits until its kubelet has stopped
// it and removed the object.
func (p *Pod) deleteReal(ctx context.Context) error {
	obj := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: p.Namespace, Name: p.Name}}
	if err := p.cl.c.Delete(ctx, obj); err != nil {
		return fmt.Errorf("delete pod %s/%s: %w", p.Namespace, p.Name, err)
	}
	defer p.teardown()
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := p.cl.c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		if apierrors.IsNotFound(err) {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("pod %s/%s still there 30 s after its deletion (%v)", p.Namespace, p.Name, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
