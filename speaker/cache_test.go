package speaker

import (
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// fullObjects are a Service, two Nodes and an EndpointSlice as the API
// server sends them, with the fields the speaker never reads filled in.
func fullObjects() ([]*corev1.Service, []*corev1.Node, []*discoveryv1.EndpointSlice) {
	meta := func(ns, name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{
			Namespace: ns, Name: name, ResourceVersion: "7", Labels: map[string]string{"app": "web"},
			Annotations: map[string]string{
				v1beta1.AnnotationAllocatedFrom:    "pool-a",
				corev1.LastAppliedConfigAnnotation: `{"big":"json"}`,
			},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "kubectl"}},
		}
	}
	svc := corev1.Service{
		ObjectMeta: meta("default", "web"),
		Spec: corev1.ServiceSpec{
			Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Ports:    []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080), NodePort: 30080}},
			Selector: map[string]string{"app": "web"}, ClusterIP: "10.0.0.1", ClusterIPs: []string{"10.0.0.1"},
			HealthCheckNodePort: 31000, SessionAffinity: corev1.ServiceAffinityClientIP,
		},
		Status: corev1.ServiceStatus{
			LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: "198.18.0.1"}}},
			Conditions: []metav1.Condition{
				{Type: "ironlb.io/Allocated", Status: metav1.ConditionTrue, Reason: "Allocated", Message: "from pool-a"},
				{Type: v1beta1.ServiceConditionAnnounced, Status: metav1.ConditionTrue, Reason: reasonLayer2, Message: "n1"},
			},
		},
	}
	node := func(name, ip string, ready corev1.ConditionStatus) corev1.Node {
		return corev1.Node{
			ObjectMeta: meta("", name),
			Spec:       corev1.NodeSpec{Unschedulable: true, PodCIDR: "10.244.0.0/24", ProviderID: "x://y"},
			Status: corev1.NodeStatus{
				Addresses: []corev1.NodeAddress{{Type: corev1.NodeHostName, Address: name}, {Type: corev1.NodeInternalIP, Address: ip}},
				Conditions: []corev1.NodeCondition{
					{Type: corev1.NodeMemoryPressure, Status: corev1.ConditionFalse, LastHeartbeatTime: metav1.Now()},
					{Type: corev1.NodeReady, Status: ready, LastHeartbeatTime: metav1.Now(), Message: "kubelet is posting ready status"},
					{Type: corev1.NodeNetworkUnavailable, Status: corev1.ConditionFalse, Reason: "RouteCreated"},
				},
				Images:   []corev1.ContainerImage{{Names: []string{"registry.example/huge:1"}, SizeBytes: 1 << 30}},
				NodeInfo: corev1.NodeSystemInfo{KernelVersion: "6.1"},
			},
		}
	}
	slice := discoveryv1.EndpointSlice{
		ObjectMeta:  meta("default", "web-abc"),
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{
			{Addresses: []string{"10.244.0.5"}, NodeName: ptr.To("n1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true), Serving: ptr.To(true)}, TargetRef: &corev1.ObjectReference{Kind: "Pod", Name: "web-1"}},
			{Addresses: []string{"10.244.1.5"}, NodeName: ptr.To("n2"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
		},
		Ports: []discoveryv1.EndpointPort{{Port: ptr.To(int32(8080))}},
	}
	slice.Labels[discoveryv1.LabelServiceName] = "web"
	slice.Labels[discoveryv1.LabelManagedBy] = "endpointslice-controller.k8s.io"
	slice.OwnerReferences = []metav1.OwnerReference{{Kind: "Service", Name: "web"}}
	svc.Finalizers = []string{"service.kubernetes.io/load-balancer-cleanup"}
	n1, n2 := node("n1", "192.0.2.1", corev1.ConditionTrue), node("n2", "192.0.2.2", corev1.ConditionFalse)
	return []*corev1.Service{&svc}, []*corev1.Node{&n1, &n2}, []*discoveryv1.EndpointSlice{&slice}
}

func strip[T any](t *testing.T, in []*T) []*T {
	out := make([]*T, len(in))
	for i := range in {
		o := any(in[i]).(object).DeepCopyObject()
		if _, err := stripUnread(o); err != nil {
			t.Fatal(err)
		}
		out[i] = any(o).(*T)
	}
	return out
}

// TestStripUnread: the cache transform drops what the speaker never
// reads and changes none of what it does: the plan's input, the mesh's
// peer list and the Announced bookkeeping come out the same.
func TestStripUnread(t *testing.T) {
	svcs, nodes, slices := fullObjects()
	ssvcs, snodes, sslices := strip(t, svcs), strip(t, nodes), strip(t, slices)
	alive := map[string]bool{"n1": true, "n2": true}
	for _, c := range []struct {
		what       string
		full, thin any
	}{
		{"ServiceInfos", ServiceInfos(svcs, slices), ServiceInfos(ssvcs, sslices)},
		{"NodeInfos", NodeInfos(nodes, alive), NodeInfos(snodes, alive)},
		{"peers", peers(nodes, 7946), peers(snodes, 7946)},
		{"announcedAddresses", announcedAddresses(svcs), announcedAddresses(ssvcs)},
		{"Service labels and annotations", []any{svcs[0].Labels, svcs[0].Annotations[v1beta1.AnnotationAllocatedFrom]}, []any{ssvcs[0].Labels, ssvcs[0].Annotations[v1beta1.AnnotationAllocatedFrom]}},
	} {
		if !reflect.DeepEqual(c.full, c.thin) {
			t.Errorf("%s changed by the transform:\n full %+v\n thin %+v", c.what, c.full, c.thin)
		}
	}
	if ServiceInfos(svcs, slices)[0].EndpointNodes == nil || !NodeInfos(nodes, alive)[0].Ready {
		t.Fatal("the fixture does not exercise endpoints or readiness")
	}
	gone := map[string]bool{
		"managedFields":    ssvcs[0].ManagedFields != nil || snodes[0].ManagedFields != nil,
		"last-applied":     ssvcs[0].Annotations[corev1.LastAppliedConfigAnnotation] != "",
		"Service ports":    ssvcs[0].Spec.Ports != nil || ssvcs[0].Spec.Selector != nil || ssvcs[0].Spec.ClusterIP != "",
		"Node images":      snodes[0].Status.Images != nil || snodes[0].Status.NodeInfo.KernelVersion != "" || snodes[0].Spec.PodCIDR != "",
		"heartbeats":       len(snodes[0].Status.Conditions) != 2 || !snodes[0].Status.Conditions[0].LastHeartbeatTime.IsZero(),
		"other conditions": len(ssvcs[0].Status.Conditions) != 1,
		"finalizers":       ssvcs[0].Finalizers != nil,
		"Node annotations": snodes[0].Annotations != nil,
		"slice metadata":   sslices[0].Annotations != nil || len(sslices[0].Labels) != 1 || sslices[0].OwnerReferences != nil,
		"endpoint pods":    sslices[0].Endpoints[0].Addresses != nil || sslices[0].Endpoints[0].TargetRef != nil || sslices[0].Ports != nil,
		"original intact":  svcs[0].Spec.Ports == nil, // strip works on copies here; the cache hands it its own
	}
	for what, kept := range gone {
		if kept {
			t.Errorf("%s: not stripped as expected", what)
		}
	}
}

// TestPlanInputChanged: updates that leave the plan's input alone wake no
// pass; any change of what it reads does.
func TestPlanInputChanged(t *testing.T) {
	svcs, nodes, slices := fullObjects()
	svc, node, slice := strip(t, svcs)[0], strip(t, nodes)[0], strip(t, slices)[0]
	refreshed := func(o object) object {
		full := o.DeepCopyObject().(object)
		full.SetResourceVersion("8")
		switch f := full.(type) {
		case *corev1.Node:
			f.Status.Conditions = append(f.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, LastHeartbeatTime: metav1.Now()})
			f.Status.Images = []corev1.ContainerImage{{Names: []string{"new"}}}
		case *discoveryv1.EndpointSlice:
			f.Endpoints[0].Addresses = []string{"10.244.0.9"}
		case *corev1.Service:
			f.Status.Conditions = nil
			f.Spec.Ports = []corev1.ServicePort{{Port: 443}}
		}
		thin, _ := stripUnread(full)
		return thin.(object)
	}
	changed := func(o object, change func(object)) object {
		n := o.DeepCopyObject().(object)
		change(n)
		return n
	}
	for _, tc := range []struct {
		what     string
		old, new object
		want     bool
	}{
		{"Service: ports and conditions only", svc, refreshed(svc), false},
		{"Node: heartbeat, images, other conditions", node, refreshed(node), false},
		{"EndpointSlice: a pod's address on the same node", slice, refreshed(slice), false},
		{"Service: new ingress", svc, changed(svc, func(o object) {
			o.(*corev1.Service).Status.LoadBalancer.Ingress = nil
		}), true},
		{"Service: label", svc, changed(svc, func(o object) { o.SetLabels(map[string]string{"x": "y"}) }), true},
		{"Node: not Ready", node, changed(node, func(o object) {
			o.(*corev1.Node).Status.Conditions[0].Status = corev1.ConditionFalse
		}), true},
		{"Node: cordoned", node, changed(node, func(o object) { o.(*corev1.Node).Spec.Unschedulable = false }), true},
		{"Node: new address", node, changed(node, func(o object) {
			o.(*corev1.Node).Status.Addresses[1].Address = "192.0.2.9"
		}), true},
		{"EndpointSlice: endpoint not ready", slice, changed(slice, func(o object) {
			o.(*discoveryv1.EndpointSlice).Endpoints[0].Conditions.Ready = ptr.To(false)
		}), true},
		{"EndpointSlice: endpoint moved", slice, changed(slice, func(o object) {
			o.(*discoveryv1.EndpointSlice).Endpoints[0].NodeName = ptr.To("n3")
		}), true},
		{"deleted", node, changed(node, func(o object) { o.SetDeletionTimestamp(&metav1.Time{}) }), true},
	} {
		if got := planInputChanged(tc.old, tc.new); got != tc.want {
			t.Errorf("%s: planInputChanged = %v, want %v", tc.what, got, tc.want)
		}
	}
}

// object is what the caches hold.
type object interface {
	metav1.Object
	runtime.Object
}
