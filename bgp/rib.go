package bgp

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"

	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
)

// SetRoutes makes the announced routes exactly routes (see Route and
// Build): new prefixes are added, prefixes no longer present are
// withdrawn, changed attributes or peer sets are updated; unchanged
// prefixes are not touched. Changes go to GoBGP, and from there to the
// peers, immediately.
func (s *Speaker) SetRoutes(ctx context.Context, routes []Route) error {
	if err := checkRoutes(routes); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ready(); err != nil {
		return err
	}
	routes = slices.Clone(routes)
	s.routes = routes
	p := planExport(routes, addrsOf(s.peers), s.opts.NodeIPv4, s.opts.NodeIPv6)

	var errs []error
	// Withdraw first: a path whose statements are about to disappear must
	// not be re-evaluated against a policy without them.
	var withdraw []netip.Prefix
	for prefix := range s.rib {
		if _, ok := p.rib[prefix]; !ok {
			withdraw = append(withdraw, prefix)
		}
	}
	slices.SortFunc(withdraw, ComparePrefix)
	if len(withdraw) > 0 {
		paths := make([]*apiutil.Path, 0, len(withdraw))
		for _, prefix := range withdraw {
			paths = append(paths, apiPath(prefix, Attrs{}, true))
		}
		if err := s.srv.DeletePath(apiutil.DeletePathRequest{Paths: paths}); err != nil {
			errs = append(errs, fmt.Errorf("withdraw %d prefixes: %w", len(withdraw), err))
		} else {
			for _, prefix := range withdraw {
				delete(s.rib, prefix)
			}
			s.m.updates.WithLabelValues("withdraw").Add(float64(len(withdraw)))
			s.log.V(1).Info("Routes withdrawn", "prefixes", withdraw)
		}
	}
	if err := s.installPolicy(ctx, p.stmts); err != nil {
		errs = append(errs, err)
	}
	var add []*apiutil.Path
	var added []netip.Prefix
	for _, prefix := range slices.SortedFunc(maps.Keys(p.rib), ComparePrefix) {
		attrs := p.rib[prefix]
		if old, ok := s.rib[prefix]; ok && old.Equal(attrs) {
			continue
		}
		add = append(add, apiPath(prefix, attrs, false))
		added = append(added, prefix)
	}
	if len(add) > 0 {
		if _, err := s.srv.AddPath(apiutil.AddPathRequest{Paths: add}); err != nil {
			errs = append(errs, fmt.Errorf("announce %d prefixes: %w", len(add), err))
		} else {
			for _, prefix := range added {
				s.rib[prefix] = p.rib[prefix]
			}
			s.m.updates.WithLabelValues("add").Add(float64(len(add)))
			s.log.V(1).Info("Routes announced", "prefixes", added)
		}
	}
	s.m.announced.Set(float64(len(s.rib)))
	if !s.routesSet {
		s.routesSet = true
		if err := s.syncPeers(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func addrsOf(peers map[string]PeerSpec) map[string]netip.Addr {
	out := make(map[string]netip.Addr, len(peers))
	for n, p := range peers {
		out[n] = p.Address
	}
	return out
}

// syncPolicy recomputes the export statements for the current routes and
// the given peers, and installs them if they changed.
func (s *Speaker) syncPolicy(ctx context.Context, peers map[string]PeerSpec) error {
	return s.installPolicy(ctx, planExport(s.routes, addrsOf(peers), s.opts.NodeIPv4, s.opts.NodeIPv6).stmts)
}

// installPolicy replaces the global export policy by stmts if they differ
// from the installed ones, then re-evaluates what every established peer
// was sent (GoBGP applies a policy change to new updates only). A new
// generation is built beside the old one and swapped in with one
// assignment, so no path is ever evaluated against a half-built policy.
func (s *Speaker) installPolicy(ctx context.Context, stmts []stmt) error {
	if slices.EqualFunc(stmts, s.stmts, stmt.equal) {
		return nil
	}
	old := s.policy
	name := ""
	assign := &api.PolicyAssignment{
		Name:          "global",
		Direction:     api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}
	if len(stmts) > 0 {
		s.gen++
		name = "ironlb-" + strconv.Itoa(s.gen)
		sets, pol := apiPolicy(name, stmts)
		for _, d := range sets {
			if err := s.srv.AddDefinedSet(ctx, &api.AddDefinedSetRequest{DefinedSet: d}); err != nil {
				return fmt.Errorf("export policy: add defined set %s: %w", d.Name, err)
			}
		}
		if err := s.srv.AddPolicy(ctx, &api.AddPolicyRequest{Policy: pol}); err != nil {
			return fmt.Errorf("export policy: add %s: %w", name, err)
		}
		assign.Policies = []*api.Policy{{Name: name}}
	}
	if err := s.srv.SetPolicyAssignment(ctx, &api.SetPolicyAssignmentRequest{Assignment: assign}); err != nil {
		return fmt.Errorf("export policy: assign %q: %w", name, err)
	}
	oldStmts := s.stmts
	s.policy, s.stmts = name, stmts
	if err := s.softResetOut(ctx); err != nil {
		return err
	}
	if old != "" {
		if err := s.srv.DeletePolicy(ctx, &api.DeletePolicyRequest{Policy: &api.Policy{Name: old}, All: true}); err != nil {
			s.log.Error(err, "Removing old export policy", "policy", old)
		}
		sets, _ := apiPolicy(old, oldStmts)
		for _, d := range sets {
			if err := s.srv.DeleteDefinedSet(ctx, &api.DeleteDefinedSetRequest{DefinedSet: d, All: true}); err != nil {
				s.log.Error(err, "Removing old export policy set", "set", d.Name)
			}
		}
	}
	s.log.V(1).Info("Export policy updated", "policy", name, "statements", len(stmts))
	return nil
}

func (s *Speaker) softResetOut(ctx context.Context) error {
	var errs []error
	for _, name := range slices.Sorted(maps.Keys(s.peers)) {
		p := s.peers[name]
		err := s.srv.ResetPeer(ctx, &api.ResetPeerRequest{
			Address:   p.Address.Unmap().String(),
			Soft:      true,
			Direction: api.ResetPeerRequest_DIRECTION_OUT,
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %q: re-send routes after policy change: %w", name, err))
		}
	}
	return errors.Join(errs...)
}

// apiPath builds GoBGP's path for prefix. The next hop is left
// unspecified (0.0.0.0 or ::): GoBGP then uses the local address of each
// session, i.e. next-hop self on eBGP and iBGP alike.
func apiPath(prefix netip.Prefix, a Attrs, withdraw bool) *apiutil.Path {
	nlri, _ := bgp.NewIPAddrPrefix(prefix) // prefix validated by checkRoutes
	attrs := []bgp.PathAttributeInterface{bgp.NewPathAttributeOrigin(bgp.BGP_ORIGIN_ATTR_TYPE_IGP)}
	family := bgp.RF_IPv4_UC
	if prefix.Addr().Is4() {
		nh, _ := bgp.NewPathAttributeNextHop(netip.IPv4Unspecified())
		attrs = append(attrs, nh)
	} else {
		family = bgp.RF_IPv6_UC
		mp, _ := bgp.NewPathAttributeMpReachNLRI(family, []bgp.PathNLRI{{NLRI: nlri}}, netip.IPv6Unspecified())
		attrs = append(attrs, mp)
	}
	if a.LocalPref != nil {
		attrs = append(attrs, bgp.NewPathAttributeLocalPref(*a.LocalPref))
	}
	if len(a.Communities) > 0 {
		attrs = append(attrs, bgp.NewPathAttributeCommunities(slices.Clone(a.Communities)))
	}
	if len(a.LargeCommunities) > 0 {
		l := make([]*bgp.LargeCommunity, 0, len(a.LargeCommunities))
		for _, c := range a.LargeCommunities {
			l = append(l, bgp.NewLargeCommunity(c[0], c[1], c[2]))
		}
		attrs = append(attrs, bgp.NewPathAttributeLargeCommunities(l))
	}
	return &apiutil.Path{Family: family, Nlri: nlri, Attrs: attrs, Withdrawal: withdraw}
}
