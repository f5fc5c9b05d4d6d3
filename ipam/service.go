package ipam

import (
	"fmt"
	"net/netip"
	"slices"
)

// Port is one (protocol, port) pair a Service exposes. Services sharing an
// IP must not expose the same pair, or the data plane could not tell which
// one a packet is for.
type Port struct {
	Protocol string // "TCP", "UDP" or "SCTP"; compared exactly
	Port     int32
}

func (p Port) String() string { return fmt.Sprintf("%s/%d", p.Protocol, p.Port) }

// Service is what the allocator needs to know of a Kubernetes Service.
type Service struct {
	Key        string // "namespace/name", unique
	SharingKey string // "" = never shares
	Ports      []Port
	Local      bool   // externalTrafficPolicy: Local
	Selector   string // canonical pod selector (only compared for equality)
}

// Holding is one IP held by a service.
type Holding struct {
	IP netip.Addr
	// Pool is the pool the IP belongs to, or belonged to when it was
	// allocated if it is now an orphan ("" for an orphan restored from a
	// Service status, whose pool is unknown). A named-pool request keeps
	// an orphan whose Pool matches: the user's choice did not change.
	Pool string
	// Orphan is true when no current pool contains the IP. The IP is kept
	// (it works, and moving it would break clients) but is not reusable by
	// anyone else once released.
	Orphan bool
}

// conflict describes why newcomer may not share an IP with holder; ok is
// true if they may.
func conflict(holder, newcomer *Service) (reason string, which bool, ok bool) {
	if holder.SharingKey == "" || holder.SharingKey != newcomer.SharingKey {
		return fmt.Sprintf("does not share with %s (sharing key %q vs %q)",
			newcomer.Key, holder.SharingKey, newcomer.SharingKey), true, false
	}
	for _, p := range newcomer.Ports {
		if slices.Contains(holder.Ports, p) {
			return fmt.Sprintf("port %s is used by both", p), false, false
		}
	}
	// With externalTrafficPolicy Local the IP is announced only from nodes
	// running the service's pods; a co-tenant selecting other pods would be
	// unreachable from those nodes.
	if (holder.Local || newcomer.Local) && holder.Selector != newcomer.Selector {
		return fmt.Sprintf("externalTrafficPolicy Local requires both services to select the same pods (selector %q vs %q)",
			holder.Selector, newcomer.Selector), false, false
	}
	return "", false, true
}
