package bgp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	api "github.com/osrg/gobgp/v4/api"
	"github.com/osrg/gobgp/v4/pkg/server"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/ironlb/ironlb/config/v1beta1"
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
	routesSet bool                          // SetRoutes was called at least once
	desired   map[string]PeerSpec           // by name, as last given to SetPeers
	peers     map[string]PeerSpec           // by name, as configured in GoBGP (prepared)
	failed    map[string]*PeerError         // desired peers the last sync left out
	hellos    map[string]context.CancelFunc // unnumbered links advertised on, by interface
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
		hellos:  map[string]context.CancelFunc{},
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
	for _, cancel := range s.hellos {
		cancel()
	}
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
// else changed. Names must be unique and so must addresses and
// interfaces (GoBGP keys sessions by address, whatever the VRF).
func (s *Speaker) SetPeers(ctx context.Context, peers []PeerSpec) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ready(); err != nil {
		return err
	}
	desired := map[string]PeerSpec{}
	byAddr := map[string]string{}
	for _, p := range peers {
		if _, dup := desired[p.Name]; dup {
			return fmt.Errorf("peer %q: named twice", p.Name)
		}
		key, what := p.Address.Unmap().String(), "address "+p.Address.String()
		if p.Interface != "" {
			key, what = "%"+p.Interface, "interface "+p.Interface
		}
		if other, dup := byAddr[key]; dup {
			return fmt.Errorf("peer %q: %s is also peer %q's", p.Name, what, other)
		}
		if _, err := apiPeer(p); err != nil {
			return err
		}
		desired[p.Name] = p
		byAddr[key] = p.Name
	}
	s.desired = desired
	if !s.routesSet {
		s.log.V(1).Info("Peers held until the first routes are set", "peers", len(desired))
		return nil
	}
	return s.syncPeers(ctx)
}

// syncPeers applies s.desired. Each peer is first prepared against the
// node (its VRF and interface exist, an unnumbered router's address is
// known): one that is not ready is left out (and removed if it ran) with
// its PeerError kept for Status, and is tried again on the next call; an
// unnumbered router whose address changed (a replaced router) is a
// changed session. The export policy is updated for the new set of
// addresses before any session is added, so a new peer never sees a route
// meant for others.
func (s *Speaker) syncPeers(ctx context.Context) error {
	s.syncHellos()
	var errs []error
	ready := map[string]PeerSpec{}
	s.failed = map[string]*PeerError{}
	for _, name := range slices.Sorted(maps.Keys(s.desired)) {
		p, err := prepare(ctx, s.desired[name])
		var pe *PeerError
		if old, running := s.peers[name]; running && errors.As(err, &pe) && pe.Reason == v1beta1.ReasonNoLinkLocalNeighbor {
			// The router's entry left the neighbour table while the
			// session runs: the session knows better, unless the peer
			// itself changed.
			q := old
			q.Address = p.Address // the one prepare could not find
			if q.Equal(p) {
				ready[name] = old
				continue
			}
		}
		if err != nil {
			s.failed[name] = peerError(name, err)
			errs = append(errs, err)
			continue
		}
		ready[name] = p
	}
	var gone, added []string
	for name, old := range s.peers {
		if p, ok := ready[name]; !ok || !p.Equal(old) {
			gone = append(gone, name)
		}
	}
	for name, p := range ready {
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
		next[name] = ready[name]
	}
	if err := s.syncPolicy(ctx, next); err != nil {
		return errors.Join(append(errs, err)...)
	}
	failedAdd := false
	for _, name := range added {
		p := ready[name]
		ap, err := apiPeer(p)
		if err == nil {
			err = s.srv.AddPeer(ctx, &api.AddPeerRequest{Peer: ap})
		}
		if err != nil {
			err = fmt.Errorf("add: %w", err)
			s.failed[name] = peerError(name, err)
			errs = append(errs, s.failed[name])
			failedAdd = true
			continue
		}
		s.peers[name] = p
		s.log.Info("BGP peer added", "peer", name, "address", p.Address, "interface", p.Interface, "vrf", p.VRF,
			"myASN", p.MyASN, "peerASN", p.PeerASN, "bfd", p.BFD != nil, "gracefulRestart", p.GracefulRestart)
	}
	if failedAdd {
		// A failed add left the policy planned for a peer that is not
		// there; recompute it for what is.
		errs = append(errs, s.syncPolicy(ctx, s.peers))
	}
	return errors.Join(errs...)
}

// syncHellos advertises the node on the links of its desired unnumbered
// peers, and on no other (see hello).
func (s *Speaker) syncHellos() {
	want := map[string]bool{}
	for _, p := range s.desired {
		if p.Interface != "" {
			want[p.Interface] = true
		}
	}
	for iface, cancel := range s.hellos {
		if !want[iface] {
			cancel()
			delete(s.hellos, iface)
		}
	}
	for iface := range want {
		if s.hellos[iface] == nil {
			ctx, cancel := context.WithCancel(context.Background())
			s.hellos[iface] = cancel
			go hello(ctx, s.log, iface)
		}
	}
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
