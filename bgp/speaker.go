package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/apiutil"
	"github.com/osrg/gobgp/v4/pkg/packet/bgp"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configure a Speaker. They are fixed for its lifetime: changing
// the router ID or the ASN means a new Speaker (GoBGP cannot change them
// on a running server).
type Options struct {
	// RouterID is the BGP identifier (see RouterID). Required.
	RouterID netip.Addr
	// ASN is GoBGP's global AS number. Required, but every session uses
	// its own PeerSpec.MyASN (GoBGP's per-neighbor local AS), so it only
	// shows in GoBGP's own state; the node's most common MyASN is a good
	// choice.
	ASN uint32
	// ListenPort is the TCP port to accept sessions on; 0 or -1 means do
	// not listen: the speaker dials out only, so that it never competes
	// for port 179 with another BGP daemon on the node.
	ListenPort int32
	// NodeIPv4 and NodeIPv6 are the node's addresses, the next hops of
	// routes sent over a session of the other family (IPv6 routes over
	// IPv4 sessions and the reverse), where the session's own local address
	// cannot serve. Without the address of a family, routes of that family
	// go to sessions of the same family only.
	NodeIPv4, NodeIPv6 netip.Addr
	// Registerer receives the speaker's metrics; nil registers none.
	Registerer prometheus.Registerer
}

// PeerStatus is the state of one session.
type PeerStatus struct {
	Name    string     `json:"name"`
	Address netip.Addr `json:"address"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State string `json:"state"`
	// Since is when the session reached State "established", or when it
	// last left it (zero if it never was up).
	Since time.Time `json:"since,omitzero"`
	// PrefixesSent counts the prefixes currently advertised to the peer
	// (after export policy).
	PrefixesSent uint64 `json:"prefixesSent"`
	// BFDState is up, down, init or admindown; "" when the peer has no BFD.
	BFDState string `json:"bfdState,omitempty"`
}

// Established tells whether the session is up.
func (s PeerStatus) Established() bool { return s.State == "established" }

// Speaker announces routes to BGP peers through an embedded GoBGP server.
// It owns the server: every GoBGP call goes through it. Its methods are
// safe for concurrent use; SetPeers and SetRoutes are serialized.
//
// Peers are not dialled before the first SetRoutes call, so a restarted
// speaker sends its full table with the first UPDATEs and End-of-RIB: a
// graceful-restart helper would otherwise flush the routes it kept.
type Speaker struct {
	log  logr.Logger
	opts Options
	srv  *server.BgpServer
	m    *metrics

	mu        sync.Mutex
	started   bool
	stopped   bool
	routesSet bool                // SetRoutes was called at least once
	desired   map[string]PeerSpec // by name, as last given to SetPeers
	peers     map[string]PeerSpec // by name, as configured in GoBGP
	routes    []Route
	rib       map[netip.Prefix]Attrs // paths in GoBGP's global RIB
	stmts     []stmt                 // installed export statements
	policy    string                 // installed policy name, "" if none
	gen       int
	quiet     *quietHandler
}

// New makes a Speaker; Start runs it.
func New(log logr.Logger, opts Options) *Speaker {
	q := newQuietHandler(log.WithName("gobgp"))
	s := &Speaker{
		log:     log,
		opts:    opts,
		desired: map[string]PeerSpec{},
		peers:   map[string]PeerSpec{},
		rib:     map[netip.Prefix]Attrs{},
		quiet:   q,
	}
	s.srv = server.NewBgpServer(server.LoggerOption(slog.New(q), nil))
	s.m = newMetrics(s)
	return s
}

// Start starts the GoBGP server. It registers the metrics first, so a
// registration conflict fails Start before anything runs.
func (s *Speaker) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started {
		return errors.New("speaker already started")
	}
	if !s.opts.RouterID.Unmap().Is4() {
		return fmt.Errorf("router ID %v: must be an IPv4 address", s.opts.RouterID)
	}
	if s.opts.ASN == 0 {
		return errors.New("speaker ASN must be set")
	}
	if r := s.opts.Registerer; r != nil {
		if err := s.m.register(r); err != nil {
			return fmt.Errorf("register BGP metrics: %w", err)
		}
	}
	go s.srv.Serve()
	port := s.opts.ListenPort
	if port == 0 {
		port = -1
	}
	err := s.srv.StartBgp(ctx, &api.StartBgpRequest{Global: &api.Global{
		Asn:        s.opts.ASN,
		RouterId:   s.opts.RouterID.Unmap().String(),
		ListenPort: port,
	}})
	if err != nil {
		s.srv.Stop()
		s.m.unregister()
		return fmt.Errorf("start GoBGP: %w", err)
	}
	s.started = true
	s.log.Info("BGP speaker started", "routerID", s.opts.RouterID, "asn", s.opts.ASN)
	return nil
}

// Stop ends every session and the server. Sessions with graceful restart
// are closed without a NOTIFICATION (RFC 4724 4.2: the TCP connection just
// ends), so the peers keep the routes as stale for the restart time and a
// restarted speaker takes over without a withdrawal. Other sessions get a
// Cease NOTIFICATION and the peers withdraw at once. BFD, if configured,
// stops too: a peer tracking BFD will then drop the session after its
// detection time, graceful restart or not (FRR does).
func (s *Speaker) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.started || s.stopped {
		return
	}
	s.stopped = true
	gr := false
	for _, p := range s.peers {
		gr = gr || p.GracefulRestart
	}
	if gr {
		if err := s.srv.StopBgp(context.Background(), &api.StopBgpRequest{AllowGracefulRestart: true}); err != nil {
			s.log.Error(err, "Stopping BGP with graceful restart")
		}
		// server.Stop stops BFD and calls StopBgp again, which then
		// fails with "not running": expected, not worth an error line.
		s.quiet.drop("failed to stop BGP server")
	}
	s.srv.Stop()
	s.m.unregister()
	s.log.Info("BGP speaker stopped", "gracefulRestart", gr)
}

// SetPeers makes the configured sessions exactly peers: sessions with a
// new name are added, those whose name is gone are removed, those whose
// PeerSpec changed are removed and added again (GoBGP resets the session
// for most changes anyway), and unchanged ones are left alone, whatever
// else changed. Names must be unique and so must addresses (GoBGP keys
// sessions by address).
func (s *Speaker) SetPeers(ctx context.Context, peers []PeerSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ready(); err != nil {
		return err
	}
	desired := map[string]PeerSpec{}
	byAddr := map[netip.Addr]string{}
	for _, p := range peers {
		if _, dup := desired[p.Name]; dup {
			return fmt.Errorf("peer %q: named twice", p.Name)
		}
		if other, dup := byAddr[p.Address.Unmap()]; dup {
			return fmt.Errorf("peer %q: address %s is also peer %q's", p.Name, p.Address, other)
		}
		if _, err := apiPeer(p); err != nil {
			return err
		}
		desired[p.Name] = p
		byAddr[p.Address.Unmap()] = p.Name
	}
	s.desired = desired
	if !s.routesSet {
		s.log.V(1).Info("Peers held until the first routes are set", "peers", len(desired))
		return nil
	}
	return s.syncPeers(ctx)
}

// syncPeers applies s.desired. The export policy is updated for the new
// set of addresses before any session is added, so a new peer never sees
// a route meant for others.
func (s *Speaker) syncPeers(ctx context.Context) error {
	var errs []error
	var gone, added []string
	for name, old := range s.peers {
		if p, ok := s.desired[name]; !ok || !p.Equal(old) {
			gone = append(gone, name)
		}
	}
	for name, p := range s.desired {
		if old, ok := s.peers[name]; !ok || !p.Equal(old) {
			added = append(added, name)
		}
	}
	slices.Sort(gone)
	slices.Sort(added)
	for _, name := range gone {
		p := s.peers[name]
		if err := s.srv.DeletePeer(ctx, &api.DeletePeerRequest{Address: p.Address.Unmap().String()}); err != nil {
			errs = append(errs, fmt.Errorf("peer %q: delete: %w", name, err))
			continue
		}
		delete(s.peers, name)
		s.log.Info("BGP peer removed", "peer", name, "address", p.Address)
	}
	// The policy must know the addresses of peers about to be added.
	next := maps.Clone(s.peers)
	for _, name := range added {
		next[name] = s.desired[name]
	}
	if err := s.syncPolicy(ctx, next); err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, name := range added {
		p := s.desired[name]
		ap, err := apiPeer(p)
		if err == nil {
			err = s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: ap})
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("peer %q: add: %w", name, err))
			continue
		}
		s.peers[name] = p
		s.log.Info("BGP peer added", "peer", name, "address", p.Address, "myASN", p.MyASN, "peerASN", p.PeerASN,
			"bfd", p.BFD != nil, "gracefulRestart", p.GracefulRestart)
	}
	if len(errs) > 0 {
		// A failed add left the policy planned for a peer that is not
		// there; recompute it for what is.
		errs = append(errs, s.syncPolicy(ctx, s.peers))
	}
	return errors.Join(errs...)
}

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

func (s *Speaker) ready() error {
	switch {
	case !s.started:
		return errors.New("speaker not started")
	case s.stopped:
		return errors.New("speaker stopped")
	}
	return nil
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

// Status reports every configured session, by name.
func (s *Speaker) Status() []PeerStatus {
	s.mu.Lock()
	byAddr := map[netip.Addr]PeerSpec{}
	for _, p := range s.peers {
		byAddr[p.Address.Unmap()] = p
	}
	ok := s.started && !s.stopped
	s.mu.Unlock()
	if !ok {
		return nil
	}
	var out []PeerStatus
	err := s.srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		addr, err := netip.ParseAddr(p.GetConf().GetNeighborAddress())
		if err != nil {
			return
		}
		spec, known := byAddr[addr]
		if !known {
			return
		}
		st := PeerStatus{Name: spec.Name, Address: addr, State: sessionState(p.GetState().GetSessionState())}
		if t := p.GetTimers().GetState(); t != nil {
			if st.Established() && t.GetUptime() != nil {
				st.Since = t.GetUptime().AsTime()
			} else if !st.Established() && t.GetDowntime() != nil && t.GetDowntime().GetSeconds() > 0 {
				st.Since = t.GetDowntime().AsTime()
			}
		}
		for _, af := range p.GetAfiSafis() {
			st.PrefixesSent += af.GetState().GetAdvertised()
		}
		if spec.BFD != nil {
			st.BFDState = bfdState(p.GetState().GetBfdState().GetSessionState())
		}
		out = append(out, st)
	})
	if err != nil {
		s.log.Error(err, "Listing BGP peers")
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func sessionState(st api.PeerState_SessionState) string {
	name := strings.TrimPrefix(st.String(), "SESSION_STATE_")
	return strings.ToLower(name)
}

func bfdState(st api.BfdSessionState) string {
	switch st {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return "up"
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return "init"
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return "admindown"
	default:
		return "down"
	}
}
