package bgp

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	api "github.com/osrg/gobgp/v4/api"
	"google.golang.org/protobuf/proto"

	"github.com/ironlb/ironlb/config"
)

func TestAPIPeer(t *testing.T) {
	families := func(gr bool) []*api.AfiSafi {
		var out []*api.AfiSafi
		for _, afi := range []api.Family_Afi{api.Family_AFI_IP, api.Family_AFI_IP6} {
			af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: &api.Family{Afi: afi, Safi: api.Family_SAFI_UNICAST}, Enabled: true}}
			if gr {
				af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
			}
			out = append(out, af)
		}
		return out
	}
	base := func(mod func(*api.Peer)) *api.Peer {
		p := &api.Peer{
			Conf:      &api.PeerConf{NeighborAddress: "198.18.20.1", PeerAsn: 64512, LocalAsn: 64513, Description: "rtr"},
			Timers:    &api.Timers{Config: &api.TimersConfig{IdleHoldTimeAfterReset: 2}},
			Transport: &api.Transport{},
			AfiSafis:  families(false),
		}
		if mod != nil {
			mod(p)
		}
		return p
	}
	spec := PeerSpec{Name: "rtr", Address: netip.MustParseAddr("198.18.20.1"), MyASN: 64513, PeerASN: 64512}
	tests := []struct {
		name    string
		mod     func(*PeerSpec)
		want    *api.Peer
		wantErr string
	}{
		{name: "minimal", want: base(nil)},
		{
			name: "everything",
			mod: func(p *PeerSpec) {
				p.Port = 1179
				p.SourceAddress = netip.MustParseAddr("198.18.20.2")
				p.HoldTime, p.KeepaliveTime, p.ConnectTime = 9*time.Second, 3*time.Second, 1500*time.Millisecond
				p.EBGPMultiHop = true
				p.Password = "pw"
				p.BFD = &BFD{ReceiveInterval: 300 * time.Millisecond, TransmitInterval: 200 * time.Millisecond, DetectMultiplier: 3}
				p.GracefulRestart = true
			},
			want: base(func(p *api.Peer) {
				p.Conf.AuthPassword = "pw"
				p.Timers.Config.HoldTime, p.Timers.Config.KeepaliveInterval, p.Timers.Config.ConnectRetry = 9, 3, 2
				p.Transport = &api.Transport{RemotePort: 1179, LocalAddress: "198.18.20.2"}
				p.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
				p.Bfd = &api.BfdPeerConfig{Enabled: true, RequiredMinimumReceive: 300000, DesiredMinimumTxInterval: 200000, DetectionMultiplier: 3}
				p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: 120}
				p.AfiSafis = families(true)
			}),
		},
		{
			name: "multihop ignored for iBGP, explicit restart time, IPv6 peer",
			mod: func(p *PeerSpec) {
				p.Address = netip.MustParseAddr("2001:db8:20::1")
				p.PeerASN = p.MyASN
				p.EBGPMultiHop = true
				p.GracefulRestart, p.RestartTime = true, 30*time.Second
			},
			want: base(func(p *api.Peer) {
				p.Conf.NeighborAddress = "2001:db8:20::1"
				p.Conf.PeerAsn = 64513
				p.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: 30}
				p.AfiSafis = families(true)
			}),
		},
		{
			name: "unnumbered in a VRF: GoBGP's interface neighbour, sockets bound to the VRF",
			mod: func(p *PeerSpec) {
				p.Address, p.Interface, p.VRF = netip.Addr{}, "eth1", "blue"
			},
			want: base(func(p *api.Peer) {
				p.Conf.NeighborAddress, p.Conf.NeighborInterface = "", "eth1"
				p.Transport.BindInterface = "blue"
			}),
		},
		{
			name: "numbered in a VRF",
			mod:  func(p *PeerSpec) { p.VRF = "blue" },
			want: base(func(p *api.Peer) { p.Transport.BindInterface = "blue" }),
		},
		{name: "no address", mod: func(p *PeerSpec) { p.Address = netip.Addr{} }, wantErr: `peer "rtr": needs an address or an interface`},
		{
			name: "unnumbered with the address found: the interface still decides",
			mod:  func(p *PeerSpec) { p.Address, p.Interface = netip.MustParseAddr("fe80::1%eth1"), "eth1" },
			want: base(func(p *api.Peer) { p.Conf.NeighborAddress, p.Conf.NeighborInterface = "", "eth1" }),
		},
		{name: "no ASN", mod: func(p *PeerSpec) { p.MyASN = 0 }, wantErr: `peer "rtr": ASNs must be set`},
		{name: "restart time too long", mod: func(p *PeerSpec) { p.GracefulRestart, p.RestartTime = true, 2*time.Hour }, wantErr: "exceeds 4095s"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := spec
			if tc.mod != nil {
				tc.mod(&s)
			}
			got, err := apiPeer(s)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !proto.Equal(got, tc.want) {
				t.Errorf("got\n%v\nwant\n%v", got, tc.want)
			}
		})
	}
}

func TestNewPeerSpecAndEqual(t *testing.T) {
	cp := &config.BGPPeer{
		Name: "rtr", MyASN: 1, PeerASN: 2, Address: netip.MustParseAddr("198.18.20.1"), HoldTime: 90 * time.Second,
		BFD:             &config.BFDProfile{Name: "fast", ReceiveInterval: time.Second, TransmitInterval: time.Second, DetectMultiplier: 5, PassiveMode: true},
		GracefulRestart: true,
	}
	s := NewPeerSpec(cp, "pw")
	want := PeerSpec{Name: "rtr", MyASN: 1, PeerASN: 2, Address: cp.Address, HoldTime: 90 * time.Second, Password: "pw",
		BFD: &BFD{ReceiveInterval: time.Second, TransmitInterval: time.Second, DetectMultiplier: 5}, GracefulRestart: true}
	if !s.Equal(want) {
		t.Errorf("got %+v, want %+v", s, want)
	}
	other := want
	other.BFD = &BFD{ReceiveInterval: time.Second, TransmitInterval: time.Second, DetectMultiplier: 3}
	if s.Equal(other) {
		t.Error("different BFD profiles compare equal")
	}
	other.BFD = nil
	if s.Equal(other) {
		t.Error("BFD and no BFD compare equal")
	}
}

func TestRouterID(t *testing.T) {
	node := netip.MustParseAddr("198.18.20.2")
	rid := netip.MustParseAddr("10.0.0.1")
	peer := func(name string, id netip.Addr) *config.BGPPeer { return &config.BGPPeer{Name: name, RouterID: id} }
	tests := []struct {
		name    string
		peers   []*config.BGPPeer
		node    netip.Addr
		want    netip.Addr
		wantErr string
	}{
		{"defaults to node", []*config.BGPPeer{peer("a", netip.Addr{})}, node, node, ""},
		{"no peers", nil, node, node, ""},
		{"explicit agree", []*config.BGPPeer{peer("a", rid), peer("b", rid)}, node, rid, ""},
		{"explicit without node IPv4", []*config.BGPPeer{peer("a", rid)}, netip.Addr{}, rid, ""},
		{"explicit disagree", []*config.BGPPeer{peer("b", node), peer("a", rid)}, node, netip.Addr{}, `peer "b": router ID 198.18.20.2 differs from 10.0.0.1 set by peer "a"`},
		{"explicit vs default", []*config.BGPPeer{peer("a", rid), peer("b", netip.Addr{})}, node, netip.Addr{}, "other peers default to the node address"},
		{"IPv6-only node", []*config.BGPPeer{peer("a", netip.Addr{})}, netip.MustParseAddr("2001:db8::1"), netip.Addr{}, "no IPv4 address"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := RouterID(tc.peers, tc.node)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}
