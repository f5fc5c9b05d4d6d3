package bgp

import (
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"

	api "github.com/osrg/gobgp/v4/api"
)

// GoBGP keeps one best path per prefix in its global RIB and sends it to
// every peer, while ironlb must send a prefix only to the peers its
// advertisements name, possibly with different communities or local
// preference per peer. The global export policy bridges the two: the RIB
// holds one path per prefix, and statements matching (prefix, neighbor set)
// reject it for the peers that must not get it or add the attributes of
// each peer group. Prefixes that go to every peer alike need no statement,
// so the policy stays empty in the common case.

// A path whose family differs from its session's transport cannot take
// the session's local address as next hop: GoBGP would send an IPv6 route
// over an IPv4 session with the IPv4-mapped next hop ::ffff:a.b.c.d, which
// FRR accepts but zebra cannot install ("Nexthop id does not exist"), and
// an IPv4 route over IPv6 with an RFC 8950 IPv6 next hop, which needs the
// extended-next-hop capability on the router. So cross-family paths get
// the node's own address of the route's family as next hop, and are not
// sent at all when the node has none. Unnumbered sessions are the
// exception: IPv4 routes go over them with the IPv6 next hop, as the
// router expects there.

// stmt is one export policy statement.
type stmt struct {
	// Prefix selects the path; when invalid, Family (4 or 6) does.
	Prefix    netip.Prefix
	Family    int
	Neighbors []netip.Addr // sorted
	// Reject drops the path for Neighbors. Otherwise a valid NextHop is
	// set and evaluation goes on (no route action), or Attrs are added
	// (communities added, local preference set) and the path accepted.
	Reject  bool
	NextHop netip.Addr
	Attrs   Attrs
}

func (a stmt) equal(b stmt) bool {
	return a.Prefix == b.Prefix && a.Family == b.Family && a.Reject == b.Reject && a.NextHop == b.NextHop &&
		slices.Equal(a.Neighbors, b.Neighbors) && a.Attrs.Equal(b.Attrs)
}

// plan is what the GoBGP server must hold for a set of Routes.
type plan struct {
	rib   map[netip.Prefix]Attrs
	stmts []stmt
}

// checkRoutes rejects inputs planExport cannot honour: a peer named twice
// for one prefix, or an invalid prefix.
func checkRoutes(routes []Route) error {
	seen := map[netip.Prefix]map[string]bool{}
	for _, r := range routes {
		if !r.Prefix.IsValid() {
			return fmt.Errorf("route %v: invalid prefix", r)
		}
		if r.Prefix != r.Prefix.Masked() {
			return fmt.Errorf("route %v: prefix has host bits set", r)
		}
		m := seen[r.Prefix]
		if m == nil {
			m = map[string]bool{}
			seen[r.Prefix] = m
		}
		for _, p := range r.Peers {
			if m[p] {
				return fmt.Errorf("prefix %s: peer %q is named by two routes", r.Prefix, p)
			}
			m[p] = true
		}
	}
	return nil
}

// planExport computes the RIB paths and export statements for routes,
// given the configured peers' addresses by name and the node's own
// addresses (next hops for cross-family paths; invalid = none). Peers
// routes name but that are not configured are ignored; configured peers a
// prefix's routes do not name are rejected for it. It is pure and
// deterministic.
func planExport(routes []Route, peers map[string]netip.Addr, nodeV4, nodeV6 netip.Addr) plan {
	groups := map[netip.Prefix][]Route{}
	for _, r := range routes {
		if len(r.Peers) == 0 {
			continue
		}
		groups[r.Prefix] = append(groups[r.Prefix], r)
	}
	names := slices.Sorted(maps.Keys(peers))
	addrs := func(in func(string) bool) []netip.Addr {
		var out []netip.Addr
		for _, n := range names {
			if in(n) {
				out = append(out, peers[n].Unmap())
			}
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return out
	}
	p := plan{rib: map[netip.Prefix]Attrs{}}
	hasFamily := map[int]bool{}
	for prefix := range groups {
		hasFamily[family(prefix.Addr())] = true
	}
	// Cross-family statements come first: they set the next hop and let
	// evaluation go on to the prefix statements.
	for _, f := range []struct {
		route, session int
		nh             netip.Addr
	}{{4, 6, nodeV4}, {6, 4, nodeV6}} {
		// A link-local (zoned) session is unnumbered: the router
		// asked for RFC 8950 next hops, and GoBGP's own (the session's
		// IPv6 link-local address) is the one it can reach.
		nb := addrs(func(n string) bool { return family(peers[n]) == f.session && peers[n].Zone() == "" })
		if len(nb) == 0 || !hasFamily[f.route] {
			continue
		}
		s := stmt{Family: f.route, Neighbors: nb}
		if nh := f.nh.Unmap(); family(nh) == f.route {
			s.NextHop = nh
		} else {
			s.Reject = true
		}
		p.stmts = append(p.stmts, s)
	}
	for _, prefix := range slices.SortedFunc(maps.Keys(groups), ComparePrefix) {
		rs := groups[prefix]
		slices.SortFunc(rs, func(a, b Route) int { return compareStrings(a.Peers, b.Peers) })
		named := map[string]bool{}
		for _, r := range rs {
			for _, n := range r.Peers {
				named[n] = true
			}
		}
		if len(rs) == 1 {
			p.rib[prefix] = rs[0].Attrs
		} else {
			// Several attribute sets: the RIB path is bare and every
			// group gets its attributes from a statement.
			p.rib[prefix] = Attrs{}
			for _, r := range rs {
				if isZero(r.Attrs) {
					continue
				}
				in := map[string]bool{}
				for _, n := range r.Peers {
					in[n] = true
				}
				if nb := addrs(func(n string) bool { return in[n] }); len(nb) > 0 {
					p.stmts = append(p.stmts, stmt{Prefix: prefix, Neighbors: nb, Attrs: r.Attrs})
				}
			}
		}
		if nb := addrs(func(n string) bool { return !named[n] }); len(nb) > 0 {
			p.stmts = append(p.stmts, stmt{Prefix: prefix, Neighbors: nb, Reject: true})
		}
	}
	return p
}

func family(a netip.Addr) int {
	switch {
	case !a.IsValid():
		return 0
	case a.Unmap().Is4():
		return 4
	default:
		return 6
	}
}

func isZero(a Attrs) bool {
	return a.LocalPref == nil && len(a.Communities) == 0 && len(a.LargeCommunities) == 0
}

func compareStrings(a, b []string) int { return slices.Compare(a, b) }

// apiPolicy renders stmts as GoBGP defined sets and one policy named name;
// every object's name starts with name, so a generation can be removed as
// a whole.
func apiPolicy(name string, stmts []stmt) ([]*api.DefinedSet, *api.Policy) {
	var sets []*api.DefinedSet
	pol := &api.Policy{Name: name}
	for i, s := range stmts {
		base := name + "-" + strconv.Itoa(i)
		ns := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: base + "-neighbors"}
		for _, a := range s.Neighbors {
			// GoBGP matches neighbours without their zone.
			ns.List = append(ns.List, netip.PrefixFrom(a.WithZone(""), a.BitLen()).String())
		}
		sets = append(sets, ns)
		st := &api.Statement{
			Name: base,
			Conditions: &api.Conditions{
				NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: ns.Name},
			},
			Actions: &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT},
		}
		pol.Statements = append(pol.Statements, st)
		if !s.Prefix.IsValid() {
			afi := api.Family_AFI_IP
			if s.Family == 6 {
				afi = api.Family_AFI_IP6
			}
			st.Conditions.AfiSafiIn = []*api.Family{{Afi: afi, Safi: api.Family_SAFI_UNICAST}}
		} else {
			ps := &api.DefinedSet{
				DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX,
				Name:        base + "-prefix",
				Prefixes: []*api.Prefix{{
					IpPrefix:      s.Prefix.String(),
					MaskLengthMin: uint32(s.Prefix.Bits()),
					MaskLengthMax: uint32(s.Prefix.Bits()),
				}},
			}
			sets = append(sets, ps)
			st.Conditions.PrefixSet = &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: ps.Name}
		}
		switch {
		case s.Reject:
			st.Actions.RouteAction = api.RouteAction_ROUTE_ACTION_REJECT
		case s.NextHop.IsValid():
			st.Actions.RouteAction = api.RouteAction_ROUTE_ACTION_UNSPECIFIED
			st.Actions.Nexthop = &api.NexthopAction{Address: s.NextHop.String()}
		default:
			if len(s.Attrs.Communities) > 0 {
				ca := &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD}
				for _, c := range s.Attrs.Communities {
					ca.Communities = append(ca.Communities, fmt.Sprintf("%d:%d", c>>16, c&0xffff))
				}
				st.Actions.Community = ca
			}
			if len(s.Attrs.LargeCommunities) > 0 {
				ca := &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD}
				for _, c := range s.Attrs.LargeCommunities {
					ca.Communities = append(ca.Communities, c.String())
				}
				st.Actions.LargeCommunity = ca
			}
			if s.Attrs.LocalPref != nil {
				st.Actions.LocalPref = &api.LocalPrefAction{Value: *s.Attrs.LocalPref}
			}
		}
	}
	return sets, pol
}
