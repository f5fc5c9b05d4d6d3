package l2

import (
	"bytes"
	"net"
	"net/netip"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
)

// phase is how far an IP has got in its lifecycle on this interface. Only
// the read loops' view of it matters here: it decides whether a request is
// answered and whether a foreign claim is a conflict.
type phase uint8

const (
	// phaseNone: not ours (never was, released, or in conflict backoff).
	phaseNone phase = iota
	// phaseProbing: we want the IP and are checking that nobody holds it.
	// Requests are not answered yet; foreign claims are conflicts.
	phaseProbing
	// phaseAnnouncing: ours. Requests are answered; foreign claims are
	// conflicts.
	phaseAnnouncing
)

func (p phase) String() string {
	switch p {
	case phaseProbing:
		return "probing"
	case phaseAnnouncing:
		return "announcing"
	default:
		return "none"
	}
}

// phaseFunc reports the phase of an IP. The read loops pass a lookup in the
// announcer's table (under its read lock); tests pass a map.
type phaseFunc func(netip.Addr) phase

const (
	protoARP = "arp"
	protoNDP = "ndp"
)

// ethernetZero is the all-zero MAC, the "unknown" target hardware address in
// ARP probes and announcements (RFC 5227 section 2.1.1 and 2.3).
var ethernetZero = net.HardwareAddr{0, 0, 0, 0, 0, 0}

// arpDecision is the verdict on one received Ethernet frame.
type arpDecision struct {
	// reply is a complete Ethernet frame to send to replyTo, or nil.
	reply   []byte
	replyTo net.HardwareAddr
	heard
}

// decideARP parses one frame as read from the ARP packet socket and decides
// what to do with it, given our MAC and the phase of each IP. It never
// panics and never answers anything it cannot fully validate: garbage on the
// wire must neither crash the read loop nor make us emit garbage.
//
// Rules (RFC 826, RFC 5227):
//   - frames from our own MAC are ignored: a packet socket also sees the
//     node kernel's outgoing ARP, and those are not foreign claims;
//   - any ARP packet whose sender IP is one we probe or announce, from
//     another MAC, is a conflict (a reply to our probe, a gratuitous ARP, or
//     a host simply using the IP);
//   - an ARP probe (sender IP 0.0.0.0) for an IP we are still probing is a
//     conflict too (simultaneous probe, RFC 5227 section 2.1.1); for an IP
//     we already announce it is answered like any request, which defends it;
//   - a request for an IP we announce is answered with a unicast reply.
func decideARP(frame []byte, ourMAC net.HardwareAddr, phaseOf phaseFunc) arpDecision {
	var d arpDecision
	var f ethernet.Frame
	if err := f.UnmarshalBinary(frame); err != nil || f.EtherType != ethernet.EtherTypeARP {
		return d
	}
	if bytes.Equal(f.Source, ourMAC) {
		return d
	}
	var p arp.Packet
	if err := p.UnmarshalBinary(f.Payload); err != nil {
		return d
	}
	// Only Ethernet/IPv4 ARP is ours to handle.
	if p.HardwareType != 1 || p.ProtocolType != uint16(ethernet.EtherTypeIPv4) ||
		p.HardwareAddrLength != 6 || p.IPLength != 4 ||
		(p.Operation != arp.OperationRequest && p.Operation != arp.OperationReply) {
		return d
	}
	if bytes.Equal(p.SenderHardwareAddr, ourMAC) || !isUnicastMAC(p.SenderHardwareAddr) {
		return d
	}

	if phaseOf(p.SenderIP) != phaseNone {
		d.conflict = p.SenderIP
		d.foreignMAC = p.SenderHardwareAddr
		return d
	}
	if p.Operation != arp.OperationRequest {
		return d
	}
	switch phaseOf(p.TargetIP) {
	case phaseProbing:
		if p.SenderIP == netip.IPv4Unspecified() {
			d.conflict = p.TargetIP
			d.foreignMAC = p.SenderHardwareAddr
		}
	case phaseAnnouncing:
		d.request = true
		// Reply to the requester at both layers, as the kernel does; for a
		// probe the target IP is 0.0.0.0, which is what RFC 5227 expects.
		reply, err := arpFrame(arp.OperationReply, ourMAC, p.TargetIP,
			p.SenderHardwareAddr, p.SenderIP, p.SenderHardwareAddr)
		if err == nil {
			d.reply = reply
			d.replyTo = p.SenderHardwareAddr
		}
	}
	return d
}

// arpFrame builds an Ethernet frame carrying one ARP packet.
func arpFrame(op arp.Operation, srcMAC net.HardwareAddr, srcIP netip.Addr,
	dstMAC net.HardwareAddr, dstIP netip.Addr, ethDst net.HardwareAddr) ([]byte, error) {
	p, err := arp.NewPacket(op, srcMAC, srcIP, dstMAC, dstIP)
	if err != nil {
		return nil, err
	}
	pb, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	f := ethernet.Frame{
		Destination: ethDst,
		Source:      srcMAC,
		EtherType:   ethernet.EtherTypeARP,
		Payload:     pb,
	}
	return f.MarshalBinary()
}

// arpProbe is an RFC 5227 ARP probe for ip: a broadcast request with sender
// IP 0.0.0.0, so that it does not pollute anyone's cache while we are not yet
// sure the IP is free.
func arpProbe(ourMAC net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	return arpFrame(arp.OperationRequest, ourMAC, netip.IPv4Unspecified(), ethernetZero, ip, ethernet.Broadcast)
}

// arpAnnouncement is a gratuitous ARP for ip (RFC 5227 "ARP announcement"):
// a broadcast request with sender IP = target IP = ip. We send requests
// rather than replies because that is what RFC 5227 specifies and what the
// Linux kernel, keepalived and arping -U send; every common stack updates an
// existing cache entry from it.
func arpAnnouncement(ourMAC net.HardwareAddr, ip netip.Addr) ([]byte, error) {
	return arpFrame(arp.OperationRequest, ourMAC, ip, ethernetZero, ip, ethernet.Broadcast)
}

// isUnicastMAC rejects the zero, broadcast and multicast MACs, which no
// host can legitimately use as its own and which we must never reply to.
func isUnicastMAC(mac net.HardwareAddr) bool {
	return len(mac) == 6 && mac[0]&1 == 0 && !bytes.Equal(mac, ethernetZero)
}
