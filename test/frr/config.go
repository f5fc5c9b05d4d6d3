package frr

import (
	"fmt"
	"net/netip"
	"strings"
)

// NeighborConf is one "neighbor" of the router's BGP configuration.
type NeighborConf struct {
	Addr     netip.Addr
	ASN      uint32
	Password string
	BFD      bool
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
		fmt.Fprintf(&b, " neighbor %s remote-as %d\n", n.Addr, n.ASN)
		fmt.Fprintf(&b, " neighbor %s timers connect 1\n", n.Addr)
		if n.Password != "" {
			fmt.Fprintf(&b, " neighbor %s password %s\n", n.Addr, n.Password)
		}
		if n.BFD {
			fmt.Fprintf(&b, " neighbor %s bfd\n", n.Addr)
		}
		if n.CheckControlPlane {
			fmt.Fprintf(&b, " neighbor %s bfd check-control-plane-failure\n", n.Addr)
		}
	}
	for _, af := range []string{"ipv4", "ipv6"} {
		fmt.Fprintf(&b, " address-family %s unicast\n  maximum-paths 8\n  maximum-paths ibgp 8\n", af)
		for _, n := range ns {
			fmt.Fprintf(&b, "  neighbor %s activate\n", n.Addr)
		}
		b.WriteString(" exit-address-family\n")
	}
	b.WriteString("exit\n")
	return b.String()
}
