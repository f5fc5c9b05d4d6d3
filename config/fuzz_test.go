package config

import (
	"encoding/json"
	"reflect"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// FuzzParse feeds arbitrary objects (whatever the fuzzer makes of the JSON
// below, past what admission would refuse) to Parse: it must never panic,
// must be deterministic, must name the object and field of every problem,
// and must keep every object with a fatal problem out of the Config.
func FuzzParse(f *testing.F) {
	seed := Objects{
		Pools: []v1beta1.IPAddressPool{pool("a", 1, "198.18.0.0/24", "2001:db8::/120"), pool("b", 2, "198.18.0.10-198.18.0.20")},
		L2Advertisements: []v1beta1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "l2"},
			Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"a", "c"}, Interfaces: []string{"eth0"}}}},
		BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: metav1.ObjectMeta{Name: "p"},
			Spec: v1beta1.BGPPeerSpec{MyASN: 64513, PeerASN: 64512, PeerAddress: "198.18.0.1", BFDProfile: "fast",
				HoldTime: &metav1.Duration{Duration: 3 * time.Second}}}},
		BGPAdvertisements: []v1beta1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "adv"},
			Spec: v1beta1.BGPAdvertisementSpec{Communities: []v1beta1.CommunityValue{"64512:100", "large:1:2:3", "alias"},
				AggregationLength: ptr[int32](24), LocalPref: ptr[int64](100), Peers: []v1beta1.PoolName{"p"}}}},
		BFDProfiles: []v1beta1.BFDProfile{{ObjectMeta: metav1.ObjectMeta{Name: "fast"},
			Spec: v1beta1.BFDProfileSpec{ReceiveInterval: ptr[int32](300), DetectMultiplier: ptr[int32](3)}}},
		Communities: []v1beta1.Community{{ObjectMeta: metav1.ObjectMeta{Name: "c"},
			Spec: v1beta1.CommunitySpec{Communities: []v1beta1.CommunityAlias{{Name: "alias", Value: "65535:65281"}}}}},
	}
	b, err := json.Marshal(seed)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b)
	f.Add([]byte(`{"Pools":[{"metadata":{"name":"x"},"spec":{"addresses":["10.0.0.5/8","::/0","1.2.3.4-1.2.3.1","garbage"]}}]}`))
	f.Add([]byte(`{"BGPAdvertisements":[{"metadata":{"name":"x"},"spec":{"aggregationLength":-1,"aggregationLengthV6":200,"communities":["large:99999999999:1:1","1:70000"]}}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var objs Objects
		if json.Unmarshal(data, &objs) != nil {
			return
		}
		cfg, ps := Parse(objs)
		cfg2, ps2 := Parse(objs)
		if !reflect.DeepEqual(ps, ps2) || !reflect.DeepEqual(cfg.Valid, cfg2.Valid) {
			t.Fatalf("Parse is not deterministic:\n%v\n%v", ps, ps2)
		}
		for _, p := range ps {
			if p.Kind == "" || p.Field == "" || p.Message == "" {
				t.Errorf("problem without kind, field or message: %+v", p)
			}
			if p.Fatal && cfg.Valid[p.Kind+"/"+p.Name] {
				t.Errorf("%s/%s has a fatal problem (%s) but is valid", p.Kind, p.Name, p.Message)
			}
		}
		for name, p := range cfg.Pools {
			if p == nil || p.Name != name || len(p.Ranges) == 0 {
				t.Errorf("pool %q in the config: %+v", name, p)
			}
		}
	})
}
