package bgp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/ndp"
	"github.com/osrg/gobgp/v4/pkg/config/oc"
	"github.com/vishvananda/netlink"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// PeerError is why a session could not be configured on this node; Reason
// is one of v1beta1's BGPNodeStatus reasons, for the node's condition.
type PeerError struct {
	Peer, Reason string
	Err          error
}

func (e *PeerError) Error() string { return fmt.Sprintf("peer %q: %v", e.Peer, e.Err) }
func (e *PeerError) Unwrap() error { return e.Err }

// solicitWait is how long a first look for an unnumbered router waits
// for the answer to its router solicitation: the router's advertisement
// (which puts it into the kernel's neighbour table) comes within a round
// trip.
const solicitWait = 500 * time.Millisecond

// prepare checks what the session needs of the node before GoBGP gets it
// (GoBGP would fail with a bare socket or netlink error, or bind to
// nothing) and, for an unnumbered session, finds the router's link-local
// address. It returns p with Address set.
func prepare(ctx context.Context, p PeerSpec) (PeerSpec, error) {
	vrf := 0
	if p.VRF != "" {
		l, err := netlink.LinkByName(p.VRF)
		if err != nil {
			return p, &PeerError{p.Name, v1beta1.ReasonVRFNotFound, fmt.Errorf("VRF %q does not exist on this node: %w", p.VRF, err)}
		}
		if l.Type() != "vrf" {
			return p, &PeerError{p.Name, v1beta1.ReasonVRFNotFound, fmt.Errorf("%q is a %s device on this node, not a VRF", p.VRF, l.Type())}
		}
		vrf = l.Attrs().Index
		if p.BFD != nil && !l3mdevAccept() {
			return p, &PeerError{p.Name, v1beta1.ReasonBFDNeedsL3mdevAccept, fmt.Errorf("BFD in VRF %q needs sysctl net.ipv4.udp_l3mdev_accept=1 on this node: the speaker's BFD listens in the default VRF, and without it never hears the router's BFD packets (remove bfdProfile, or set the sysctl)", p.VRF)}
		}
	}
	if p.Interface == "" {
		return p, nil
	}
	l, err := netlink.LinkByName(p.Interface)
	if err != nil {
		return p, &PeerError{p.Name, v1beta1.ReasonInterfaceNotFound, fmt.Errorf("interface %q does not exist on this node: %w", p.Interface, err)}
	}
	if vrf != 0 && l.Attrs().MasterIndex != vrf {
		return p, &PeerError{p.Name, v1beta1.ReasonInterfaceNotFound, fmt.Errorf("interface %q is not in VRF %q", p.Interface, p.VRF)}
	}
	a, err := linkLocalNeighbor(p.Interface)
	if err != nil {
		// No router seen on the link yet: ask for one, and look again.
		solicit(p.Interface)
		t := time.NewTimer(solicitWait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
		a, err = linkLocalNeighbor(p.Interface)
	}
	if err != nil {
		return p, &PeerError{p.Name, v1beta1.ReasonNoLinkLocalNeighbor, fmt.Errorf("interface %q: %w", p.Interface, err)}
	}
	p.Address = a
	return p, nil
}

// l3mdevAccept tells whether sockets of the default VRF receive what
// arrives in other VRFs (net.ipv4.udp_l3mdev_accept, per network
// namespace; it covers IPv6 too). GoBGP binds its BFD listener to one
// device for the whole server, so a BFD session in a VRF depends on it.
func l3mdevAccept() bool {
	v, err := os.ReadFile("/proc/sys/net/ipv4/udp_l3mdev_accept")
	return err == nil && strings.TrimSpace(string(v)) == "1"
}

// linkLocalNeighbor is the one IPv6 link-local neighbour of iface, the
// way GoBGP picks it for an interface neighbour (so both agree on who the
// router is), with its zone.
func linkLocalNeighbor(iface string) (netip.Addr, error) {
	s, err := oc.GetIPv6LinkLocalNeighborAddress(iface)
	if err != nil {
		return netip.Addr{}, err
	}
	return netip.ParseAddr(s)
}

// solicit sends a router solicitation on iface. A router doing BGP
// unnumbered answers with a router advertisement, which puts it into our
// neighbour table, where linkLocalNeighbor finds it (it also sends them
// unasked, but only every few seconds). Errors are not worth reporting:
// the caller's second look tells.
func solicit(iface string) {
	ifi, err := net.InterfaceByName(iface)
	if err != nil {
		return
	}
	c, _, err := ndp.Listen(ifi, ndp.LinkLocal)
	if err != nil {
		return
	}
	defer c.Close()
	rs := &ndp.RouterSolicitation{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
	_ = c.WriteTo(rs, nil, netip.IPv6LinkLocalAllRouters())
}

// helloInterval is how often a speaker advertises itself on an
// unnumbered link: routers doing BGP unnumbered (FRR, and the switch
// systems built on it) learn the node's link-local address from its
// router advertisements only, and will not open or accept the session
// before one came ("Waiting for Peer IPv6 LLA"). FRR's own interval for
// these links is 10 s; a router that restarts learns the node within
// helloInterval.
const helloInterval = 3 * time.Second

// hello sends router advertisements on iface until ctx ends: router
// lifetime 0, so that nothing on the link takes the node for a default
// router, and the source link-layer address, so that the router needs no
// neighbour solicitation to answer.
func hello(ctx context.Context, log logr.Logger, iface string) {
	var c *ndp.Conn
	var ifi *net.Interface
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	t := time.NewTimer(0)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		t.Reset(helloInterval)
		if c == nil {
			var err error
			if ifi, err = net.InterfaceByName(iface); err == nil {
				c, _, err = ndp.Listen(ifi, ndp.LinkLocal)
			}
			if err != nil {
				if !failing {
					log.Error(err, "Cannot advertise on the unnumbered link yet; retrying", "interface", iface)
				}
				failing = true
				continue
			}
		}
		ra := &ndp.RouterAdvertisement{Options: []ndp.Option{&ndp.LinkLayerAddress{Direction: ndp.Source, Addr: ifi.HardwareAddr}}}
		if err := c.WriteTo(ra, nil, netip.IPv6LinkLocalAllNodes()); err != nil {
			if !failing {
				log.Error(err, "Router advertisement on the unnumbered link failed; retrying", "interface", iface)
			}
			failing = true
			c.Close()
			c = nil // the link may have been replaced: open it again
			continue
		}
		failing = false
	}
}

// peerError is err as a PeerError of peer (PeerConfigError unless it is
// one already).
func peerError(peer string, err error) *PeerError {
	var pe *PeerError
	if errors.As(err, &pe) {
		return pe
	}
	return &PeerError{peer, v1beta1.ReasonPeerConfigError, err}
}
