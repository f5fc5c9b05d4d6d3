// Package bgp announces Service addresses to BGP routers from a node, with
// an embedded GoBGP (github.com/osrg/gobgp/v4) server.
//
// # Why embedded GoBGP
//
// The speaker runs on every node and must not depend on a routing daemon
// being installed there, nor fight one for port 179. GoBGP is a library:
// one process, its API called directly (no gRPC), its sessions dialled
// from the speaker's network namespace. The server never listens by
// default (Options.ListenPort): ironlb dials out only.
//
// # Layout
//
// The package splits into a pure core and a thin shell around GoBGP:
//
//   - Build turns (address, matching BGPAdvertisements) items and the
//     node's peers into Routes: prefixes aggregated per advertisement,
//     communities unioned, the highest local preference, peer
//     restrictions applied. NewPeerSpec and RouterID resolve BGPPeers for
//     the node; apiPeer and planExport translate to GoBGP's terms. All of
//     it is deterministic and unit-tested without a network.
//   - Speaker holds the GoBGP server and applies diffs: SetPeers touches
//     only the sessions that changed, SetRoutes only the prefixes that
//     changed, so an unrelated change never resets a session or resends a
//     route. Status and the Prometheus metrics read GoBGP's state.
//
// # GoBGP behaviours this package relies on (checked against FRR 8.4)
//
// Next hop. Paths are added with an unspecified next hop (0.0.0.0 or ::);
// GoBGP then puts the session's local address, for eBGP and iBGP alike
// (next-hop self). That is right when the route and the session share a
// family. Across families it is not: GoBGP sends an IPv6 route over an
// IPv4 session with next hop ::ffff:a.b.c.d, which FRR accepts and zebra
// fails to install, and an IPv4 route over an IPv6 session with an
// RFC 8950 IPv6 next hop, which needs the extended-next-hop capability.
// The export policy therefore sets the node's own address of the route's
// family (Options.NodeIPv4, NodeIPv6) on cross-family paths, and rejects
// them when the node has no such address.
//
// Per-peer routes. GoBGP's global RIB holds one best path per prefix and
// sends it to every neighbor; per-neighbor policies exist only for
// route-server clients. The speaker keeps one path per prefix and a global
// export policy whose statements match (prefix set, neighbor set): reject
// the prefix for peers its advertisements do not name, or, when peer
// groups need different attributes, keep the RIB path bare and add each
// group's communities and local preference. Prefixes that go to every peer
// alike need no statement. A policy change is built as a new generation,
// swapped in with one assignment, and followed by a soft reset out of
// every peer, because GoBGP applies a new policy to new updates only.
//
// Local AS. GoBGP has one global AS, but each neighbor's LocalAsn is used
// in its OPEN and AS path and decides iBGP versus eBGP, so peers with
// different MyASN work in one server. The router ID, however, is global:
// RouterID refuses peers that disagree.
//
// Graceful restart. StopBgp with AllowGracefulRestart closes sessions
// that negotiated graceful restart without a NOTIFICATION (the TCP
// connection just ends), which is what a helper needs to keep the routes
// as stale; the server's plain Stop sends Cease and the peer withdraws.
// Speaker.Stop uses the former when any peer has graceful restart. A
// SIGKILL is the same from the peer's side. After a restart, GoBGP sends
// the whole RIB and End-of-RIB as soon as a session is established, so
// the Speaker does not add peers before the first SetRoutes: otherwise
// the helper would receive End-of-RIB with an empty table and flush the
// stale routes. The new process advertises the graceful-restart capability
// without the forwarding-preserved bit (GoBGP sets it only when started as
// "restarting", which makes it wait for every peer's End-of-RIB, for up to
// the deferral time, before sending anything); FRR 8.4 kept the route
// installed throughout kill-and-restart and stop-and-restart cycles in the
// tests (polled every 10ms). BFD and graceful restart combine: the
// sessions end (TCP closed, by StopBgp or by the kernel on SIGKILL) before
// BFD falls silent, so the router is already helping with the restart and
// keeps the stale routes; a dead node's BFD expires while its session is
// up, and the router's Cease/BFD Down NOTIFICATION ends graceful restart.
// GoBGP's BFD sends the control-plane-independent bit clear (it dies with
// the speaker); a router that then takes every BFD loss for a restart
// (FRR's "bfd check-control-plane-failure") keeps routing to dead nodes,
// so it must stay off (docs/performance.md).
//
// Session start. GoBGP dials a new neighbor after 1.5 to 2 seconds (its
// minimum connect-retry interval, randomised), whatever the configured
// connect time, so a session comes up about 2 seconds after SetPeers.
// After a session went down GoBGP waits IdleHoldTimeAfterReset before
// dialling again; its default is 30s, the speaker sets 2s.
//
// BFD. GoBGP implements BFD itself (asynchronous mode, single hop, UDP
// 3784, TTL 255), started per neighbor; on BFD down it resets the BGP
// session. It has no passive mode and no minimum-TTL check, so those
// BFDProfile fields are not applied. With 300ms x3 FRR withdrew a node
// that vanished in about one second.
//
// # Logging and metrics
//
// GoBGP logs through log/slog; its Info lines (every FSM transition) go to
// the speaker's logr at V(1), warnings at V(0), errors as errors. Metrics
// are registered on Options.Registerer (no package state):
// ironlb_bgp_session_up{peer}, ironlb_bfd_session_up{peer} (read from
// GoBGP when scraped), ironlb_bgp_updates_total{op} and
// ironlb_bgp_announced_prefixes.
//
// # Tests
//
// The lab tests run each speaker as a child process inside a node's
// network namespace (package bgptest) against FRR (package
// github.com/ironlb/ironlb/test/frr) in another; they need root, network
// namespaces and the Debian frr package (make deps) and skip otherwise.
package bgp
