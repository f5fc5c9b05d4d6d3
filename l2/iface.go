package l2

import (
	"errors"
	"fmt"
	"net"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// ErrUnusableInterface is wrapped by NewAnnouncer's error when the interface
// exists but cannot carry ARP/NDP announcements (down, loopback, NOARP, no
// Ethernet address, bond slave). Callers iterating over a node's interfaces
// can skip those with errors.Is instead of treating them as failures.
var ErrUnusableInterface = errors.New("unusable for layer-2 announcements")

// usableInterface looks the interface up and rejects the kinds on which
// announcing cannot work, naming the reason. It must run in the network
// namespace of the interface (it uses netlink).
func usableInterface(name string) (*net.Interface, error) {
	ifi, err := net.InterfaceByName(name)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", name, err)
	}
	unusable := func(reason string) error {
		return fmt.Errorf("interface %q: %w: %s", name, ErrUnusableInterface, reason)
	}
	switch {
	case ifi.Flags&net.FlagLoopback != 0:
		return nil, unusable("loopback interface")
	case ifi.Flags&net.FlagUp == 0:
		return nil, unusable("interface is down")
	case len(ifi.HardwareAddr) != 6:
		// tun, wireguard, ipip...: no MAC, so nothing to announce.
		return nil, unusable("no Ethernet hardware address")
	}
	link, err := netlink.LinkByIndex(ifi.Index)
	if err != nil {
		return nil, fmt.Errorf("interface %q: netlink: %w", name, err)
	}
	attrs := link.Attrs()
	if attrs.RawFlags&unix.IFF_NOARP != 0 {
		return nil, unusable("ARP disabled (NOARP)")
	}
	if attrs.MasterIndex != 0 {
		// A bond slave receives frames that belong to the bond, and frames
		// sent on it bypass the bond's transmit policy and MAC: announce on
		// the bond. Bridge ports are allowed: a packet socket on a port
		// sees the port's traffic, though announcing on the bridge itself
		// is usually what one wants.
		if master, err := netlink.LinkByIndex(attrs.MasterIndex); err == nil && master.Type() == "bond" {
			return nil, unusable(fmt.Sprintf("slave of bond %q; announce on the bond instead", master.Attrs().Name))
		}
	}
	return ifi, nil
}
