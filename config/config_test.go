package config

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config/v1beta1"
)

func pool(name string, age int, addrs ...string) v1beta1.IPAddressPool {
	p := v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(1000+age), 0))}}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, v1beta1.AddressRange(a))
	}
	return p
}

func ptr[T any](v T) *T { return &v }

// problemsOf renders problems as "Kind/name field reason fatal: message"
// for compact assertions.
func find(ps []Problem, kind, name, field string) *Problem {
	for i := range ps {
		if ps[i].Kind == kind && ps[i].Name == name && ps[i].Field == field {
			return &ps[i]
		}
	}
	return nil
}

func TestParseProblems(t *testing.T) {
	tests := []struct {
		name        string
		objs        Objects
		kind, obj   string
		field       string
		reason      string
		fatal       bool
		msgContains string
	}{
		{
			name: "overlap across pools names the older pool",
			objs: Objects{Pools: []v1beta1.IPAddressPool{pool("old", 0, "198.18.0.0/24"), pool("new", 1, "198.18.0.128-198.18.1.5")}},
			kind: KindPool, obj: "new", field: "spec.addresses[0]", reason: v1beta1.ReasonOverlap, fatal: true,
			msgContains: `IPAddressPool "old"`,
		},
		{
			name: "overlap inside one pool",
			objs: Objects{Pools: []v1beta1.IPAddressPool{pool("p", 0, "198.18.0.0/24", "198.18.0.10/32")}},
			kind: KindPool, obj: "p", field: "spec.addresses[1]", reason: v1beta1.ReasonOverlap, fatal: true,
			msgContains: "same pool",
		},
		{
			name: "bad CIDR", objs: Objects{Pools: []v1beta1.IPAddressPool{pool("p", 0, "198.18.0.300/24")}},
			kind: KindPool, obj: "p", field: "spec.addresses[0]", reason: v1beta1.ReasonInvalid, fatal: true,
		},
		{
			name: "host bits", objs: Objects{Pools: []v1beta1.IPAddressPool{pool("p", 0, "198.18.0.1/24")}},
			kind: KindPool, obj: "p", field: "spec.addresses[0]", reason: v1beta1.ReasonInvalid, fatal: true, msgContains: "198.18.0.0/24",
		},
		{
			name: "mixed family range", objs: Objects{Pools: []v1beta1.IPAddressPool{pool("p", 0, "198.18.0.1-2001:db8::1")}},
			kind: KindPool, obj: "p", field: "spec.addresses[0]", reason: v1beta1.ReasonInvalid, fatal: true,
		},
		{
			name: "reversed range", objs: Objects{Pools: []v1beta1.IPAddressPool{pool("p", 0, "198.18.0.9-198.18.0.1")}},
			kind: KindPool, obj: "p", field: "spec.addresses[0]", reason: v1beta1.ReasonInvalid, fatal: true,
		},
		{
			name: "bad namespace selector",
			objs: Objects{Pools: []v1beta1.IPAddressPool{func() v1beta1.IPAddressPool {
				p := pool("p", 0, "198.18.0.0/24")
				p.Spec.ServiceAllocation = &v1beta1.ServiceAllocation{NamespaceSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "a", Operator: "Bogus"}}}}}
				return p
			}()}},
			kind: KindPool, obj: "p", field: "spec.serviceAllocation.namespaceSelectors[0]", reason: v1beta1.ReasonInvalid, fatal: true,
		},
		{
			name: "L2 node selector In without values",
			objs: Objects{L2Advertisements: []v1beta1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "l2"}, Spec: v1beta1.L2AdvertisementSpec{
				NodeSelectors: []metav1.LabelSelector{{MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "k", Operator: metav1.LabelSelectorOpIn}}}}}}}},
			kind: KindL2Adv, obj: "l2", field: "spec.nodeSelectors[0]", reason: v1beta1.ReasonInvalid, fatal: true,
		},
		{
			name: "peer node selector with a bad label key",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "203.0.113.1",
				NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"bad key!": "x"}}}}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.nodeSelectors[0]", reason: v1beta1.ReasonInvalid, fatal: true, msgContains: "bad key!",
		},
		{
			name: "L2 unknown pool is reported but not fatal",
			objs: Objects{L2Advertisements: []v1beta1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "l2"}, Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"ghost"}}}}},
			kind: KindL2Adv, obj: "l2", field: "spec.ipAddressPools[0]", reason: v1beta1.ReasonUnknownRef, fatal: false, msgContains: `"ghost"`,
		},
		{
			name: "peer keepalive not below hold",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "203.0.113.1", HoldTime: &metav1.Duration{Duration: 9 * time.Second}, KeepaliveTime: &metav1.Duration{Duration: 9 * time.Second}}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.keepaliveTime", reason: v1beta1.ReasonInvalid, fatal: true,
		},
		{
			name: "peer hold time out of range",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "203.0.113.1", HoldTime: &metav1.Duration{Duration: 2 * time.Second}}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.holdTime", reason: v1beta1.ReasonInvalid, fatal: true,
		},
		{
			name: "peer unknown BFD profile runs without BFD",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "203.0.113.1", BFDProfile: "fast"}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.bfdProfile", reason: v1beta1.ReasonUnknownRef, fatal: false,
		},
		{
			name: "two peers on one address",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{
				{ObjectMeta: metav1.ObjectMeta{Name: "a", CreationTimestamp: metav1.NewTime(time.Unix(1, 0))}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "203.0.113.1"}},
				{ObjectMeta: metav1.ObjectMeta{Name: "b", CreationTimestamp: metav1.NewTime(time.Unix(2, 0))}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64514, PeerAddress: "203.0.113.1"}},
			}},
			kind: KindBGPPeer, obj: "b", field: "spec.peerAddress", reason: v1beta1.ReasonConflict, fatal: true, msgContains: `"a"`,
		},
		{
			name: "peer with both address and interface",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "203.0.113.1", Interface: "eth1"}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.interface", reason: v1beta1.ReasonInvalid, fatal: true, msgContains: "exactly one of peerAddress (203.0.113.1) and interface (eth1)",
		},
		{
			name: "peer with neither address nor interface",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.peerAddress", reason: v1beta1.ReasonInvalid, fatal: true, msgContains: "exactly one",
		},
		{
			name: "unnumbered peer with a source address",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, Interface: "eth1", SourceAddress: "2001:db8::1"}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.sourceAddress", reason: v1beta1.ReasonInvalid, fatal: true, msgContains: "link-local",
		},
		{
			name: "unnumbered peer with multihop",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, Interface: "eth1", EBGPMultiHop: true}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.ebgpMultiHop", reason: v1beta1.ReasonInvalid, fatal: true,
		},
		{
			name: "peer interface name too long",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, Interface: "a-very-long-ifname"}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.interface", reason: v1beta1.ReasonInvalid, fatal: true, msgContains: "a-very-long-ifname",
		},
		{
			name: "peer VRF with a slash",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "r"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "203.0.113.1", VRF: "red/blue"}}}},
			kind: KindBGPPeer, obj: "r", field: "spec.vrf", reason: v1beta1.ReasonInvalid, fatal: true, msgContains: "red/blue",
		},
		{
			name: "two unnumbered peers on one interface",
			objs: Objects{BGPPeers: []v1beta1.BGPPeer{
				{ObjectMeta: metav1.ObjectMeta{Name: "a", CreationTimestamp: metav1.NewTime(time.Unix(1, 0))}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, Interface: "eth1"}},
				{ObjectMeta: metav1.ObjectMeta{Name: "b", CreationTimestamp: metav1.NewTime(time.Unix(2, 0))}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64514, Interface: "eth1", VRF: "blue"}},
			}},
			kind: KindBGPPeer, obj: "b", field: "spec.interface", reason: v1beta1.ReasonConflict, fatal: true, msgContains: `"a"`,
		},
		{
			name: "bad community",
			objs: Objects{BGPAdvertisements: []v1beta1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "adv"}, Spec: v1beta1.BGPAdvertisementSpec{Communities: []v1beta1.CommunityValue{"65536:1"}}}}},
			kind: KindBGPAdv, obj: "adv", field: "spec.communities[0]", reason: v1beta1.ReasonInvalid, fatal: true,
		},
		{
			name: "unknown community alias",
			objs: Objects{BGPAdvertisements: []v1beta1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "adv"}, Spec: v1beta1.BGPAdvertisementSpec{Communities: []v1beta1.CommunityValue{"no-export-up"}}}}},
			kind: KindBGPAdv, obj: "adv", field: "spec.communities[0]", reason: v1beta1.ReasonUnknownRef, fatal: true,
		},
		{
			name: "aggregation wider than the pool",
			objs: Objects{
				Pools:             []v1beta1.IPAddressPool{pool("p", 0, "198.18.0.0/26")},
				BGPAdvertisements: []v1beta1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "adv"}, Spec: v1beta1.BGPAdvertisementSpec{AggregationLength: ptr[int32](24)}}},
			},
			kind: KindBGPAdv, obj: "adv", field: "spec.aggregationLength", reason: v1beta1.ReasonInvalid, fatal: true, msgContains: "outside the pool",
		},
		{
			name: "conflicting localPref for one pool",
			objs: Objects{
				Pools: []v1beta1.IPAddressPool{pool("p", 0, "198.18.0.0/24")},
				BGPAdvertisements: []v1beta1.BGPAdvertisement{
					{ObjectMeta: metav1.ObjectMeta{Name: "a", CreationTimestamp: metav1.NewTime(time.Unix(1, 0))}, Spec: v1beta1.BGPAdvertisementSpec{LocalPref: ptr[int64](100)}},
					{ObjectMeta: metav1.ObjectMeta{Name: "b", CreationTimestamp: metav1.NewTime(time.Unix(2, 0))}, Spec: v1beta1.BGPAdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"p"}, LocalPref: ptr[int64](200)}},
				},
			},
			kind: KindBGPAdv, obj: "b", field: "spec", reason: v1beta1.ReasonConflict, fatal: true, msgContains: `BGPAdvertisement "a"`,
		},
		{
			name: "duplicate community alias",
			objs: Objects{Communities: []v1beta1.Community{
				{ObjectMeta: metav1.ObjectMeta{Name: "c1", CreationTimestamp: metav1.NewTime(time.Unix(1, 0))}, Spec: v1beta1.CommunitySpec{Communities: []v1beta1.CommunityAlias{{Name: "x", Value: "1:1"}}}},
				{ObjectMeta: metav1.ObjectMeta{Name: "c2", CreationTimestamp: metav1.NewTime(time.Unix(2, 0))}, Spec: v1beta1.CommunitySpec{Communities: []v1beta1.CommunityAlias{{Name: "x", Value: "1:2"}}}},
			}},
			kind: KindCommunity, obj: "c2", field: "spec.communities[0].name", reason: v1beta1.ReasonDuplicateKey, fatal: true, msgContains: `"c1"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, ps := Parse(tt.objs)
			p := find(ps, tt.kind, tt.obj, tt.field)
			if p == nil {
				t.Fatalf("no problem for %s %q %s; got %v", tt.kind, tt.obj, tt.field, ps)
			}
			if p.Reason != tt.reason || p.Fatal != tt.fatal || !strings.Contains(p.Message, tt.msgContains) {
				t.Fatalf("got %+v, want reason %s fatal %v message containing %q", *p, tt.reason, tt.fatal, tt.msgContains)
			}
			if !strings.Contains(p.Error(), tt.obj) {
				t.Fatalf("Error() %q does not name the object", p.Error())
			}
		})
	}
}

func TestParseKeepsOlderPoolAndValidRest(t *testing.T) {
	cfg, ps := Parse(Objects{Pools: []v1beta1.IPAddressPool{
		pool("b-new", 5, "198.18.0.0/25"),
		pool("a-old", 1, "198.18.0.0/24"),
		pool("other", 2, "2001:db8::/64", "198.18.1.0-198.18.1.9"),
	}})
	if len(ps) != 1 || ps[0].Name != "b-new" {
		t.Fatalf("problems %v, want one on b-new", ps)
	}
	if _, ok := cfg.Pools["a-old"]; !ok {
		t.Fatal("older pool dropped")
	}
	if _, ok := cfg.Pools["b-new"]; ok {
		t.Fatal("newer overlapping pool kept")
	}
	if got := len(cfg.Pools["other"].Ranges); got != 2 {
		t.Fatalf("other has %d ranges", got)
	}
}

func TestCandidatesOrder(t *testing.T) {
	restricted := func(name string, prio int32, ns ...string) v1beta1.IPAddressPool {
		p := pool(name, 0, "198.18."+map[string]string{"r1": "1", "r2": "2", "r3": "3"}[name]+".0/24")
		p.Spec.ServiceAllocation = &v1beta1.ServiceAllocation{Priority: prio, Namespaces: ns}
		return p
	}
	manual := pool("manual", 0, "198.18.9.0/24")
	manual.Spec.AutoAssign = ptr(false)
	labelled := pool("r3", 0, "198.18.3.0/24")
	labelled.Spec.ServiceAllocation = &v1beta1.ServiceAllocation{ServiceSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"tier": "edge"}}}}
	cfg, ps := Parse(Objects{Pools: []v1beta1.IPAddressPool{
		pool("open", 0, "198.18.0.0/24"), restricted("r1", 20, "team-a"), restricted("r2", 10, "team-a"), manual, labelled,
	}})
	if len(ps) != 0 {
		t.Fatal(ps)
	}
	tests := []struct {
		ns     string
		labels labels.Set
		want   string
	}{
		{"team-a", nil, "r2,r1,open"},
		{"team-b", nil, "open"},
		{"team-b", labels.Set{"tier": "edge"}, "r3,open"},
	}
	for _, tt := range tests {
		if got := strings.Join(cfg.Candidates(tt.ns, nil, tt.labels), ","); got != tt.want {
			t.Errorf("Candidates(%s, %v) = %s, want %s", tt.ns, tt.labels, got, tt.want)
		}
	}
}

func TestParseCommunity(t *testing.T) {
	for in, want := range map[string]Community{
		"65000:100":            {Value: [3]uint32{65000<<16 | 100}},
		"00001:02":             {Value: [3]uint32{1<<16 | 2}},
		"0:0":                  {},
		"65535:65535":          {Value: [3]uint32{0xffffffff}},
		"large:4294967295:1:2": {Large: true, Value: [3]uint32{4294967295, 1, 2}},
	} {
		got, err := ParseCommunity(in)
		if err != nil || got != want {
			t.Errorf("ParseCommunity(%q) = %v, %v; want %v", in, got, err, want)
		}
		if again, err := ParseCommunity(got.String()); err != nil || again != got {
			t.Errorf("ParseCommunity(%q.String() = %q) = %v, %v", in, got.String(), again, err)
		}
	}
	for _, bad := range []string{"65536:1", "1:2:3", "1", "large:1:2", "large:4294967296:0:0", "large:1:2:3:4", "a:b", ""} {
		if _, err := ParseCommunity(bad); err == nil {
			t.Errorf("ParseCommunity(%q) accepted", bad)
		}
	}
}

func TestAlignedTo(t *testing.T) {
	cfg, _ := Parse(Objects{Pools: []v1beta1.IPAddressPool{pool("p", 0, "198.18.0.0/24", "198.18.1.0-198.18.1.127", "2001:db8::/120")}})
	r := cfg.Pools["p"].Ranges
	for _, tt := range []struct {
		i, bits int
		want    bool
	}{{0, 24, true}, {0, 23, false}, {0, 32, true}, {1, 25, true}, {1, 24, false}, {2, 120, true}, {2, 119, false}} {
		if got := alignedTo(r[tt.i], tt.bits); got != tt.want {
			t.Errorf("alignedTo(%s, %d) = %v", r[tt.i], tt.bits, got)
		}
	}
}

func TestEstablishedWinsTies(t *testing.T) {
	objs := Objects{Pools: []v1beta1.IPAddressPool{pool("b-first", 0, "198.18.0.0/24")}}
	cfg, _ := Parse(objs)
	// Same creation second, and "a-later" sorts first by name: only the
	// established set keeps b-first valid.
	objs.Pools = append(objs.Pools, pool("a-later", 0, "198.18.0.0/25"))
	objs.Established = cfg.Valid
	cfg, ps := Parse(objs)
	if _, ok := cfg.Pools["b-first"]; !ok || len(ps) != 1 || ps[0].Name != "a-later" {
		t.Fatalf("pools %v problems %v", cfg.PoolNames(), ps)
	}
}

// TestParseUnnumberedAndVRF: an unnumbered peer has no address, and the
// same router address may be a numbered peer in a VRF beside it.
func TestParseUnnumberedAndVRF(t *testing.T) {
	cfg, ps := Parse(Objects{BGPPeers: []v1beta1.BGPPeer{
		{ObjectMeta: metav1.ObjectMeta{Name: "tor"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, Interface: "eth1", VRF: "blue"}},
		{ObjectMeta: metav1.ObjectMeta{Name: "edge"}, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64514, PeerAddress: "203.0.113.1", VRF: "red"}},
	}})
	if len(ps) != 0 {
		t.Fatalf("problems: %v", ps)
	}
	tor, edge := cfg.BGPPeers["tor"], cfg.BGPPeers["edge"]
	if tor == nil || tor.Interface != "eth1" || tor.VRF != "blue" || tor.Address.IsValid() {
		t.Errorf("tor: %+v", tor)
	}
	if edge == nil || edge.Interface != "" || edge.VRF != "red" || edge.Address.String() != "203.0.113.1" {
		t.Errorf("edge: %+v", edge)
	}
}
