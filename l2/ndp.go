package l2

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

// allNodes is ff02::1, where unsolicited Neighbor Advertisements go.
var allNodes = netip.MustParseAddr("ff02::1")

// ndpDecision is the verdict on one received ICMPv6 message.
type ndpDecision struct {
	// reply is a Neighbor Advertisement to send to dst, or nil.
	reply *ndp.NeighborAdvertisement
	dst   netip.Addr
	heard
}

// heard is what a received message of either protocol says, besides the
// reply: the part every handler treats the same.
type heard struct {
	// request is set for a request (ARP request, Neighbor Solicitation)
	// for an IP we announce (metrics).
	request bool
	// conflict is valid when a foreign host claims an IP we probe or
	// announce; foreignMAC is its MAC, nil when the message does not say
	// (a DAD probe from :: carries no link-layer address).
	conflict   netip.Addr
	foreignMAC net.HardwareAddr
}

// decideNDP decides what to do with one ICMPv6 message (without the IPv6
// header, as a raw ICMPv6 socket delivers it) received from src with the
// given hop limit (-1 if unknown). ourAddr is the link-local address our
// socket sends from: messages from it are our own, looped back by multicast.
//
// Rules (RFC 4861 section 7, RFC 4862 section 5.4):
//   - hop limit must be 255 and the ICMP code 0, else the message may come
//     from off-link and is dropped;
//   - a Neighbor Advertisement for an IP we probe or announce, not carrying
//     our MAC, is a conflict;
//   - a DAD Neighbor Solicitation (from ::) for an IP we are still probing is
//     a conflict (someone else is about to configure it); for an IP we
//     announce it is answered with an advertisement to all-nodes, which is
//     what makes the other host's DAD fail;
//   - any other solicitation for an IP we announce gets a solicited
//     advertisement back to its source, with Override set so that a stale
//     entry pointing to the previous owner is replaced;
//   - solicitations carrying our own MAC are the node kernel trying to
//     resolve a VIP itself and are ignored.
func decideNDP(msg []byte, src netip.Addr, hopLimit int, ourAddr netip.Addr, ourMAC net.HardwareAddr, phaseOf phaseFunc) ndpDecision {
	var d ndpDecision
	if len(msg) < 4 || msg[1] != 0 || (hopLimit >= 0 && hopLimit != ndp.HopLimit) {
		return d
	}
	src = src.WithZone("")
	if !src.Is6() || src.Is4In6() || src.IsMulticast() || src == ourAddr.WithZone("") {
		return d
	}
	m, err := ndp.ParseMessage(msg)
	if err != nil {
		return d
	}
	switch m := m.(type) {
	case *ndp.NeighborAdvertisement:
		if phaseOf(m.TargetAddress) == phaseNone {
			return d
		}
		mac := linkLayerAddr(m.Options, ndp.Target)
		if bytes.Equal(mac, ourMAC) {
			return d
		}
		d.conflict = m.TargetAddress
		d.foreignMAC = mac
	case *ndp.NeighborSolicitation:
		p := phaseOf(m.TargetAddress)
		if p == phaseNone {
			return d
		}
		sll := linkLayerAddr(m.Options, ndp.Source)
		if src.IsUnspecified() {
			if sll != nil {
				return d // invalid per RFC 4861 7.1.1
			}
			if p == phaseProbing {
				d.conflict = m.TargetAddress
				return d
			}
		} else if bytes.Equal(sll, ourMAC) {
			return d
		}
		if p != phaseAnnouncing {
			return d
		}
		d.request = true
		d.reply = &ndp.NeighborAdvertisement{
			Solicited:     !src.IsUnspecified(),
			Override:      true,
			TargetAddress: m.TargetAddress,
			Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ourMAC}},
		}
		d.dst = src
		if src.IsUnspecified() {
			d.dst = allNodes
		}
	}
	return d
}

// linkLayerAddr returns the first link-layer address option of the given
// direction, or nil.
func linkLayerAddr(opts []ndp.Option, dir ndp.Direction) net.HardwareAddr {
	for _, o := range opts {
		if lla, ok := o.(*ndp.LinkLayerAddress); ok && lla.Direction == dir {
			return lla.Addr
		}
	}
	return nil
}

// ndpProbe is the Neighbor Solicitation we send before announcing ip. RFC
// 4862 DAD sends it from ::, but a raw ICMPv6 socket cannot: Linux replaces
// an unspecified source with the interface's address. So it goes out from
// our link-local address, with our MAC as source link-layer option (required
// for a multicast solicitation with a source address); a host holding the IP
// answers it with a Neighbor Advertisement just the same, which is all the
// probe needs.
func ndpProbe(ourMAC net.HardwareAddr, ip netip.Addr) *ndp.NeighborSolicitation {
	return &ndp.NeighborSolicitation{
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ourMAC}},
	}
}

// ndpAnnouncement is an unsolicited Neighbor Advertisement for ip (RFC 4861
// section 7.2.6) with Override set, so that neighbours replace the previous
// owner's MAC in their caches.
func ndpAnnouncement(ourMAC net.HardwareAddr, ip netip.Addr) *ndp.NeighborAdvertisement {
	return &ndp.NeighborAdvertisement{
		Override:      true,
		TargetAddress: ip,
		Options:       []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: ourMAC}},
	}
}

// ndpFilter lets only Neighbor Solicitations and Advertisements through to
// the raw socket, so that the read loop does not wake up for every ping or
// router advertisement on the link.
func ndpFilter() *ipv6.ICMPFilter {
	var f ipv6.ICMPFilter
	f.SetAll(true)
	f.Accept(ipv6.ICMPTypeNeighborSolicitation)
	f.Accept(ipv6.ICMPTypeNeighborAdvertisement)
	return &f
}
