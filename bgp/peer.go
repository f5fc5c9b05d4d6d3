package bgp

import (
	"errors"
	"fmt"
	"math"
	"net/netip"
	"slices"
	"time"

	api "github.com/osrg/gobgp/v4/api"

	"github.com/ironlb/ironlb/config"
)

// DefaultRestartTime is the graceful-restart time advertised when a peer
// enables graceful restart without saying how long: FRR's and most
// routers' default, long enough for a speaker pod to be restarted.
const DefaultRestartTime = 120 * time.Second

// idleHoldAfterReset is how long GoBGP waits before dialling again after a
// session went down (GoBGP's own default is 30s, far longer than a BFD
// detection or a router restart; ironlb wants the session back quickly).
const idleHoldAfterReset = 2 * time.Second

// BFD is the part of a BFDProfile GoBGP's built-in BFD implements.
// GoBGP has no passive mode and no minimum TTL check: it always sends
// control packets with TTL 255 (RFC 5881) and accepts any TTL.
type BFD struct {
	ReceiveInterval  time.Duration `json:"receiveInterval"`
	TransmitInterval time.Duration `json:"transmitInterval"`
	DetectMultiplier int           `json:"detectMultiplier"`
}

// PeerSpec is one BGP session as the speaker runs it: a config.BGPPeer
// with everything the node resolves (password, defaults) filled in. It is
// plain data (JSON-friendly) so that tests and helper processes can pass
// it around.
type PeerSpec struct {
	Name string `json:"name"`
	// Address is the router's. An unnumbered session's is the Speaker's
	// to learn from Interface's neighbours (whatever is set here is
	// replaced by what it finds).
	Address netip.Addr `json:"address,omitzero"`
	// Interface names the node's link to the router of an unnumbered
	// session (IPv6 link-local transport, RFC 8950 next hops).
	Interface string `json:"interface,omitempty"`
	// VRF is the node's VRF device the session's sockets are bound to
	// ("" = the default VRF).
	VRF string `json:"vrf,omitempty"`
	// Port is the peer's TCP port; 0 means 179.
	Port          uint16     `json:"port,omitempty"`
	MyASN         uint32     `json:"myASN"`
	PeerASN       uint32     `json:"peerASN"`
	SourceAddress netip.Addr `json:"sourceAddress,omitzero"` // invalid = kernel's choice
	// Timers; zero means GoBGP's default (hold 90s, keepalive hold/3,
	// connect retry 120s). Sub-second parts are rounded up.
	HoldTime      time.Duration `json:"holdTime,omitempty"`
	KeepaliveTime time.Duration `json:"keepaliveTime,omitempty"`
	ConnectTime   time.Duration `json:"connectTime,omitempty"`
	EBGPMultiHop  bool          `json:"ebgpMultiHop,omitempty"`
	// Password turns on TCP MD5 signatures (RFC 2385).
	Password string `json:"password,omitempty"`
	BFD      *BFD   `json:"bfd,omitempty"` // nil = no BFD
	// GracefulRestart advertises RFC 4724 graceful restart for both
	// families with RestartTime (0 = DefaultRestartTime).
	GracefulRestart bool          `json:"gracefulRestart,omitempty"`
	RestartTime     time.Duration `json:"restartTime,omitempty"`
}

// IBGP tells whether the session is internal (same AS on both ends).
func (p PeerSpec) IBGP() bool { return p.MyASN == p.PeerASN }

// Equal tells whether a and b describe the same session. A difference
// means the session is reconfigured (and reset).
func (p PeerSpec) Equal(o PeerSpec) bool {
	if (p.BFD == nil) != (o.BFD == nil) || p.BFD != nil && *p.BFD != *o.BFD {
		return false
	}
	p.BFD, o.BFD = nil, nil
	return p == o
}

// NewPeerSpec resolves a validated config.BGPPeer for this node; password
// is the content of the peer's password Secret ("" = none), which only
// the caller can read.
func NewPeerSpec(p *config.BGPPeer, password string) PeerSpec {
	s := PeerSpec{
		Name:            p.Name,
		Address:         p.Address,
		Interface:       p.Interface,
		VRF:             p.VRF,
		Port:            p.Port,
		MyASN:           p.MyASN,
		PeerASN:         p.PeerASN,
		SourceAddress:   p.SourceAddress,
		HoldTime:        p.HoldTime,
		KeepaliveTime:   p.KeepaliveTime,
		ConnectTime:     p.ConnectTime,
		EBGPMultiHop:    p.EBGPMultiHop,
		Password:        password,
		GracefulRestart: p.GracefulRestart,
	}
	if p.BFD != nil {
		s.BFD = &BFD{
			ReceiveInterval:  p.BFD.ReceiveInterval,
			TransmitInterval: p.BFD.TransmitInterval,
			DetectMultiplier: p.BFD.DetectMultiplier,
		}
	}
	return s
}

// RouterID picks the BGP identifier for the node's speaker. GoBGP has one
// router ID per server, while BGPPeer carries one per peer: the peers'
// explicit router IDs must therefore agree; peers without one use the
// node's IPv4 address. It fails when they disagree, or when a router ID is
// needed and the node has no IPv4 address (a router ID is 32 bits).
func RouterID(peers []*config.BGPPeer, nodeIPv4 netip.Addr) (netip.Addr, error) {
	var explicit netip.Addr
	var from string
	needNode := len(peers) == 0
	sorted := slices.Clone(peers)
	slices.SortFunc(sorted, func(a, b *config.BGPPeer) int {
		if a.Name < b.Name {
			return -1
		}
		if a.Name > b.Name {
			return 1
		}
		return 0
	})
	for _, p := range sorted {
		if !p.RouterID.IsValid() {
			needNode = true
			continue
		}
		if !explicit.IsValid() {
			explicit, from = p.RouterID, p.Name
			continue
		}
		if p.RouterID != explicit {
			return netip.Addr{}, fmt.Errorf("peer %q: router ID %s differs from %s set by peer %q: one speaker has one router ID", p.Name, p.RouterID, explicit, from)
		}
	}
	if needNode && explicit.IsValid() && nodeIPv4.IsValid() && explicit != nodeIPv4.Unmap() {
		return netip.Addr{}, fmt.Errorf("peer %q sets router ID %s, other peers default to the node address %s: one speaker has one router ID", from, explicit, nodeIPv4)
	}
	if explicit.IsValid() {
		return explicit, nil
	}
	if !nodeIPv4.Unmap().Is4() {
		return netip.Addr{}, errors.New("no router ID: the node has no IPv4 address and no peer sets routerID")
	}
	return nodeIPv4.Unmap(), nil
}

// seconds rounds d up to whole seconds, as BGP timers are in seconds.
func seconds(d time.Duration) uint64 {
	if d <= 0 {
		return 0
	}
	return uint64(math.Ceil(d.Seconds()))
}

func micros(d time.Duration) uint32 {
	if d <= 0 {
		return 0
	}
	return uint32(min(d.Microseconds(), math.MaxUint32))
}

// apiPeer translates a PeerSpec into GoBGP's neighbor configuration. Both
// unicast families are enabled on every session, whatever its transport
// family, so a dual-stack Service can be announced over one session. An
// unnumbered session is GoBGP's interface neighbour: GoBGP finds the
// router's link-local address among the interface's IPv6 neighbours and
// always offers the extended next hop capability; a VRF is GoBGP's bind
// interface (SO_BINDTODEVICE on the session's and BFD's sockets).
func apiPeer(p PeerSpec) (*api.Peer, error) {
	if !p.Address.IsValid() && p.Interface == "" {
		return nil, fmt.Errorf("peer %q: needs an address or an interface", p.Name)
	}
	if p.MyASN == 0 || p.PeerASN == 0 {
		return nil, fmt.Errorf("peer %q: ASNs must be set (myASN %d, peerASN %d)", p.Name, p.MyASN, p.PeerASN)
	}
	out := &api.Peer{
		Conf: &api.PeerConf{
			NeighborInterface: p.Interface,
			PeerAsn:           p.PeerASN,
			LocalAsn:          p.MyASN,
			AuthPassword:      p.Password,
			Description:       p.Name,
		},
		Timers: &api.Timers{Config: &api.TimersConfig{
			HoldTime:               seconds(p.HoldTime),
			KeepaliveInterval:      seconds(p.KeepaliveTime),
			ConnectRetry:           seconds(p.ConnectTime),
			IdleHoldTimeAfterReset: seconds(idleHoldAfterReset),
		}},
		Transport: &api.Transport{
			RemotePort:    uint32(p.Port),
			BindInterface: p.VRF,
		},
	}
	if p.Interface == "" {
		out.Conf.NeighborAddress = p.Address.Unmap().String()
	}
	if p.SourceAddress.IsValid() {
		out.Transport.LocalAddress = p.SourceAddress.Unmap().String()
	}
	if p.EBGPMultiHop && !p.IBGP() {
		out.EbgpMultihop = &api.EbgpMultihop{Enabled: true, MultihopTtl: 255}
	}
	families := []*api.Family{
		{Afi: api.Family_AFI_IP, Safi: api.Family_SAFI_UNICAST},
		{Afi: api.Family_AFI_IP6, Safi: api.Family_SAFI_UNICAST},
	}
	for _, f := range families {
		af := &api.AfiSafi{Config: &api.AfiSafiConfig{Family: f, Enabled: true}}
		if p.GracefulRestart {
			af.MpGracefulRestart = &api.MpGracefulRestart{Config: &api.MpGracefulRestartConfig{Enabled: true}}
		}
		out.AfiSafis = append(out.AfiSafis, af)
	}
	if p.GracefulRestart {
		rt := p.RestartTime
		if rt <= 0 {
			rt = DefaultRestartTime
		}
		if s := seconds(rt); s > 4095 { // 12 bits in the capability
			return nil, fmt.Errorf("peer %q: restart time %s exceeds 4095s", p.Name, rt)
		}
		out.GracefulRestart = &api.GracefulRestart{Enabled: true, RestartTime: uint32(seconds(rt))}
	}
	if p.BFD != nil {
		mult := p.BFD.DetectMultiplier
		if mult < 0 || mult > 255 {
			return nil, fmt.Errorf("peer %q: BFD detect multiplier %d is outside 0..255", p.Name, mult)
		}
		out.Bfd = &api.BfdPeerConfig{
			Enabled:                  true,
			DesiredMinimumTxInterval: micros(p.BFD.TransmitInterval),
			RequiredMinimumReceive:   micros(p.BFD.ReceiveInterval),
			DetectionMultiplier:      uint32(mult),
		}
	}
	return out, nil
}
