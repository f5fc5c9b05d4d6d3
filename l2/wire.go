package l2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
)

// leaveGroupIfV6 leaves ip's solicited-node group if it is IPv6, as the
// goroutine of an entry does when it ends.
func (a *Announcer) leaveGroupIfV6(ip netip.Addr) {
	if ip.Is6() && a.ndp != nil {
		a.leaveGroup(ip)
	}
}

func (a *Announcer) sendProbe(ip netip.Addr) {
	var err error
	if ip.Is4() {
		var f []byte
		if f, err = arpProbe(a.mac, ip); err == nil {
			_, err = a.arp.WriteTo(f, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		}
	} else {
		var snm netip.Addr
		if snm, err = ndp.SolicitedNodeMulticast(ip); err == nil {
			err = a.writeNDP(ndpProbe(a.mac, ip), nil, snm)
		}
	}
	if err != nil {
		a.log.Error(err, "send probe", "ip", ip.String())
	}
}

func (a *Announcer) sendGratuitous(ip netip.Addr) {
	var err error
	proto := protoARP
	if ip.Is4() {
		var f []byte
		if f, err = arpAnnouncement(a.mac, ip); err == nil {
			_, err = a.arp.WriteTo(f, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		}
	} else {
		proto = protoNDP
		err = a.writeNDP(ndpAnnouncement(a.mac, ip), nil, allNodes)
	}
	if err != nil {
		a.log.Error(err, "send gratuitous announcement", "ip", ip.String())
		return
	}
	a.opts.Metrics.gratuitous(proto)
}

// joinGroup joins the solicited-node group of ip. Several IPs can share a
// group (same low 24 bits), and the kernel refuses a second join and drops
// the membership on the first leave, hence the reference count.
func (a *Announcer) joinGroup(ip netip.Addr) error {
	g, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		return err
	}
	a.groupMu.Lock()
	defer a.groupMu.Unlock()
	if a.groups[g] == 0 {
		if err := a.ndp.JoinGroup(g); err != nil {
			return fmt.Errorf("interface %q: join group %s for %s: %w", a.ifi.Name, g, ip, err)
		}
	}
	a.groups[g]++
	return nil
}

func (a *Announcer) leaveGroup(ip netip.Addr) {
	g, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		return
	}
	a.groupMu.Lock()
	defer a.groupMu.Unlock()
	if a.groups[g]--; a.groups[g] > 0 {
		return
	}
	delete(a.groups, g)
	if err := a.ndp.LeaveGroup(g); err != nil && !a.isClosed() {
		a.log.Error(err, "leave solicited-node group", "group", g.String(), "ip", ip.String())
	}
}

// serveARP is the ARP read loop.
func (a *Announcer) serveARP(ctx context.Context) error {
	// ARP frames are 42 bytes (60 with padding); a longer frame is
	// truncated, which is harmless.
	buf := make([]byte, 256)
	for {
		n, _, err := a.arp.ReadFrom(buf)
		if err != nil {
			if stop, err := a.readError(ctx, protoARP, err); stop {
				return err
			}
			continue
		}
		a.handleARP(buf[:n])
	}
}

func (a *Announcer) handleARP(frame []byte) {
	a.handle(protoARP, func() (heard, func() (string, error)) {
		d := decideARP(frame, a.mac, a.phaseLocked)
		if d.reply == nil {
			return d.heard, nil
		}
		return d.heard, func() (string, error) {
			_, err := a.arp.WriteTo(d.reply, &packet.Addr{HardwareAddr: d.replyTo})
			return d.replyTo.String(), err
		}
	})
}

// handle is what every protocol does with a message it received: decide
// under the read lock (noting a foreign claim on an address of ours), then
// send the reply, if any, outside it.
func (a *Announcer) handle(proto string, decide func() (heard, func() (to string, err error))) {
	a.mu.RLock()
	h, reply := decide()
	if h.conflict.IsValid() {
		a.postClaimLocked(h.conflict, claim{mac: slices.Clone(h.foreignMAC), proto: proto})
	}
	a.mu.RUnlock()
	if h.request {
		a.opts.Metrics.request(proto)
	}
	if reply == nil {
		return
	}
	to, err := reply()
	if err != nil {
		a.log.Error(err, "send "+proto+" reply", "to", to)
		return
	}
	a.opts.Metrics.response(proto)
	a.log.V(1).Info("answered "+proto+" request", "to", to)
}

// serveNDP is the NDP read loop.
func (a *Announcer) serveNDP(ctx context.Context) error {
	buf := make([]byte, max(a.ifi.MTU, 1500))
	for {
		n, cm, src, err := a.ndp.ReadRaw(buf)
		if err != nil {
			if stop, err := a.readError(ctx, protoNDP, err); stop {
				return err
			}
			continue
		}
		hop := -1
		if a.hopLimitKnown && cm != nil {
			hop = cm.HopLimit
		}
		a.handleNDP(buf[:n], src, hop)
	}
}

func (a *Announcer) handleNDP(msg []byte, src netip.Addr, hopLimit int) {
	a.handle(protoNDP, func() (heard, func() (string, error)) {
		d := decideNDP(msg, src, hopLimit, a.ndpAddr, a.mac, a.phaseLocked)
		if d.reply == nil {
			return d.heard, nil
		}
		return d.heard, func() (string, error) {
			err := a.writeNDP(d.reply, nil, d.dst)
			if err != nil && d.dst != allNodes {
				// Typically no route to the solicitor's source (a global
				// address in a prefix this node has no address in). An
				// unsolicited advertisement to all-nodes completes its
				// pending resolution too (RFC 4861 section 7.2.5).
				a.log.V(1).Info("unicast neighbor advertisement failed, multicasting it", "to", d.dst.String(), "error", err.Error())
				na := *d.reply
				na.Solicited = false
				err = a.writeNDP(&na, nil, allNodes)
			}
			return d.dst.String(), err
		}
	})
}

// readError classifies a read error: stop reports whether the loop must end,
// err is what Run returns then (nil for a normal shutdown).
func (a *Announcer) readError(ctx context.Context, proto string, err error) (stop bool, _ error) {
	switch {
	case ctx.Err() != nil, a.isClosed(), errors.Is(err, net.ErrClosed):
		return true, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, nil
	case errors.Is(err, unix.ENETDOWN), errors.Is(err, unix.ENOBUFS),
		errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
		// The interface went down, or the kernel was short of memory:
		// keep serving, things work again when it comes back.
		a.log.Info("transient read error", "protocol", proto, "error", err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(transientErrorPause):
		}
		return false, nil
	default:
		return true, fmt.Errorf("interface %q: read %s: %w", a.ifi.Name, proto, err)
	}
}

// writeNDP sends an NDP message out of the interface. The ndp library
// names the interface as the destination's zone, which Go resolves by name
// in the calling thread's network namespace; where the name means nothing
// there (a test that opened the announcer inside a namespace of its own,
// with a link name found nowhere else), the zone comes out empty and the
// control message's interface index, set by the library, decides. The
// speaker itself runs in the node's namespace, where the name resolves to
// that same index.
func (a *Announcer) writeNDP(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error {
	return a.ndp.WriteTo(m, cm, dst)
}
