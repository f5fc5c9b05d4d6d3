package announce

import (
	"net/netip"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
)

// TestExplain checks that every node the plans leave out gets the rule
// that left it out, and that nodes the plans chose get none: Why must
// agree with PlanL2 and PlanBGP, which decide.
func TestExplain(t *testing.T) {
	zoneY := []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": "y"}}}
	cfg := parseWithPools(t, config.Objects{
		L2Advertisements:  []v1beta1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "l2"}, Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"a"}}}},
		BGPAdvertisements: []v1beta1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "bgp"}, Spec: v1beta1.BGPAdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"b"}, NodeSelectors: zoneY}}},
	})
	nodes := nodesInfo("x1", "x2", "y1", "y2", "y3", "y4", "y5")
	nodes[1].Ready = false        // x2
	nodes[3].SpeakerAlive = false // y2
	nodes[4].Excluded = true      // y3
	nodes[5].Unschedulable = true // y4
	nodes[6].NetworkUnavailable = true

	l2IP, bgpIP, localIP := ip("198.18.0.1"), ip("198.18.1.1"), ip("198.18.1.2")
	svcs := []ServiceInfo{
		{Key: "ns/l2", IPs: []netip.Addr{l2IP}, Pools: []string{"a"}},
		{Key: "ns/bgp", IPs: []netip.Addr{bgpIP}, Pools: []string{"b"}},
		{Key: "ns/local", IPs: []netip.Addr{localIP}, Pools: []string{"b"}, Local: true, EndpointNodes: map[string]bool{"y1": true, "y4": true}},
	}
	l2, bgp := PlanL2(cfg, nodes, svcs), PlanBGP(cfg, nodes, svcs)
	owner := l2.Addresses[l2IP].Node
	if owner != "x1" && owner != "y1" {
		t.Fatalf("layer-2 owner %q, want one of the healthy nodes", owner)
	}
	other := map[string]string{"x1": "y1", "y1": "x1"}[owner]
	why := NewExplainer(cfg, nodes, svcs, l2, bgp)

	for _, tc := range []struct {
		proto Protocol
		ip    netip.Addr
		node  string
		want  string
	}{
		{L2, l2IP, owner, ""},
		{L2, l2IP, other, WhyNotElected},
		{L2, l2IP, "x2", WhyNodeNotReady},
		{L2, l2IP, "y2", WhySpeakerDown},
		{L2, l2IP, "y3", WhyExcluded},
		{L2, l2IP, "y4", WhyCordoned},
		{L2, l2IP, "y5", WhyNetworkUnavailable},
		{L2, l2IP, "nonesuch", WhyNodeNotReady},
		{L2, bgpIP, "y1", ReasonNoAdvertisement},
		{BGP, l2IP, "x1", ReasonNoAdvertisement},
		{BGP, bgpIP, "y1", ""},
		{BGP, bgpIP, "x1", WhyNotSelected},
		{BGP, bgpIP, "y4", WhyCordoned},
		{BGP, localIP, "y1", ""},
		{BGP, localIP, "y4", WhyCordoned},
		{BGP, localIP, "x1", WhyNotSelected},
	} {
		if got := why.Why(tc.proto, tc.ip, tc.node); got != tc.want {
			t.Errorf("%s %s on %s: %q, want %q", tc.proto, tc.ip, tc.node, got, tc.want)
		}
	}

	t.Run("local endpoint and shared address", func(t *testing.T) {
		// Two Services share 198.18.1.3: the second's endpoints are on y1
		// only, so y5 (healthy now) is out for the other's sake.
		nodes := nodesInfo("y1", "y5")
		shared := ip("198.18.1.3")
		svcs := []ServiceInfo{
			{Key: "ns/a", IPs: []netip.Addr{shared}, Pools: []string{"b"}},
			{Key: "ns/b", IPs: []netip.Addr{shared}, Pools: []string{"b"}, Local: true, EndpointNodes: map[string]bool{"y1": true}},
			{Key: "ns/c", IPs: []netip.Addr{localIP}, Pools: []string{"b"}, Local: true, EndpointNodes: map[string]bool{"y1": true}},
		}
		l2, bgp := PlanL2(cfg, nodes, svcs), PlanBGP(cfg, nodes, svcs)
		why := NewExplainer(cfg, nodes, svcs, l2, bgp)
		for _, tc := range []struct {
			ip   netip.Addr
			node string
			want string
		}{
			{shared, "y1", ""},
			{shared, "y5", WhySharedElsewhere},
			{localIP, "y5", WhyNoLocalEndpoint},
		} {
			if got := why.Why(BGP, tc.ip, tc.node); got != tc.want {
				t.Errorf("%s on %s: %q, want %q", tc.ip, tc.node, got, tc.want)
			}
		}
	})
}
