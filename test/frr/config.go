package frr

import (
	"fmt"
	"net/netip"
	"strings"
)

// NeighborConf is one "neighbor" of the router's BGP configuration.
type NeighborConf struct {
	Addr netip.Addr
	// Interface, instead of Addr, makes the neighbor unnumbered ("neighbor
	// IFACE interface"): bgpd peers with whoever is on that link over IPv6
	// link-local addresses, with the extended next hop capability, and
	// sends router advertisements there.
	Interface string
	ASN       uint32
	Password  string
	BFD       bool
	// CheckControlPlane is "bfd check-control-plane-failure": a BFD
	// session that goes down while the neighbor is restarting gracefully
	// and says its BFD shares fate with its control plane (C bit clear)
	// does not end the graceful restart.
	CheckControlPlane bool
}

// BGPConfig writes the bgpd configuration of a router that accepts routes
// from its neighbors (no policy), spreads traffic over up to 8 equal paths
// (eBGP across different AS paths too), helps with graceful restart and
// retries connections every second.
func BGPConfig(asn uint32, routerID netip.Addr, ns []NeighborConf) string {
	var b strings.Builder
	fmt.Fprintf(&b, "router bgp %d\n bgp router-id %s\n no bgp ebgp-requires-policy\n no bgp default ipv4-unicast\n", asn, routerID)
	b.WriteString(" bgp bestpath as-path multipath-relax\n bgp graceful-restart\n")
	for _, n := range ns {
		if n.Interface != "" {
			fmt.Fprintf(&b, " neighbor %s interface remote-as %d\n", n.name(), n.ASN)
		} else {
			fmt.Fprintf(&b, " neighbor %s remote-as %d\n", n.name(), n.ASN)
		}
		fmt.Fprintf(&b, " neighbor %s timers connect 1\n", n.name())
		if n.Password != "" {
			fmt.Fprintf(&b, " neighbor %s password %s\n", n.name(), n.Password)
		}
		if n.BFD {
			fmt.Fprintf(&b, " neighbor %s bfd\n", n.name())
		}
		if n.CheckControlPlane {
			fmt.Fprintf(&b, " neighbor %s bfd check-control-plane-failure\n", n.name())
		}
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n  maximum-paths 8\n  maximum-paths ibgp 8\n", af)
		for _, n := range ns {
			fmt.Fprintf(&b, "  neighbor %s activate\n", n.name())
		}
		b.WriteString(" exit-address-family\n")
	}
	b.WriteString("exit\n")
	return b.String()
}

// name is how bgpd's configuration names the neighbor.
func (n NeighborConf) name() string {
	if n.Interface != "" {
		return n.Interface
	}
	return n.Addr.String()
}
