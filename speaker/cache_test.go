package speaker

import (
	"net/netip"
	"reflect"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/speaker/announce"
	"github.com/ironlb/ironlb/speaker/core"
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
				{Type: v1beta1.ServiceConditionAnnounced, Status: metav1.ConditionTrue, Reason: core.ReasonLayer2, Message: "n1"},
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

// cacheService is what the cache keeps of s.
func cacheService(t *testing.T, s *corev1.Service) *core.Service {
	t.Helper()
	c, err := stripUnread(s)
	if err != nil {
		t.Fatal(err)
	}
	return c.(*core.Service)
}

// TestStripUnread: the cache transform drops what the speaker never
// reads and changes none of what it does: the plan's input, the mesh's
// peer list and the Announced bookkeeping come out the same.
func TestStripUnread(t *testing.T) {
	svcs, nodes, slices := fullObjects()
	snodes, sslices := strip(t, nodes), strip(t, slices)
	ssvcs := []*core.Service{cacheService(t, svcs[0])}
	alive := map[string]bool{"n1": true, "n2": true}
	for _, c := range []struct {
		what       string
		full, thin any
	}{
		{"ServiceInfos", core.ServiceInfos(&config.Config{}, ssvcs, slices), core.ServiceInfos(&config.Config{}, ssvcs, sslices)},
		{"NodeInfos", core.NodeInfos(nodes, alive), core.NodeInfos(snodes, alive)},
		{"peers", core.MeshPeers(nodes, 7946), core.MeshPeers(snodes, 7946)},
	} {
		if !reflect.DeepEqual(c.full, c.thin) {
			t.Errorf("%s changed by the transform:\n full %+v\n thin %+v", c.what, c.full, c.thin)
		}
	}
	if core.ServiceInfos(&config.Config{}, ssvcs, slices)[0].EndpointNodes == nil || !core.NodeInfos(nodes, alive)[0].Ready {
		t.Fatal("the fixture does not exercise endpoints or readiness")
	}
	// All a Service comes down to, and what the plan makes of it.
	ip := netip.MustParseAddr("198.18.0.1")
	want := &core.Service{
		ObjectMeta:    metav1.ObjectMeta{Namespace: "default", Name: "web", Labels: map[string]string{"app": "web"}},
		AllocatedFrom: "pool-a", IPs: []netip.Addr{ip}, Local: true,
		Announced: &metav1.Condition{Type: v1beta1.ServiceConditionAnnounced, Status: metav1.ConditionTrue, Reason: core.ReasonLayer2, Message: "n1"},
	}
	if !reflect.DeepEqual(ssvcs[0], want) {
		t.Errorf("cached Service:\n got  %+v\n want %+v", ssvcs[0], want)
	}
	wantInfo := []announce.ServiceInfo{{Key: "default/web", IPs: []netip.Addr{ip}, Pools: []string{"pool-a"},
		Labels: labels.Set{"app": "web"}, Local: true, EndpointNodes: map[string]bool{"n1": true}}}
	if got := core.ServiceInfos(&config.Config{}, ssvcs, sslices); !reflect.DeepEqual(got, wantInfo) {
		t.Errorf("ServiceInfos:\n got  %+v\n want %+v", got, wantInfo)
	}
	gone := map[string]bool{
		"managedFields":    snodes[0].ManagedFields != nil,
		"Node images":      snodes[0].Status.Images != nil || snodes[0].Status.NodeInfo.KernelVersion != "" || snodes[0].Spec.PodCIDR != "",
		"heartbeats":       len(snodes[0].Status.Conditions) != 2 || !snodes[0].Status.Conditions[0].LastHeartbeatTime.IsZero(),
		"Node annotations": snodes[0].Annotations != nil,
		"slice metadata":   sslices[0].Annotations != nil || len(sslices[0].Labels) != 1 || sslices[0].OwnerReferences != nil,
		"endpoint pods":    sslices[0].Endpoints[0].Addresses != nil || sslices[0].Endpoints[0].TargetRef != nil || sslices[0].Ports != nil,
		"original intact":  svcs[0].Spec.Ports == nil || svcs[0].ManagedFields == nil,
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
	svc, node, slice := cacheService(t, svcs[0]), strip(t, nodes)[0], strip(t, slices)[0]
	refreshed := func(o object) object {
		full := o.DeepCopyObject().(object)
		full.SetResourceVersion("8")
		switch f := full.(type) {
		case *corev1.Node:
			f.Status.Conditions = append(f.Status.Conditions, corev1.NodeCondition{Type: corev1.NodeDiskPressure, Status: corev1.ConditionFalse, LastHeartbeatTime: metav1.Now()})
			f.Status.Images = []corev1.ContainerImage{{Names: []string{"new"}}}
		case *discoveryv1.EndpointSlice:
			f.Endpoints[0].Addresses = []string{"10.244.0.9"}
		}
		thin, _ := stripUnread(full)
		return thin.(object)
	}
	// A Service's writes that leave what the speaker reads alone: the
	// condition writes that follow every change.
	refreshedSvc := svcs[0].DeepCopy()
	refreshedSvc.ResourceVersion = "8"
	refreshedSvc.Status.Conditions = nil
	refreshedSvc.Spec.Ports = []corev1.ServicePort{{Port: 443}}
	changedSvc := func(change func(*core.Service)) *core.Service {
		n := *svc
		change(&n)
		return &n
	}
	changed := func(o object, change func(object)) object {
		n := o.DeepCopyObject().(object)
		change(n)
		return n
	}
	for _, tc := range []struct {
		what     string
		old, new any
		want     bool
	}{
		{"Service: ports and conditions only", svc, cacheService(t, refreshedSvc), false},
		{"Node: heartbeat, images, other conditions", node, refreshed(node), false},
		{"EndpointSlice: a pod's address on the same node", slice, refreshed(slice), false},
		{"Service: new ingress", svc, changedSvc(func(s *core.Service) { s.IPs = nil }), true},
		{"Service: label", svc, changedSvc(func(s *core.Service) { s.Labels = map[string]string{"x": "y"} }), true},
		{"Service: pool", svc, changedSvc(func(s *core.Service) { s.AllocatedFrom = "pool-b" }), true},
		{"Service: traffic policy", svc, changedSvc(func(s *core.Service) { s.Local = false }), true},
		{"Service: deleted", svc, changedSvc(func(s *core.Service) { s.DeletionTimestamp = &metav1.Time{} }), true},
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
