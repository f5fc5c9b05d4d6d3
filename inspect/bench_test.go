package inspect

import (
	"fmt"
	"net/netip"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// bigCluster is testCluster grown to n Services with addresses (half in
// the layer 2 pool, half routed) on 20 nodes: what `kubectl ironlb status
// -A` works through in a large cluster, once read.
func bigCluster(n int) *Cluster {
	c := testCluster()
	c.Objects.Pools[0].Spec.Addresses = []v1beta1.AddressRange{"198.18.0.0/17"}
	c.Objects.Pools[1].Spec.Addresses = []v1beta1.AddressRange{"198.18.128.0/17"}
	for i := range 17 {
		c.Nodes = append(c.Nodes, c.Nodes[i%3])
		c.Nodes[len(c.Nodes)-1].Name = fmt.Sprintf("m%d", i)
		c.SpeakerPods = append(c.SpeakerPods, c.SpeakerPods[0])
		c.SpeakerPods[len(c.SpeakerPods)-1].Spec.NodeName = fmt.Sprintf("m%d", i)
	}
	l2, routed := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("198.18.128.1")
	for i := range n {
		ip := &l2
		if i%2 == 1 {
			ip = &routed
		}
		s := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: fmt.Sprintf("ns%d", i%50), Name: fmt.Sprintf("svc%d", i)},
			Spec:   corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
			Status: corev1.ServiceStatus{LoadBalancer: corev1.LoadBalancerStatus{Ingress: []corev1.LoadBalancerIngress{{IP: ip.String()}}}}}
		*ip = ip.Next()
		c.Services = append(c.Services, s)
	}
	return c
}

// BenchmarkStatusAll: `kubectl ironlb status -A` after the read, 10,000
// Services on 20 nodes: the speakers' plan once, then every Service's
// announcers and per-node reasons.
func BenchmarkStatusAll(b *testing.B) {
	c := bigCluster(10000)
	b.ResetTimer()
	for b.Loop() {
		v := NewView(c)
		if got := len(v.Status("")); got < 10000 {
			b.Fatalf("%d Services reported", got)
		}
	}
}

// BenchmarkSimulateDrain: `kubectl ironlb simulate-drain NODE` over the
// same cluster: two plans (now, drained) and the difference.
func BenchmarkSimulateDrain(b *testing.B) {
	c := bigCluster(10000)
	b.ResetTimer()
	for b.Loop() {
		if _, err := NewView(c).SimulateDrain("n1"); err != nil {
			b.Fatal(err)
		}
	}
}
