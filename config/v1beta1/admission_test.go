package v1beta1_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/apiserver"
)

func ptr[T any](v T) *T { return &v }

// TestAdmission sends malformed objects to a real API server: every check
// that needs only the object itself must be refused there, with a message
// that names the field and the bad value.
func TestAdmission(t *testing.T) {
	env := apiserver.Start(t)
	ctx := context.Background()
	meta := func(n string) metav1.ObjectMeta { return metav1.ObjectMeta{Name: n} }
	peer := func(mut func(*v1beta1.BGPPeerSpec)) *v1beta1.BGPPeer {
		p := &v1beta1.BGPPeer{ObjectMeta: meta("p"), Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "203.0.113.1"}}
		mut(&p.Spec)
		return p
	}
	pool := func(addrs ...v1beta1.AddressRange) *v1beta1.IPAddressPool {
		return &v1beta1.IPAddressPool{ObjectMeta: meta("p"), Spec: v1beta1.IPAddressPoolSpec{Addresses: addrs}}
	}
	tests := []struct {
		name string
		obj  client.Object
		want string // substring of the API server's error; "" = accepted
	}{
		{"pool ok", pool("198.18.0.0/24", "198.18.1.1-198.18.1.9", "2001:db8::/120"), ""},
		{"pool empty", pool(), "spec.addresses"},
		{"pool garbage", pool("banana"), "address banana is neither a CIDR"},
		{"pool bad octet", pool("198.18.0.300/24"), "is neither a CIDR"},
		{"pool host bits", pool("198.18.0.1/24"), "host bits set"},
		{"pool mixed range", pool("198.18.0.1-2001:db8::1"), "range of one family"},
		{"pool half range", pool("198.18.0.1-"), "is neither a CIDR"},
		{"pool negative priority", &v1beta1.IPAddressPool{ObjectMeta: meta("p"), Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/24"}, ServiceAllocation: &v1beta1.ServiceAllocation{Priority: -1}}}, "spec.serviceAllocation.priority"},
		{"peer ok", peer(func(*v1beta1.BGPPeerSpec) {}), ""},
		{"peer zero ASN", peer(func(s *v1beta1.BGPPeerSpec) { s.MyASN = 0 }), "spec.myASN"},
		{"peer bad address", peer(func(s *v1beta1.BGPPeerSpec) { s.PeerAddress = "router1" }), "address router1 is not an IP address"},
		{"peer family mix", peer(func(s *v1beta1.BGPPeerSpec) { s.SourceAddress = "2001:db8::1" }), "same IP family"},
		{"peer routerID v6", peer(func(s *v1beta1.BGPPeerSpec) { s.RouterID = "2001:db8::1" }), "must be an IPv4 address"},
		{"peer port", peer(func(s *v1beta1.BGPPeerSpec) { s.PeerPort = ptr[int32](70000) }), "spec.peerPort"},
		{"peer hold", peer(func(s *v1beta1.BGPPeerSpec) { s.HoldTime = &metav1.Duration{Duration: 2 * time.Second} }), "holdTime must be 0 or between 3s and 65535s"},
		{"peer keepalive", peer(func(s *v1beta1.BGPPeerSpec) {
			s.HoldTime = &metav1.Duration{Duration: 9 * time.Second}
			s.KeepaliveTime = &metav1.Duration{Duration: 9 * time.Second}
		}), "keepaliveTime must be shorter than holdTime"},
		{"peer secret", peer(func(s *v1beta1.BGPPeerSpec) { s.PasswordSecret = &v1beta1.SecretKeyRef{Name: "s"} }), "spec.passwordSecret.namespace"},
		{"peer unnumbered in a VRF ok", peer(func(s *v1beta1.BGPPeerSpec) { s.PeerAddress, s.Interface, s.VRF = "", "eth1", "blue" }), ""},
		{"peer numbered in a VRF ok", peer(func(s *v1beta1.BGPPeerSpec) { s.VRF = "blue" }), ""},
		{"peer address and interface", peer(func(s *v1beta1.BGPPeerSpec) { s.Interface = "eth1" }), "set exactly one of peerAddress (a numbered session) and interface"},
		{"peer neither address nor interface", peer(func(s *v1beta1.BGPPeerSpec) { s.PeerAddress = "" }), "set exactly one of peerAddress"},
		{"peer unnumbered with source", peer(func(s *v1beta1.BGPPeerSpec) { s.PeerAddress, s.Interface, s.SourceAddress = "", "eth1", "2001:db8::1" }), "sourceAddress cannot be set with interface"},
		{"peer unnumbered multihop", peer(func(s *v1beta1.BGPPeerSpec) { s.PeerAddress, s.Interface, s.EBGPMultiHop = "", "eth1", true }), "ebgpMultiHop cannot be set with interface"},
		{"peer interface name", peer(func(s *v1beta1.BGPPeerSpec) { s.PeerAddress, s.Interface = "", "eth1/2" }), "spec.interface"},
		{"peer interface too long", peer(func(s *v1beta1.BGPPeerSpec) { s.PeerAddress, s.Interface = "", "interface-name-too-long" }), "spec.interface"},
		{"peer vrf name", peer(func(s *v1beta1.BGPPeerSpec) { s.VRF = "red blue" }), "spec.vrf"},
		{"adv ok", &v1beta1.BGPAdvertisement{ObjectMeta: meta("a"), Spec: v1beta1.BGPAdvertisementSpec{Communities: []v1beta1.CommunityValue{"65000:1", "large:1:2:3", "no-export"}}}, ""},
		{"adv community", &v1beta1.BGPAdvertisement{ObjectMeta: meta("a"), Spec: v1beta1.BGPAdvertisementSpec{Communities: []v1beta1.CommunityValue{"65536:1"}}}, "community 65536:1 is not"},
		{"adv large", &v1beta1.BGPAdvertisement{ObjectMeta: meta("a"), Spec: v1beta1.BGPAdvertisementSpec{Communities: []v1beta1.CommunityValue{"large:1:2"}}}, "community large:1:2 is not"},
		{"adv aggregation", &v1beta1.BGPAdvertisement{ObjectMeta: meta("a"), Spec: v1beta1.BGPAdvertisementSpec{AggregationLength: ptr[int32](33)}}, "spec.aggregationLength"},
		{"bfd interval", &v1beta1.BFDProfile{ObjectMeta: meta("b"), Spec: v1beta1.BFDProfileSpec{ReceiveInterval: ptr[int32](5)}}, "spec.receiveInterval"},
		{"bfd multiplier", &v1beta1.BFDProfile{ObjectMeta: meta("b"), Spec: v1beta1.BFDProfileSpec{DetectMultiplier: ptr[int32](1)}}, "spec.detectMultiplier"},
		{"community alias of alias", &v1beta1.Community{ObjectMeta: meta("c"), Spec: v1beta1.CommunitySpec{Communities: []v1beta1.CommunityAlias{{Name: "x", Value: "other"}}}}, "must be a standard"},
		{"l2 interface", &v1beta1.L2Advertisement{ObjectMeta: meta("l"), Spec: v1beta1.L2AdvertisementSpec{Interfaces: []string{"eth0/1"}}}, "spec.interfaces[0]"},
		// Every other field, one wrong value each.
		{"pool v6 host bits", pool("2001:db8::1/64"), "host bits set"},
		{"pool namespace name", &v1beta1.IPAddressPool{ObjectMeta: meta("p"), Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/24"}, ServiceAllocation: &v1beta1.ServiceAllocation{Namespaces: []string{"Not_A_Namespace"}}}}, "spec.serviceAllocation.namespaces[0]"},
		{"peer ASN too big", peer(func(s *v1beta1.BGPPeerSpec) { s.PeerASN = 4294967296 }), "spec.peerASN"},
		{"peer source garbage", peer(func(s *v1beta1.BGPPeerSpec) { s.SourceAddress = "eth0" }), "address eth0 is not an IP address"},
		{"peer routerID garbage", peer(func(s *v1beta1.BGPPeerSpec) { s.RouterID = "1.2.3" }), "spec.routerID"},
		{"peer connect negative", peer(func(s *v1beta1.BGPPeerSpec) { s.ConnectTime = &metav1.Duration{Duration: -time.Second} }), "spec.connectTime"},
		{"peer bfd profile name", peer(func(s *v1beta1.BGPPeerSpec) { s.BFDProfile = "Fast_Profile" }), "spec.bfdProfile"},
		{"peer secret name", peer(func(s *v1beta1.BGPPeerSpec) {
			s.PasswordSecret = &v1beta1.SecretKeyRef{Namespace: "ns", Name: "Bad/Name"}
		}), "spec.passwordSecret.name"},
		{"adv v6 aggregation", &v1beta1.BGPAdvertisement{ObjectMeta: meta("a"), Spec: v1beta1.BGPAdvertisementSpec{AggregationLengthV6: ptr[int32](129)}}, "spec.aggregationLengthV6"},
		{"adv local pref", &v1beta1.BGPAdvertisement{ObjectMeta: meta("a"), Spec: v1beta1.BGPAdvertisementSpec{LocalPref: ptr[int64](-1)}}, "spec.localPref"},
		{"adv peer name", &v1beta1.BGPAdvertisement{ObjectMeta: meta("a"), Spec: v1beta1.BGPAdvertisementSpec{Peers: []v1beta1.PoolName{"Peer One"}}}, "spec.peers[0]"},
		{"adv pool name", &v1beta1.BGPAdvertisement{ObjectMeta: meta("a"), Spec: v1beta1.BGPAdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"-x"}}}, "spec.ipAddressPools[0]"},
		{"adv duplicate community", &v1beta1.BGPAdvertisement{ObjectMeta: meta("a"), Spec: v1beta1.BGPAdvertisementSpec{Communities: []v1beta1.CommunityValue{"1:1", "1:1"}}}, "spec.communities[1]"},
		{"bfd transmit", &v1beta1.BFDProfile{ObjectMeta: meta("b"), Spec: v1beta1.BFDProfileSpec{TransmitInterval: ptr[int32](70000)}}, "spec.transmitInterval"},
		{"bfd ttl", &v1beta1.BFDProfile{ObjectMeta: meta("b"), Spec: v1beta1.BFDProfileSpec{MinimumTTL: ptr[int32](256)}}, "spec.minimumTtl"},
		{"community alias name", &v1beta1.Community{ObjectMeta: meta("c"), Spec: v1beta1.CommunitySpec{Communities: []v1beta1.CommunityAlias{{Name: "Not OK", Value: "1:1"}}}}, "spec.communities[0].name"},
		{"community empty", &v1beta1.Community{ObjectMeta: meta("c"), Spec: v1beta1.CommunitySpec{}}, "spec.communities"},
		{"l2 pool name", &v1beta1.L2Advertisement{ObjectMeta: meta("l"), Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"UPPER"}}}, "spec.ipAddressPools[0]"},
		{"l2 interface too long", &v1beta1.L2Advertisement{ObjectMeta: meta("l"), Spec: v1beta1.L2AdvertisementSpec{Interfaces: []string{"interface-name-too-long"}}}, "spec.interfaces[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := env.Client.Create(ctx, tt.obj)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("valid object refused: %v", err)
				}
				_ = env.Client.Delete(ctx, tt.obj)
				return
			}
			if err == nil {
				_ = env.Client.Delete(ctx, tt.obj)
				t.Fatalf("accepted; want an error containing %q", tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not contain %q", err, tt.want)
			}
		})
	}
}

// TestDefaults checks the schema fills defaults a reader can rely on.
func TestDefaults(t *testing.T) {
	env := apiserver.Start(t)
	ctx := context.Background()
	p := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "d"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/24"}}}
	if err := env.Client.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	if p.Spec.AutoAssign == nil || !*p.Spec.AutoAssign {
		t.Fatalf("autoAssign default = %v", p.Spec.AutoAssign)
	}
	b := &v1beta1.BFDProfile{ObjectMeta: metav1.ObjectMeta{Name: "d"}}
	if err := env.Client.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	if *b.Spec.ReceiveInterval != 300 || *b.Spec.TransmitInterval != 300 || *b.Spec.DetectMultiplier != 3 {
		t.Fatalf("bfd defaults %+v", b.Spec)
	}
}

// TestPrinterColumnsShowZero reads every kind's `kubectl get` table from a
// real API server, for objects whose counts are all zero: a number or
// boolean column must print 0 (false), never a blank cell. Every ironlb
// kind the API server serves must be in the test.
func TestPrinterColumnsShowZero(t *testing.T) {
	env := apiserver.Start(t)
	ctx := context.Background()
	meta := metav1.ObjectMeta{Name: "zero"}
	objects := map[string]client.Object{
		"ipaddresspools":    &v1beta1.IPAddressPool{ObjectMeta: meta, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/24"}}},
		"l2advertisements":  &v1beta1.L2Advertisement{ObjectMeta: meta},
		"bgpadvertisements": &v1beta1.BGPAdvertisement{ObjectMeta: meta},
		"bgppeers":          &v1beta1.BGPPeer{ObjectMeta: meta, Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "203.0.113.1"}},
		"bfdprofiles":       &v1beta1.BFDProfile{ObjectMeta: meta},
		"communities":       &v1beta1.Community{ObjectMeta: meta, Spec: v1beta1.CommunitySpec{Communities: []v1beta1.CommunityAlias{{Name: "x", Value: "65535:65281"}}}},
		"bgpnodestatuses":   &v1beta1.BGPNodeStatus{ObjectMeta: meta},
	}
	var crds apiextensionsv1.CustomResourceDefinitionList
	if err := env.Client.List(ctx, &crds); err != nil {
		t.Fatal(err)
	}
	served := 0
	for _, crd := range crds.Items {
		if crd.Spec.Group != v1beta1.GroupVersion.Group {
			continue
		}
		served++
		if _, ok := objects[crd.Spec.Names.Plural]; !ok {
			t.Errorf("kind %s has no object in this test", crd.Spec.Names.Kind)
		}
	}
	if served != len(objects) {
		t.Errorf("the API server serves %d ironlb kinds, the test has %d", served, len(objects))
	}
	hc, err := rest.HTTPClientFor(env.Config)
	if err != nil {
		t.Fatal(err)
	}
	for plural, obj := range objects {
		if err := env.Client.Create(ctx, obj); err != nil {
			t.Fatalf("%s: %v", plural, err)
		}
		// Writers of status send their zero counts (the speaker writes
		// BGPNodeStatus with no session up, the controller an empty pool).
		switch o := obj.(type) {
		case *v1beta1.BGPNodeStatus:
			o.Status = v1beta1.BGPNodeStatusStatus{}
		case *v1beta1.IPAddressPool:
			o.Status = v1beta1.IPAddressPoolStatus{}
		default:
			obj = nil
		}
		if obj != nil {
			if err := env.Client.Status().Update(ctx, obj); err != nil {
				t.Fatalf("%s status: %v", plural, err)
			}
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimRight(env.Config.Host, "/")+"/apis/"+v1beta1.GroupVersion.String()+"/"+plural+"/zero", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			t.Fatal(err)
		}
		var table metav1.Table
		if err := json.Unmarshal(body, &table); err != nil || len(table.Rows) != 1 {
			t.Fatalf("%s: table %s: %v", plural, body, err)
		}
		for i, col := range table.ColumnDefinitions {
			if col.Type != "integer" && col.Type != "number" && col.Type != "boolean" {
				continue
			}
			if table.Rows[0].Cells[i] == nil {
				t.Errorf("kubectl get %s: column %s is blank for a zero value", plural, col.Name)
			}
		}
	}
}
