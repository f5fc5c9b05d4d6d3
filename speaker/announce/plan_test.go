package announce

import (
	"net/netip"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
)

func cfgWith(t *testing.T, advs ...v1beta1.L2Advertisement) *config.Config {
	t.Helper()
	for i := range advs {
		advs[i].CreationTimestamp = metav1.NewTime(time.Unix(int64(i), 0))
	}
	return parseWithPools(t, config.Objects{L2Advertisements: advs})
}

// parseWithPools parses objs plus two pools, a (198.18.0.0/24) and b
// (198.18.1.0/24), and fails the test on any problem.
func parseWithPools(t *testing.T, objs config.Objects) *config.Config {
	t.Helper()
	objs.Pools = []v1beta1.IPAddressPool{
		{ObjectMeta: metav1.ObjectMeta{Name: "a"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/24"}}},
		{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.1.0/24"}}},
	}
	cfg, ps := config.Parse(objs)
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	return cfg
}

func nodesInfo(names ...string) []NodeInfo {
	var out []NodeInfo
	for _, n := range names {
		out = append(out, NodeInfo{Node: Node{Name: n, Ready: true, SpeakerAlive: true}, Labels: labels.Set{"zone": n[:1]}})
	}
	return out
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

func TestPlanL2(t *testing.T) {
	all := v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "all"}}
	onlyB := v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: v1beta1.L2AdvertisementSpec{
		IPAddressPools: []v1beta1.PoolName{"b"}, Interfaces: []string{"eth1"},
		NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": "y"}}},
	}}
	nodes := nodesInfo("x1", "x2", "y1")

	t.Run("no advertisement", func(t *testing.T) {
		p := PlanL2(cfgWith(t), nodes, []ServiceInfo{{Key: "ns/s", IPs: []netip.Addr{ip("198.18.0.1")}, Pools: []string{"a"}}})
		if p.NotAnnounced["ns/s"] != ReasonNoAdvertisement || len(p.Addresses) != 0 {
			t.Fatalf("%+v", p)
		}
	})
	t.Run("two families from two pools", func(t *testing.T) {
		// Each address follows its own pool's advertisements.
		p := PlanL2(cfgWith(t, onlyB), nodes, []ServiceInfo{
			{Key: "ns/ds", IPs: []netip.Addr{ip("198.18.0.1"), ip("198.18.1.1")}, Pools: []string{"a", "b"}},
		})
		if got := p.Addresses[ip("198.18.1.1")]; got.Node != "y1" {
			t.Fatalf("pool b's address: %+v", got)
		}
		if _, ok := p.Addresses[ip("198.18.0.1")]; ok {
			t.Fatalf("pool a's address announced without an advertisement: %+v", p)
		}
	})
	t.Run("node selector and interfaces", func(t *testing.T) {
		p := PlanL2(cfgWith(t, onlyB), nodes, []ServiceInfo{
			{Key: "ns/a", IPs: []netip.Addr{ip("198.18.0.1")}, Pools: []string{"a"}},
			{Key: "ns/b", IPs: []netip.Addr{ip("198.18.1.1")}, Pools: []string{"b"}},
		})
		got := p.Addresses[ip("198.18.1.1")]
		if got.Node != "y1" || len(got.Interfaces) != 1 || got.Interfaces[0] != "eth1" {
			t.Fatalf("%+v", got)
		}
		if p.NotAnnounced["ns/a"] != ReasonNoAdvertisement {
			t.Fatalf("pool a announced: %+v", p)
		}
		if ifs := p.ForNode("y1"); len(ifs["eth1"]) != 1 {
			t.Fatalf("ForNode %v", ifs)
		}
	})
	t.Run("ETP Local follows endpoints", func(t *testing.T) {
		p := PlanL2(cfgWith(t, all), nodes, []ServiceInfo{
			{Key: "ns/l", IPs: []netip.Addr{ip("198.18.0.1")}, Pools: []string{"a"}, Local: true, EndpointNodes: map[string]bool{"x2": true}},
			{Key: "ns/none", IPs: []netip.Addr{ip("198.18.0.2")}, Pools: []string{"a"}, Local: true},
		})
		if p.Addresses[ip("198.18.0.1")].Node != "x2" {
			t.Fatalf("%+v", p)
		}
		if p.NotAnnounced["ns/none"] != ReasonNoLocalEndpoint {
			t.Fatalf("%+v", p.NotAnnounced)
		}
	})
	t.Run("shared address stays on one node in the intersection", func(t *testing.T) {
		// 30 shared addresses: with a union instead of the intersection,
		// about two thirds would land on x1 or x2.
		var svcs []ServiceInfo
		for i := range 30 {
			addr := netip.AddrFrom4([4]byte{198, 18, 0, byte(100 + i)})
			svcs = append(svcs,
				ServiceInfo{Key: "ns/udp" + addr.String(), IPs: []netip.Addr{addr}, Pools: []string{"a"}, Local: true, EndpointNodes: map[string]bool{"x1": true, "y1": true}},
				ServiceInfo{Key: "ns/tcp" + addr.String(), IPs: []netip.Addr{addr}, Pools: []string{"a"}, Local: true, EndpointNodes: map[string]bool{"y1": true, "x2": true}})
		}
		p := PlanL2(cfgWith(t, all), nodes, svcs)
		for addr, a := range p.Addresses {
			if a.Node != "y1" || len(a.Services) != 2 {
				t.Fatalf("%s: %+v", addr, a)
			}
		}
	})
	t.Run("dead speaker loses its addresses", func(t *testing.T) {
		svcs := []ServiceInfo{}
		for i := range 50 {
			svcs = append(svcs, ServiceInfo{Key: "ns/s" + string(rune('a'+i%26)) + string(rune('a'+i/26)), IPs: []netip.Addr{netip.AddrFrom4([4]byte{198, 18, 0, byte(i)})}, Pools: []string{"a"}})
		}
		before := PlanL2(cfgWith(t, all), nodes, svcs)
		dead := nodesInfo("x1", "x2", "y1")
		dead[0].SpeakerAlive = false
		after := PlanL2(cfgWith(t, all), dead, svcs)
		for addr, a := range after.Addresses {
			if a.Node == "x1" {
				t.Fatalf("%s still on dead x1", addr)
			}
			if b := before.Addresses[addr]; b.Node != "x1" && b.Node != a.Node {
				t.Fatalf("%s moved from live %s to %s", addr, b.Node, a.Node)
			}
		}
	})
}
