package bgp

import (
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/ironlb/ironlb/config"
)

func u32(v uint32) *uint32 { return &v }

func adv(name string, mod ...func(*config.BGPAdvertisement)) *config.BGPAdvertisement {
	a := &config.BGPAdvertisement{Name: name, AggregationLength: 32, AggregationLengthV6: 128}
	for _, m := range mod {
		m(a)
	}
	return a
}

func TestBuild(t *testing.T) {
	ebgp := []PeerSpec{{Name: "a", MyASN: 1, PeerASN: 2}, {Name: "b", MyASN: 1, PeerASN: 2}}
	ibgp := []PeerSpec{{Name: "a", MyASN: 1, PeerASN: 1}, {Name: "b", MyASN: 1, PeerASN: 2}}
	ip := netip.MustParseAddr
	pfx := netip.MustParsePrefix
	tests := []struct {
		name    string
		items   []Item
		peers   []PeerSpec
		want    []Route
		wantErr string
	}{{
		name:  "host routes to every peer",
		items: []Item{{IP: ip("198.18.21.2"), Advertisements: []*config.BGPAdvertisement{adv("x")}}, {IP: ip("2001:db8::1"), Advertisements: []*config.BGPAdvertisement{adv("x")}}},
		peers: ebgp,
		want: []Route{
			{Prefix: pfx("198.18.21.2/32"), Peers: []string{"a", "b"}},
			{Prefix: pfx("2001:db8::1/128"), Peers: []string{"a", "b"}},
		},
	}, {
		name: "aggregation merges addresses, sorted output",
		items: []Item{
			{IP: ip("198.18.21.9"), Advertisements: []*config.BGPAdvertisement{adv("agg", func(a *config.BGPAdvertisement) { a.AggregationLength = 24 })}},
			{IP: ip("198.18.21.2"), Advertisements: []*config.BGPAdvertisement{adv("agg", func(a *config.BGPAdvertisement) { a.AggregationLength = 24 })}},
			{IP: ip("2001:db8::7"), Advertisements: []*config.BGPAdvertisement{adv("agg", func(a *config.BGPAdvertisement) { a.AggregationLengthV6 = 64 })}},
			{IP: ip("10.0.0.1"), Advertisements: []*config.BGPAdvertisement{adv("x")}},
		},
		peers: ebgp,
		want: []Route{
			{Prefix: pfx("10.0.0.1/32"), Peers: []string{"a", "b"}},
			{Prefix: pfx("198.18.21.0/24"), Peers: []string{"a", "b"}},
			{Prefix: pfx("2001:db8::/64"), Peers: []string{"a", "b"}},
		},
	}, {
		name: "communities unioned, sorted, deduplicated; large parsed",
		items: []Item{{IP: ip("198.18.21.2"), Advertisements: []*config.BGPAdvertisement{
			adv("x", func(a *config.BGPAdvertisement) { a.Communities = mustComms("65000:2", "large:1:2:3", "65000:1") }),
			adv("y", func(a *config.BGPAdvertisement) {
				a.Communities = mustComms("65000:1", "large:1:2:3", "large:0:4294967295:0")
			}),
		}}},
		peers: ebgp,
		want: []Route{{Prefix: pfx("198.18.21.2/32"), Peers: []string{"a", "b"}, Attrs: Attrs{
			Communities:      []uint32{65000<<16 | 1, 65000<<16 | 2},
			LargeCommunities: []LargeCommunity{{0, 4294967295, 0}, {1, 2, 3}},
		}}},
	}, {
		name: "peer filter splits attributes per peer",
		items: []Item{{IP: ip("198.18.21.2"), Advertisements: []*config.BGPAdvertisement{
			adv("all"),
			adv("only-b", func(a *config.BGPAdvertisement) {
				a.Peers = map[string]bool{"b": true}
				a.Communities = mustComms("1:1")
			}),
		}}},
		peers: ebgp,
		want: []Route{
			{Prefix: pfx("198.18.21.2/32"), Peers: []string{"a"}},
			{Prefix: pfx("198.18.21.2/32"), Peers: []string{"b"}, Attrs: Attrs{Communities: []uint32{1<<16 | 1}}},
		},
	}, {
		name: "advertisement for an unknown peer and for no peer",
		items: []Item{{IP: ip("198.18.21.2"), Advertisements: []*config.BGPAdvertisement{
			adv("ghost", func(a *config.BGPAdvertisement) { a.Peers = map[string]bool{"zz": true} }),
			adv("none", func(a *config.BGPAdvertisement) { a.Peers = map[string]bool{} }),
		}}},
		peers: ebgp,
		want:  nil,
	}, {
		name: "local preference: highest wins, iBGP only",
		items: []Item{{IP: ip("198.18.21.2"), Advertisements: []*config.BGPAdvertisement{
			adv("low", func(a *config.BGPAdvertisement) { a.LocalPref = u32(100) }),
			adv("high", func(a *config.BGPAdvertisement) { a.LocalPref = u32(300) }),
		}}},
		peers: ibgp,
		want: []Route{
			{Prefix: pfx("198.18.21.2/32"), Peers: []string{"a"}, Attrs: Attrs{LocalPref: u32(300)}},
			{Prefix: pfx("198.18.21.2/32"), Peers: []string{"b"}},
		},
	}, {
		name: "an aggregation that does not fit is skipped and reported, the rest stays",
		items: []Item{{IP: ip("198.18.21.2"), Advertisements: []*config.BGPAdvertisement{
			adv("bad", func(a *config.BGPAdvertisement) { a.AggregationLength = 33 }),
			adv("good", func(a *config.BGPAdvertisement) { a.Communities = mustComms("1:1") }),
		}}},
		peers:   ebgp[:1],
		want:    []Route{{Prefix: pfx("198.18.21.2/32"), Peers: []string{"a"}, Attrs: Attrs{Communities: []uint32{1<<16 | 1}}}},
		wantErr: `advertisement "bad": aggregation length 33`,
	}, {
		name:  "no peers, no routes",
		items: []Item{{IP: ip("198.18.21.2"), Advertisements: []*config.BGPAdvertisement{adv("x")}}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Build(tc.items, tc.peers)
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("error %v, want %q", err, tc.wantErr)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got\n%v\nwant\n%v", got, tc.want)
			}
			// Order of advertisements and items does not matter.
			rev := make([]Item, len(tc.items))
			for i, it := range tc.items {
				advs := make([]*config.BGPAdvertisement, len(it.Advertisements))
				for j, a := range it.Advertisements {
					advs[len(advs)-1-j] = a
				}
				rev[len(rev)-1-i] = Item{IP: it.IP, Advertisements: advs}
			}
			if again, _ := Build(rev, tc.peers); !reflect.DeepEqual(again, got) {
				t.Errorf("reversed input gives\n%v\nwant\n%v", again, got)
			}
		})
	}
}

// mustComms parses communities as config does.
func mustComms(ss ...string) []config.Community {
	out := make([]config.Community, len(ss))
	for i, s := range ss {
		c, err := config.ParseCommunity(s)
		if err != nil {
			panic(err)
		}
		out[i] = c
	}
	return out
}
