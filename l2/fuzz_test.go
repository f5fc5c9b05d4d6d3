package l2

import (
	"bytes"
	"net/netip"
	"testing"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
)

// FuzzARPPacket feeds arbitrary frames to decideARP, the function the ARP
// read loop runs on every received frame. Beyond "never panics" it checks
// the decision's invariants: we only ever answer with a well-formed unicast
// ARP reply from our MAC for an IP we announce, and only report conflicts
// for IPs we own, against a MAC that is not ours.
//
//	go test ./l2/ -run '^$' -fuzz FuzzARPPacket -fuzztime 30s
func FuzzARPPacket(f *testing.F) {
	zero := netip.IPv4Unspecified()
	for _, seed := range [][]byte{
		mustARP(f, arp.OperationRequest, foreignMAC, requester4, ethernetZero, announced4),
		mustARP(f, arp.OperationRequest, foreignMAC, zero, ethernetZero, probing4),
		mustARP(f, arp.OperationReply, foreignMAC, probing4, ourMAC, zero),
		mustARP(f, arp.OperationRequest, foreignMAC, announced4, ethernetZero, announced4),
		mustARP(f, arp.OperationRequest, ourMAC, requester4, ethernetZero, announced4),
		{},
		make([]byte, 14),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, frame []byte) {
		in := bytes.Clone(frame)
		d := decideARP(frame, ourMAC, testPhases)
		if !bytes.Equal(in, frame) {
			t.Fatal("decideARP modified its input")
		}
		if d.conflict.IsValid() {
			if testPhases(d.conflict) == phaseNone {
				t.Fatalf("conflict for unowned %v", d.conflict)
			}
			if !isUnicastMAC(d.foreignMAC) || bytes.Equal(d.foreignMAC, ourMAC) {
				t.Fatalf("conflict with MAC %v", d.foreignMAC)
			}
			if d.reply != nil {
				t.Fatal("reply to a conflicting packet")
			}
		}
		if d.reply != nil {
			if !d.request {
				t.Fatal("reply without a request")
			}
			checkARPReply(t, d, ourMAC, netip.Addr{}, netip.Addr{})
			var p arp.Packet
			_ = p.UnmarshalBinary(d.reply[14:])
			if testPhases(p.SenderIP) != phaseAnnouncing {
				t.Fatalf("reply for %v, which we do not announce", p.SenderIP)
			}
		}
	})
}

// FuzzNDP does the same for decideNDP, the NDP read loop's function, with
// arbitrary ICMPv6 bytes, source address and hop limit.
//
//	go test ./l2/ -run '^$' -fuzz FuzzNDP -fuzztime 30s
func FuzzNDP(f *testing.F) {
	ll := foreignLL.As16()
	unspec := [16]byte{}
	for _, seed := range []struct {
		m   ndp.Message
		src [16]byte
	}{
		{&ndp.NeighborSolicitation{TargetAddress: announced6, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: foreignMAC}}}, ll},
		{&ndp.NeighborSolicitation{TargetAddress: probing6}, unspec},
		{&ndp.NeighborAdvertisement{Override: true, TargetAddress: probing6, Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Target, Addr: foreignMAC}}}, ll},
		{&ndp.NeighborAdvertisement{TargetAddress: announced6}, ll},
	} {
		f.Add(mustNDP(f, seed.m), seed.src[:], uint8(255))
	}
	f.Add([]byte{136, 0, 0, 0}, ll[:], uint8(255))
	f.Fuzz(func(t *testing.T, msg, srcBytes []byte, hop uint8) {
		src, _ := netip.AddrFromSlice(srcBytes)
		in := bytes.Clone(msg)
		d := decideNDP(msg, src, int(hop), ourLL, ourMAC, testPhases)
		if !bytes.Equal(in, msg) {
			t.Fatal("decideNDP modified its input")
		}
		if (d.reply != nil || d.conflict.IsValid()) && hop != 255 {
			t.Fatalf("acted on hop limit %d", hop)
		}
		if d.conflict.IsValid() {
			if testPhases(d.conflict) == phaseNone {
				t.Fatalf("conflict for unowned %v", d.conflict)
			}
			if bytes.Equal(d.foreignMAC, ourMAC) {
				t.Fatal("conflict with our own MAC")
			}
			if d.reply != nil {
				t.Fatal("reply to a conflicting message")
			}
		}
		if d.reply != nil {
			if !d.request {
				t.Fatal("reply without a request")
			}
			checkNA(t, d, ourMAC)
		}
	})
}
