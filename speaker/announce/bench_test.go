package announce

import (
	"fmt"
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
)

// planFixture is the speaker scale bench's cluster: n nodes, one pool of
// ips addresses, one L2Advertisement, one Service per address.
func planFixture(b *testing.B, n, ips int) (*config.Config, []NodeInfo, []ServiceInfo) {
	b.Helper()
	objs := config.Objects{
		Pools:            []v1beta1.IPAddressPool{{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.96.0/20"}}}},
		L2Advertisements: []v1beta1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "all"}}},
	}
	cfg, ps := config.Parse(objs)
	if len(ps) > 0 {
		b.Fatal(ps)
	}
	var names []string
	for i := range n {
		names = append(names, fmt.Sprintf("n%02d", i+1))
	}
	nodes := nodesInfo(names...)
	var svcs []ServiceInfo
	a := netip.MustParseAddr("198.18.96.0")
	for i := range ips {
		svcs = append(svcs, ServiceInfo{Key: fmt.Sprintf("default/s%d", i), IPs: []netip.Addr{a}, Pools: []string{"lan"}})
		a = a.Next()
	}
	return cfg, nodes, svcs
}

// BenchmarkPlanL2 is one speaker pass's plan in the 50-speaker bench:
// every speaker recomputes it on every liveness change.
func BenchmarkPlanL2(b *testing.B) {
	cfg, nodes, svcs := planFixture(b, 50, 2000)
	b.ReportAllocs()
	for b.Loop() {
		PlanL2(cfg, nodes, svcs)
	}
}

func BenchmarkPlanBGP(b *testing.B) {
	cfg, nodes, svcs := planFixture(b, 50, 2000)
	b.ReportAllocs()
	for b.Loop() {
		PlanBGP(cfg, nodes, svcs)
	}
}
