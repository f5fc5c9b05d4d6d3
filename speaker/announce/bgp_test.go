package announce

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
)

func bgpCfg(t *testing.T, advs ...v1beta1.BGPAdvertisement) *config.Config {
	t.Helper()
	for i := range advs {
		advs[i].CreationTimestamp = metav1.NewTime(time.Unix(int64(i), 0))
	}
	return parseWithPools(t, config.Objects{BGPAdvertisements: advs})
}

func TestPlanBGP(t *testing.T) {
	all := v1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "all"}}
	zoneY := v1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "y"}, Spec: v1beta1.BGPAdvertisementSpec{
		IPAddressPools: []v1beta1.PoolName{"b"},
		NodeSelectors:  []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": "y"}}},
	}}
	nodes := nodesInfo("x1", "x2", "y1")
	a1, b1 := ip("198.18.0.1"), ip("198.18.1.1")
	names := func(advs []*config.BGPAdvertisement) []string {
		var out []string
		for _, a := range advs {
			out = append(out, a.Name)
		}
		return out
	}

	tests := []struct {
		name      string
		cfg       *config.Config
		nodes     []NodeInfo
		svcs      []ServiceInfo
		want      map[netip.Addr][]string // address -> nodes
		advsOnY1  map[netip.Addr][]string
		notAnnced map[string]string
	}{
		{
			name: "no advertisement: not a BGP address",
			cfg:  bgpCfg(t), nodes: nodes,
			svcs: []ServiceInfo{{Key: "ns/s", IPs: []netip.Addr{a1}, Pools: []string{"a"}}},
			want: map[netip.Addr][]string{}, notAnnced: map[string]string{},
		},
		{
			name: "cluster policy: every eligible node (ECMP)",
			cfg:  bgpCfg(t, all), nodes: nodes,
			svcs:      []ServiceInfo{{Key: "ns/s", IPs: []netip.Addr{a1}, Pools: []string{"a"}}},
			want:      map[netip.Addr][]string{a1: {"x1", "x2", "y1"}},
			advsOnY1:  map[netip.Addr][]string{a1: {"all"}},
			notAnnced: map[string]string{},
		},
		{
			name: "node selector and both advertisements on the selected node",
			cfg:  bgpCfg(t, all, zoneY), nodes: nodes,
			svcs: []ServiceInfo{
				{Key: "ns/a", IPs: []netip.Addr{a1}, Pools: []string{"a"}},
				{Key: "ns/b", IPs: []netip.Addr{b1}, Pools: []string{"b"}},
			},
			want:      map[netip.Addr][]string{a1: {"x1", "x2", "y1"}, b1: {"x1", "x2", "y1"}},
			advsOnY1:  map[netip.Addr][]string{a1: {"all"}, b1: {"all", "y"}},
			notAnnced: map[string]string{},
		},
		{
			name: "local policy follows endpoints",
			cfg:  bgpCfg(t, all), nodes: nodes,
			svcs: []ServiceInfo{
				{Key: "ns/l", IPs: []netip.Addr{a1}, Pools: []string{"a"}, Local: true, EndpointNodes: map[string]bool{"x2": true, "y1": true}},
				{Key: "ns/none", IPs: []netip.Addr{ip("198.18.0.2")}, Pools: []string{"a"}, Local: true},
			},
			want:      map[netip.Addr][]string{a1: {"x2", "y1"}},
			advsOnY1:  map[netip.Addr][]string{a1: {"all"}},
			notAnnced: map[string]string{"ns/none": ReasonNoLocalEndpoint},
		},
		{
			name: "cordoned node withdraws while others can announce",
			cfg:  bgpCfg(t, all),
			nodes: func() []NodeInfo {
				n := nodesInfo("x1", "x2", "y1")
				n[2].Unschedulable = true
				return n
			}(),
			svcs:      []ServiceInfo{{Key: "ns/s", IPs: []netip.Addr{a1}, Pools: []string{"a"}}},
			want:      map[netip.Addr][]string{a1: {"x1", "x2"}},
			notAnnced: map[string]string{},
		},
		{
			name: "dead, not ready and excluded nodes do not announce",
			cfg:  bgpCfg(t, all),
			nodes: func() []NodeInfo {
				n := nodesInfo("x1", "x2", "y1")
				n[0].SpeakerAlive = false
				n[1].Ready = false
				n[2].Excluded = true
				return n
			}(),
			svcs:      []ServiceInfo{{Key: "ns/s", IPs: []netip.Addr{a1}, Pools: []string{"a"}}},
			want:      map[netip.Addr][]string{},
			notAnnced: map[string]string{"ns/s": ReasonNoEligibleNode},
		},
		{
			name: "shared address: where all its Services may be announced",
			cfg:  bgpCfg(t, all), nodes: nodes,
			svcs: []ServiceInfo{
				{Key: "ns/s1", IPs: []netip.Addr{a1}, Pools: []string{"a"}, Local: true, EndpointNodes: map[string]bool{"x1": true, "y1": true}},
				{Key: "ns/s2", IPs: []netip.Addr{a1}, Pools: []string{"a"}, Local: true, EndpointNodes: map[string]bool{"y1": true}},
			},
			want:      map[netip.Addr][]string{a1: {"y1"}},
			advsOnY1:  map[netip.Addr][]string{a1: {"all"}},
			notAnnced: map[string]string{},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := PlanBGP(tc.cfg, tc.nodes, tc.svcs)
			got := map[netip.Addr][]string{}
			for ip, a := range p.Addresses {
				got[ip] = a.Nodes
			}
			if len(got) != len(tc.want) {
				t.Fatalf("addresses %v, want %v", got, tc.want)
			}
			for ip, n := range tc.want {
				if !slices.Equal(got[ip], n) {
					t.Errorf("%s announced by %v, want %v", ip, got[ip], n)
				}
			}
			for _, ann := range p.ForNode("y1") {
				if want := tc.advsOnY1[ann.IP]; !slices.Equal(names(ann.Advertisements), want) {
					t.Errorf("y1 announces %s with %v, want %v", ann.IP, names(ann.Advertisements), want)
				}
			}
			if len(p.NotAnnounced) != len(tc.notAnnced) {
				t.Errorf("not announced %v, want %v", p.NotAnnounced, tc.notAnnced)
			}
			for k, r := range tc.notAnnced {
				if p.NotAnnounced[k] != r {
					t.Errorf("%s not announced because %q, want %q", k, p.NotAnnounced[k], r)
				}
			}
		})
	}
}
