package bgp

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"

	"github.com/ironlb/ironlb/config"
)

// LargeCommunity is an RFC 8092 community: global administrator and two
// local data parts.
type LargeCommunity [3]uint32

func (c LargeCommunity) String() string {
	return fmt.Sprintf("%d:%d:%d", c[0], c[1], c[2])
}

// Attrs are the path attributes ironlb chooses for a prefix. Everything else
// (origin IGP, AS path, next hop = the session's local address) is fixed.
type Attrs struct {
	// LocalPref is sent to iBGP peers only (eBGP strips it, RFC 4271
	// 5.1.5); nil leaves GoBGP's default of 100.
	LocalPref *uint32 `json:"localPref,omitempty"`
	// Communities are RFC 1997 communities (high 16 bits : low 16 bits),
	// sorted and unique.
	Communities []uint32 `json:"communities,omitempty"`
	// LargeCommunities are sorted and unique.
	LargeCommunities []LargeCommunity `json:"largeCommunities,omitempty"`
}

// Equal tells whether a and b carry the same attributes.
func (a Attrs) Equal(b Attrs) bool {
	if (a.LocalPref == nil) != (b.LocalPref == nil) || a.LocalPref != nil && *a.LocalPref != *b.LocalPref {
		return false
	}
	return slices.Equal(a.Communities, b.Communities) && slices.Equal(a.LargeCommunities, b.LargeCommunities)
}

// Route is one prefix as it goes, with the same attributes, to a set of
// peers. The same prefix appears in several Routes when peers must receive
// it with different attributes; the peer sets of those Routes are disjoint.
// Configured peers named by no Route of a prefix do not receive it.
type Route struct {
	Prefix netip.Prefix `json:"prefix"`
	Attrs
	// Peers names the receiving peers (BGPPeer names), sorted and unique.
	Peers []string `json:"peers"`
}

func (r Route) String() string {
	var b strings.Builder
	b.WriteString(r.Prefix.String())
	if r.LocalPref != nil {
		fmt.Fprintf(&b, " localpref %d", *r.LocalPref)
	}
	for _, c := range r.Communities {
		fmt.Fprintf(&b, " %d:%d", c>>16, c&0xffff)
	}
	for _, c := range r.LargeCommunities {
		b.WriteString(" large:" + c.String())
	}
	b.WriteString(" to " + strings.Join(r.Peers, ","))
	return b.String()
}

// Item is one address this node announces together with the
// advertisements that select it (the caller decides both: which Services
// the node announces, and which BGPAdvertisements match each Service).
type Item struct {
	IP             netip.Addr
	Advertisements []*config.BGPAdvertisement
}

// Build turns what the node announces into Routes, one per (prefix,
// attribute set), given the peers this node has sessions with. It is pure and deterministic: the same input gives the same output
// in the same order (by prefix, then by first peer name).
//
// Each advertisement contributes, for every peer it allows (its Peers, or
// every peer when nil), the address masked to its aggregation length
// (AggregationLength for IPv4, AggregationLengthV6 for IPv6; config fills
// the defaults 32 and 128, a zero here really means a default route).
// Several addresses masked to the same prefix become one route.
// When several advertisements give the same prefix to the same peer, their
// communities are unioned and the highest local preference wins, so the
// result does not depend on the order of advertisements. Local preference
// is kept for iBGP peers only: eBGP strips it (RFC 4271 5.1.5), and keeping
// it would split eBGP peers into needless attribute groups.
// An aggregation length that does not fit an address leaves that route
// out and is reported in the error; the other routes are returned anyway,
// so one bad value never withdraws the rest.
func Build(items []Item, peers []PeerSpec) ([]Route, error) {
	type key struct {
		prefix netip.Prefix
		peer   string
	}
	type acc struct {
		lp    *uint32
		comms map[uint32]bool
		large map[LargeCommunity]bool
	}
	ibgp := map[string]bool{}
	for _, p := range peers {
		ibgp[p.Name] = p.IBGP()
	}
	all := slices.Sorted(maps.Keys(ibgp))
	var errs []error
	byKey := map[key]*acc{}
	for _, it := range items {
		if !it.IP.IsValid() {
			continue
		}
		ip := it.IP.Unmap()
		for _, adv := range it.Advertisements {
			if adv == nil {
				continue
			}
			bits := adv.AggregationLength
			if ip.Is6() {
				bits = adv.AggregationLengthV6
			}
			prefix, err := ip.Prefix(bits)
			if err != nil {
				errs = append(errs, fmt.Errorf("advertisement %q: aggregation length %d for %s: %w", adv.Name, bits, ip, err))
				continue
			}
			for _, peer := range all {
				if adv.Peers != nil && !adv.Peers[peer] {
					continue
				}
				k := key{prefix, peer}
				a := byKey[k]
				if a == nil {
					a = &acc{comms: map[uint32]bool{}, large: map[LargeCommunity]bool{}}
					byKey[k] = a
				}
				if ibgp[peer] && adv.LocalPref != nil && (a.lp == nil || *adv.LocalPref > *a.lp) {
					v := *adv.LocalPref
					a.lp = &v
				}
				for _, c := range adv.Communities {
					if c.Large {
						a.large[LargeCommunity(c.Value)] = true
					} else {
						a.comms[c.Value[0]] = true
					}
				}
			}
		}
	}

	// Group the peers of each prefix by attribute set.
	var out []Route
	byPrefix := map[netip.Prefix][]string{}
	for k := range byKey {
		byPrefix[k.prefix] = append(byPrefix[k.prefix], k.peer)
	}
	prefixes := slices.SortedFunc(maps.Keys(byPrefix), ComparePrefix)
	for _, prefix := range prefixes {
		ps := byPrefix[prefix]
		slices.Sort(ps)
		var routes []Route
		for _, peer := range ps {
			a := byKey[key{prefix, peer}]
			attrs := Attrs{
				LocalPref:        a.lp,
				Communities:      slices.Sorted(maps.Keys(a.comms)),
				LargeCommunities: slices.SortedFunc(maps.Keys(a.large), compareLarge),
			}
			if len(attrs.Communities) == 0 {
				attrs.Communities = nil
			}
			if len(attrs.LargeCommunities) == 0 {
				attrs.LargeCommunities = nil
			}
			i := slices.IndexFunc(routes, func(r Route) bool { return r.Attrs.Equal(attrs) })
			if i < 0 {
				routes = append(routes, Route{Prefix: prefix, Attrs: attrs})
				i = len(routes) - 1
			}
			routes[i].Peers = append(routes[i].Peers, peer)
		}
		out = append(out, routes...)
	}
	return out, errors.Join(errs...)
}

// ComparePrefix orders prefixes: IPv4 before IPv6, then by address, then
// shorter first.
func ComparePrefix(a, b netip.Prefix) int {
	if c := a.Addr().Compare(b.Addr()); c != 0 {
		return c
	}
	return cmp.Compare(a.Bits(), b.Bits())
}

func compareLarge(a, b LargeCommunity) int {
	for i := range a {
		if c := cmp.Compare(a[i], b[i]); c != 0 {
			return c
		}
	}
	return 0
}
