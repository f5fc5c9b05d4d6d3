package config

import (
	"fmt"
	"math"
	"net/netip"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// BGPPeer is a validated BGPPeer with defaults filled in.
type BGPPeer struct {
	Name           string
	MyASN, PeerASN uint32
	Address        netip.Addr // invalid when Interface is set
	// Interface is the node's link to the router of an unnumbered
	// session (IPv6 link-local); "" for a numbered one.
	Interface string
	// VRF is the node's VRF device the session is bound to; "" = default.
	VRF             string
	Port            uint16
	SourceAddress   netip.Addr // invalid = kernel's choice
	RouterID        netip.Addr // invalid = node's IPv4
	HoldTime        time.Duration
	KeepaliveTime   time.Duration
	ConnectTime     time.Duration
	EBGPMultiHop    bool
	NodeSelectors   []labels.Selector
	PasswordSecret  *v1beta1.SecretKeyRef
	BFD             *BFDProfile // nil = no BFD
	GracefulRestart bool
}

// BGPAdvertisement is a validated BGPAdvertisement.
type BGPAdvertisement struct {
	Name                string
	Pools               map[string]bool // nil = every pool
	ServiceSelectors    []labels.Selector
	NodeSelectors       []labels.Selector
	Peers               map[string]bool // nil = every peer
	AggregationLength   int
	AggregationLengthV6 int
	LocalPref           *uint32
	// Communities are resolved (aliases replaced) and parsed: the BGP
	// side never parses a community again.
	Communities []Community
}

// Community is one BGP community: a standard one (RFC 1997, "a:b" with
// 16-bit parts; Value[0] = a<<16 | b) or, when Large, an RFC 8092 one
// ("large:a:b:c" with 32-bit parts).
type Community struct {
	Large bool
	Value [3]uint32
}

func (c Community) String() string {
	if c.Large {
		return fmt.Sprintf("large:%d:%d:%d", c.Value[0], c.Value[1], c.Value[2])
	}
	return fmt.Sprintf("%d:%d", c.Value[0]>>16, c.Value[0]&0xffff)
}

// BFDProfile is a validated BFDProfile with defaults filled in.
type BFDProfile struct {
	Name                              string
	ReceiveInterval, TransmitInterval time.Duration
	DetectMultiplier                  int
	PassiveMode                       bool
	MinimumTTL                        int
}

func parseBFD(items []v1beta1.BFDProfile, cfg *Config, ps *problems) {
	for i := range items {
		obj := &items[i]
		p := &BFDProfile{
			Name:             obj.Name,
			ReceiveInterval:  time.Duration(deref(obj.Spec.ReceiveInterval, 300)) * time.Millisecond,
			TransmitInterval: time.Duration(deref(obj.Spec.TransmitInterval, 300)) * time.Millisecond,
			DetectMultiplier: int(deref(obj.Spec.DetectMultiplier, 3)),
			PassiveMode:      obj.Spec.PassiveMode,
			MinimumTTL:       int(deref(obj.Spec.MinimumTTL, 254)),
		}
		ok := true
		check := func(field string, v, lo, hi int64) {
			if v < lo || v > hi {
				ps.add(true, KindBFD, obj.Name, field, v1beta1.ReasonInvalid, "%d is outside %d..%d", v, lo, hi)
				ok = false
			}
		}
		check("spec.receiveInterval", p.ReceiveInterval.Milliseconds(), 10, 60000)
		check("spec.transmitInterval", p.TransmitInterval.Milliseconds(), 10, 60000)
		check("spec.detectMultiplier", int64(p.DetectMultiplier), 2, 255)
		check("spec.minimumTtl", int64(p.MinimumTTL), 1, 254)
		if ok {
			cfg.BFDProfiles[obj.Name] = p
		}
	}
}

// parseCommunities returns alias → value.
func parseCommunities(items []v1beta1.Community, est map[string]bool, ps *problems) map[string]Community {
	out := map[string]Community{}
	owner := map[string]string{}
	for _, obj := range byAge(items, KindCommunity, est, func(c *v1beta1.Community) *metav1.ObjectMeta { return &c.ObjectMeta }) {
		for i, a := range obj.Spec.Communities {
			field := fmt.Sprintf("spec.communities[%d]", i)
			v, err := ParseCommunity(string(a.Value))
			if err != nil {
				ps.add(true, KindCommunity, obj.Name, field+".value", v1beta1.ReasonInvalid, "%v", err)
				continue
			}
			if prev, dup := owner[a.Name]; dup {
				ps.add(true, KindCommunity, obj.Name, field+".name", v1beta1.ReasonDuplicateKey, "alias %q is already defined by Community %q", a.Name, prev)
				continue
			}
			owner[a.Name] = obj.Name
			out[a.Name] = v
		}
	}
	return out
}

// ParseCommunity parses a literal community: "a:b" with 16-bit parts, or
// "large:a:b:c" with 32-bit parts.
func ParseCommunity(s string) (Community, error) {
	parts := strings.Split(s, ":")
	c := Community{}
	bits := 16
	if parts[0] == "large" {
		parts, bits, c.Large = parts[1:], 32, true
		if len(parts) != 3 {
			return c, fmt.Errorf("large community %q must be large:A:B:C", s)
		}
	} else if len(parts) != 2 {
		return c, fmt.Errorf("community %q must be A:B (or large:A:B:C)", s)
	}
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, bits)
		if err != nil {
			return c, fmt.Errorf("community %q: part %q is not a number of at most %d bits", s, p, bits)
		}
		c.Value[i] = uint32(v)
	}
	if !c.Large {
		c.Value = [3]uint32{c.Value[0]<<16 | c.Value[1]}
	}
	return c, nil
}

func parsePeers(items []v1beta1.BGPPeer, est map[string]bool, cfg *Config, ps *problems) {
	// One GoBGP server per node keys its sessions by neighbour address
	// (or interface), whatever the VRF: two peers at one address cannot
	// both run, even in different VRFs.
	type endpoint struct {
		addr  netip.Addr
		iface string
		port  uint16
	}
	seen := map[endpoint]string{}
	for _, obj := range byAge(items, KindBGPPeer, est, func(p *v1beta1.BGPPeer) *metav1.ObjectMeta { return &p.ObjectMeta }) {
		name, s := obj.Name, &obj.Spec
		ok := true
		bad := func(field, format string, args ...any) {
			ps.add(true, KindBGPPeer, name, field, v1beta1.ReasonInvalid, format, args...)
			ok = false
		}
		p := &BGPPeer{
			Name: name, MyASN: uint32(s.MyASN), PeerASN: uint32(s.PeerASN), Port: uint16(deref(s.PeerPort, 179)),
			HoldTime: 90 * time.Second, ConnectTime: 10 * time.Second,
			EBGPMultiHop: s.EBGPMultiHop, PasswordSecret: s.PasswordSecret, GracefulRestart: s.GracefulRestart,
			Interface: s.Interface, VRF: s.VRF,
		}
		if s.MyASN < 1 || s.MyASN > math.MaxUint32 {
			bad("spec.myASN", "%d is outside 1..4294967295", s.MyASN)
		}
		if s.PeerASN < 1 || s.PeerASN > math.MaxUint32 {
			bad("spec.peerASN", "%d is outside 1..4294967295", s.PeerASN)
		}
		if pp := deref(s.PeerPort, 179); pp < 1 || pp > 65535 {
			bad("spec.peerPort", "%d is outside 1..65535", pp)
		}
		var err error
		switch {
		case s.PeerAddress != "" && s.Interface != "":
			bad("spec.interface", "set exactly one of peerAddress (%s) and interface (%s)", s.PeerAddress, s.Interface)
		case s.Interface != "":
			if !validLinkName(s.Interface) {
				bad("spec.interface", "%q is not an interface name (1 to 15 characters, no space, '/', ':' or '%%')", s.Interface)
			}
			if s.SourceAddress != "" {
				bad("spec.sourceAddress", "cannot be set with interface %q: an unnumbered session starts from the interface's IPv6 link-local address", s.Interface)
			}
			if s.EBGPMultiHop {
				bad("spec.ebgpMultiHop", "cannot be set with interface %q: an unnumbered router is on the link itself", s.Interface)
			}
		case s.PeerAddress == "":
			bad("spec.peerAddress", "set exactly one of peerAddress (a numbered session) and interface (BGP unnumbered)")
		default:
			if p.Address, err = netip.ParseAddr(string(s.PeerAddress)); err != nil {
				bad("spec.peerAddress", "%q is not an IP address", s.PeerAddress)
			}
		}
		if s.VRF != "" && !validLinkName(s.VRF) {
			bad("spec.vrf", "%q is not a VRF device name (1 to 15 characters, no space, '/', ':' or '%%')", s.VRF)
		}
		if s.SourceAddress != "" && s.Interface == "" {
			if p.SourceAddress, err = netip.ParseAddr(string(s.SourceAddress)); err != nil {
				bad("spec.sourceAddress", "%q is not an IP address", s.SourceAddress)
			} else if p.Address.IsValid() && p.SourceAddress.Is4() != p.Address.Is4() {
				bad("spec.sourceAddress", "%s and peerAddress %s are of different IP families", p.SourceAddress, p.Address)
			}
		}
		if s.RouterID != "" {
			if p.RouterID, err = netip.ParseAddr(s.RouterID); err != nil || !p.RouterID.Is4() {
				bad("spec.routerID", "%q is not an IPv4 address", s.RouterID)
			}
		}
		if s.HoldTime != nil {
			p.HoldTime = s.HoldTime.Duration
			if p.HoldTime != 0 && (p.HoldTime < 3*time.Second || p.HoldTime > 65535*time.Second) {
				bad("spec.holdTime", "%s must be 0 or between 3s and 65535s", p.HoldTime)
			}
		}
		p.KeepaliveTime = p.HoldTime / 3
		if s.KeepaliveTime != nil {
			p.KeepaliveTime = s.KeepaliveTime.Duration
			if p.KeepaliveTime < time.Second || (p.HoldTime != 0 && p.KeepaliveTime >= p.HoldTime) {
				bad("spec.keepaliveTime", "%s must be at least 1s and shorter than holdTime %s", p.KeepaliveTime, p.HoldTime)
			}
		}
		if s.ConnectTime != nil {
			p.ConnectTime = s.ConnectTime.Duration
			if p.ConnectTime < time.Second || p.ConnectTime > 65535*time.Second {
				bad("spec.connectTime", "%s must be between 1s and 65535s", p.ConnectTime)
			}
		}
		if s.BFDProfile != "" {
			if b, found := cfg.BFDProfiles[string(s.BFDProfile)]; found {
				p.BFD = b
			} else {
				ps.add(false, KindBGPPeer, name, "spec.bfdProfile", v1beta1.ReasonUnknownRef, "BFDProfile %q does not exist or is invalid; the session runs without BFD", s.BFDProfile)
			}
		}
		var selOK bool
		p.NodeSelectors, selOK = selectors(KindBGPPeer, name, "spec.nodeSelectors", s.NodeSelectors, ps)
		ok = ok && selOK
		if ok {
			key := endpoint{p.Address, p.Interface, p.Port}
			if prev, dup := seen[key]; dup {
				if p.Interface != "" {
					ps.add(true, KindBGPPeer, name, "spec.interface", v1beta1.ReasonConflict, "BGPPeer %q already peers over interface %s", prev, p.Interface)
				} else {
					ps.add(true, KindBGPPeer, name, "spec.peerAddress", v1beta1.ReasonConflict, "BGPPeer %q already peers with %s port %d", prev, p.Address, p.Port)
				}
				continue
			}
			seen[key] = name
			cfg.BGPPeers[name] = p
		}
	}
}

// validLinkName tells whether s can name a Linux network device: 1 to 15
// bytes (IFNAMSIZ less the NUL), not "." or "..", no white space, '/'
// or ':', and no '%' (it would end an IPv6 zone).
func validLinkName(s string) bool {
	return len(s) > 0 && len(s) < 16 && s != "." && s != ".." && !strings.ContainsAny(s, " \t\n\r\f\v/:%")
}

func parseBGPAdvs(items []v1beta1.BGPAdvertisement, est map[string]bool, cfg *Config, poolLabels map[string]labels.Set, aliases map[string]Community, ps *problems) {
	// Per pool, the first advertisement that set localPref / aggregation
	// wins; a later one that disagrees is the conflict.
	type claim struct {
		by    string
		value string
	}
	claims := map[string]claim{}
	for _, obj := range byAge(items, KindBGPAdv, est, func(a *v1beta1.BGPAdvertisement) *metav1.ObjectMeta { return &a.ObjectMeta }) {
		name, s := obj.Name, &obj.Spec
		pools, ok := resolvePools(KindBGPAdv, name, s.IPAddressPools, s.IPAddressPoolSelectors, cfg, poolLabels, ps)
		a := &BGPAdvertisement{
			Name: name, Pools: pools,
			AggregationLength:   int(deref(s.AggregationLength, 32)),
			AggregationLengthV6: int(deref(s.AggregationLengthV6, 128)),
		}
		bad := func(field, reason, format string, args ...any) {
			ps.add(true, KindBGPAdv, name, field, reason, format, args...)
			ok = false
		}
		if lp := s.LocalPref; lp != nil {
			if *lp < 0 || *lp > math.MaxUint32 {
				bad("spec.localPref", v1beta1.ReasonInvalid, "%d is outside 0..4294967295", *lp)
			} else {
				v := uint32(*lp)
				a.LocalPref = &v
			}
		}
		if a.AggregationLength < 0 || a.AggregationLength > 32 {
			bad("spec.aggregationLength", v1beta1.ReasonInvalid, "%d is outside 0..32", a.AggregationLength)
		}
		if a.AggregationLengthV6 < 0 || a.AggregationLengthV6 > 128 {
			bad("spec.aggregationLengthV6", v1beta1.ReasonInvalid, "%d is outside 0..128", a.AggregationLengthV6)
		}
		var selOK1, selOK2 bool
		a.ServiceSelectors, selOK1 = selectors(KindBGPAdv, name, "spec.serviceSelectors", s.ServiceSelectors, ps)
		a.NodeSelectors, selOK2 = selectors(KindBGPAdv, name, "spec.nodeSelectors", s.NodeSelectors, ps)
		ok = ok && selOK1 && selOK2
		if len(s.Peers) > 0 {
			a.Peers = map[string]bool{}
			for i, p := range s.Peers {
				if _, found := cfg.BGPPeers[string(p)]; !found {
					ps.add(false, KindBGPAdv, name, fmt.Sprintf("spec.peers[%d]", i), v1beta1.ReasonUnknownRef, "BGPPeer %q does not exist or is invalid", p)
				}
				a.Peers[string(p)] = true
			}
		}
		for i, c := range s.Communities {
			field := fmt.Sprintf("spec.communities[%d]", i)
			if v, alias := aliases[string(c)]; alias {
				a.Communities = append(a.Communities, v)
				continue
			}
			if !strings.Contains(string(c), ":") {
				bad(field, v1beta1.ReasonUnknownRef, "community alias %q is not defined by any Community object", c)
				continue
			}
			v, err := ParseCommunity(string(c))
			if err != nil {
				bad(field, v1beta1.ReasonInvalid, "%v", err)
				continue
			}
			a.Communities = append(a.Communities, v)
		}
		if !ok {
			continue
		}
		// Aggregation must not announce addresses outside the pool, and
		// advertisements of one pool must agree on it and on localPref.
		lp := "none"
		if a.LocalPref != nil {
			lp = strconv.FormatUint(uint64(*a.LocalPref), 10)
		}
		want := fmt.Sprintf("aggregationLength %d, aggregationLengthV6 %d, localPref %s", a.AggregationLength, a.AggregationLengthV6, lp)
		for _, pn := range sortedPools(a.Pools, cfg) {
			pool := cfg.Pools[pn]
			for _, r := range pool.Ranges {
				l := a.AggregationLength
				if r.First.Is6() {
					l = a.AggregationLengthV6
				}
				if !alignedTo(r, l) {
					bad("spec.aggregationLength", v1beta1.ReasonInvalid, "aggregation /%d of %s of IPAddressPool %q would announce addresses outside the pool", l, r, pn)
				}
			}
			if prev, found := claims[pn]; found && prev.value != want {
				bad("spec", v1beta1.ReasonConflict, "IPAddressPool %q is advertised by BGPAdvertisement %q with %s; this one asks %s", pn, prev.by, prev.value, want)
			}
		}
		if !ok {
			continue
		}
		for _, pn := range sortedPools(a.Pools, cfg) {
			if _, found := claims[pn]; !found {
				claims[pn] = claim{name, want}
			}
		}
		cfg.BGPAdvertisements = append(cfg.BGPAdvertisements, a)
	}
}
