package e2e

import (
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
)

// endpoints points a Service's only EndpointSlice at one node.
func (cl *cluster) endpoints(svc, node string) {
	cl.t.Helper()
	es := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: "default", Name: svc + "-x", Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints: []discoveryv1.Endpoint{{
			Addresses: []string{"10.244.0.10"}, NodeName: ptr.To(node),
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		}},
	}
	var cur discoveryv1.EndpointSlice
	if err := cl.c.Get(cl.ctx, types.NamespacedName{Namespace: "default", Name: es.Name}, &cur); err == nil {
		cur.Endpoints = es.Endpoints
		if err := cl.c.Update(cl.ctx, &cur); err != nil {
			cl.t.Fatal(err)
		}
		return
	}
	if err := cl.c.Create(cl.ctx, es); err != nil {
		cl.t.Fatal(err)
	}
}

// waitOwnerIs waits until node answers ARP for ip.
func (cl *cluster) waitOwnerIs(ip netip.Addr, node string, timeout time.Duration) {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	var got string
	var err error
	for time.Now().Before(deadline) {
		if got, err = cl.owner(ip); err == nil && got == node {
			return
		}
	}
	cl.t.Fatalf("%s answered by %q (%v), want %s", ip, got, err, node)
}

// TestL2LocalTrafficPolicy: with externalTrafficPolicy Local only a node
// with a ready endpoint may announce, and the address follows the
// endpoint when it moves.
func TestL2LocalTrafficPolicy(t *testing.T) {
	cl := newCluster(t, "node1", "node2", "node3")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "local"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, ExternalTrafficPolicy: corev1.ServiceExternalTrafficPolicyLocal,
			Selector: map[string]string{"app": "local"}, Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := cl.c.Create(cl.ctx, s); err != nil {
		t.Fatal(err)
	}
	ip := cl.waitIP("local")
	// No endpoint anywhere: nobody answers, and the Service says why.
	if _, err := cl.resolve(ip, 500*time.Millisecond); err == nil {
		t.Fatal("announced without any local endpoint")
	}
	cl.waitAnnounced("local", metav1.ConditionFalse, "NoLocalEndpoints")
	for _, node := range []string{"node3", "node1", "node2"} {
		cl.endpoints("local", node)
		cl.waitOwnerIs(ip, node, 5*time.Second)
		cl.waitAnnounced("local", metav1.ConditionTrue, "node "+node)
	}
}

func (cl *cluster) waitIP(name string) netip.Addr {
	cl.t.Helper()
	ip, err := labkit.WaitIP(cl.ctx, cl.c, "default", name, 10*time.Second)
	if err != nil {
		cl.t.Fatal(err)
	}
	return ip
}

// waitAnnounced waits for the ironlb.io/Announced condition.
func (cl *cluster) waitAnnounced(name string, status metav1.ConditionStatus, contains string) {
	cl.t.Helper()
	cl.waitAnnouncedWithin(name, status, contains, 10*time.Second)
}

func (cl *cluster) waitAnnouncedWithin(name string, status metav1.ConditionStatus, contains string, timeout time.Duration) {
	cl.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		var s corev1.Service
		_ = cl.c.Get(cl.ctx, types.NamespacedName{Namespace: "default", Name: name}, &s)
		for _, c := range s.Status.Conditions {
			if c.Type == v1beta1.ServiceConditionAnnounced {
				last = fmt.Sprintf("%s %s: %s", c.Status, c.Reason, c.Message)
				if c.Status == status && strings.Contains(last, contains) {
					return
				}
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	cl.t.Fatalf("service %s: Announced condition %q, want %s containing %q", name, last, status, contains)
}

// TestL2IPv6 resolves an IPv6 Service address with NDP from the client.
func TestL2IPv6(t *testing.T) {
	cl := newCluster(t, "node1", "node2")
	cl.l2Setup("2001:db8:18::200-2001:db8:18::220")
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "v6"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "v6"},
			IPFamilies: []corev1.IPFamily{corev1.IPv6Protocol}, IPFamilyPolicy: ptr.To(corev1.IPFamilyPolicySingleStack),
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := cl.c.Create(cl.ctx, s); err != nil {
		t.Fatal(err)
	}
	ip := cl.waitIP("v6")
	if !ip.Is6() {
		t.Fatalf("got %s", ip)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		mac, err := solicit(cl.lab.Hosts["client"], ip)
		if err == nil {
			if mac.String() != cl.lab.Hosts["node1"].MAC.String() && mac.String() != cl.lab.Hosts["node2"].MAC.String() {
				t.Fatalf("%s answered by unknown MAC %s", ip, mac)
			}
			t.Logf("%s resolved by NDP to %s", ip, mac)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Neighbor Advertisement for %s: %v", ip, err)
		}
	}
	cl.waitAnnounced("v6", metav1.ConditionTrue, "(NDP)")
}

// solicit sends a Neighbor Solicitation for ip from the host and returns
// the MAC in the advertisement.
func solicit(h *netlab.Host, ip netip.Addr) (net.HardwareAddr, error) {
	return netlab.InNS(h.Name, func() (net.HardwareAddr, error) {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return nil, err
		}
		c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		snm, err := ndp.SolicitedNodeMulticast(ip)
		if err != nil {
			return nil, err
		}
		ns := &ndp.NeighborSolicitation{TargetAddress: ip, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
		if err := c.WriteTo(ns, nil, snm); err != nil {
			return nil, err
		}
		if err := c.SetReadDeadline(time.Now().Add(500 * time.Millisecond)); err != nil {
			return nil, err
		}
		for {
			msg, _, _, err := c.ReadFrom()
			if err != nil {
				return nil, err
			}
			na, ok := msg.(*ndp.NeighborAdvertisement)
			if !ok || na.TargetAddress != ip {
				continue
			}
			for _, o := range na.Options {
				if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == ndp.Target {
					return lla.Addr, nil
				}
			}
		}
	})
}

// TestL2ServiceTypeChange: a Service that stops being a LoadBalancer is
// no longer answered for (the speakers watch only LoadBalancer Services,
// so to them it is deleted), and is announced again once it is one again.
func TestL2ServiceTypeChange(t *testing.T) {
	cl := newCluster(t, "node1", "node2")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	ip := cl.service("web")
	cl.waitOwner(ip, 10*time.Second, "")
	setType := func(typ corev1.ServiceType) {
		t.Helper()
		var s corev1.Service
		if err := cl.c.Get(cl.ctx, types.NamespacedName{Namespace: "default", Name: "web"}, &s); err != nil {
			t.Fatal(err)
		}
		s.Spec.Type = typ
		if err := cl.c.Update(cl.ctx, &s); err != nil {
			t.Fatal(err)
		}
	}
	setType(corev1.ServiceTypeNodePort)
	deadline := time.Now().Add(5 * time.Second)
	for {
		o, err := cl.owner(ip)
		if err != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still answered by %s 5s after its Service became a NodePort", ip, o)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if o, err := cl.owner(ip); err == nil {
		t.Fatalf("%s answered again by %s", ip, o)
	}
	setType(corev1.ServiceTypeLoadBalancer)
	ip = cl.waitIP("web")
	cl.waitOwner(ip, 10*time.Second, "")
	cl.waitAnnounced("web", metav1.ConditionTrue, "announced by node")
}

// TestL2OtherClassLeftAlone: a Service of another load balancer's class
// whose address (written by that load balancer) lies in an ironlb pool is
// not answered for, and gets neither ironlb's condition nor its Events:
// in a cluster running two load balancers side by side, each keeps to
// its own Services.
func TestL2OtherClassLeftAlone(t *testing.T) {
	cl := newCluster(t, "node1", "node2")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	other := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "other"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: ptr.To("example.com/other-lb"),
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := cl.c.Create(cl.ctx, other); err != nil {
		t.Fatal(err)
	}
	foreign := netip.MustParseAddr("198.18.0.219")
	other.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: foreign.String()}}
	if err := cl.c.Status().Update(cl.ctx, other); err != nil {
		t.Fatal(err)
	}
	// ironlb's own Service announced: the speakers have seen both.
	ip := cl.service("web")
	cl.waitOwner(ip, 10*time.Second, "")
	cl.waitAnnounced("web", metav1.ConditionTrue, "announced by node")
	for deadline := time.Now().Add(3 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if o, err := cl.owner(foreign); err == nil {
			t.Fatalf("%s (Service default/other, class example.com/other-lb) answered by %s", foreign, o)
		}
	}
	var s corev1.Service
	if err := cl.c.Get(cl.ctx, types.NamespacedName{Namespace: "default", Name: "other"}, &s); err != nil {
		t.Fatal(err)
	}
	if len(s.Status.Conditions) > 0 || len(s.Status.LoadBalancer.Ingress) != 1 {
		t.Fatalf("Service default/other of another class was written: %+v", s.Status)
	}
	var evs corev1.EventList
	if err := cl.c.List(cl.ctx, &evs); err != nil {
		t.Fatal(err)
	}
	for _, e := range evs.Items {
		if e.InvolvedObject.Name == "other" {
			t.Fatalf("an Event on Service default/other of another class: %s %s", e.Reason, e.Message)
		}
	}
}
