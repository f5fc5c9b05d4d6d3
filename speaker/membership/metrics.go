package membership

import "github.com/prometheus/client_golang/prometheus"

// Packet results, the values of the "result" label of packets_total.
const (
	// resultOK: authenticated and accepted. Most prove the sender alive;
	// during a (re)connection handshake some only teach us the sender's
	// sequence (see the package documentation).
	resultOK = "ok"
	// resultBadMAC: well-formed but the MAC is wrong: a forgery, a
	// corrupted packet or, most likely, a speaker with a different key
	// (a Secret rotated on some nodes only).
	resultBadMAC = "bad_mac"
	// resultStale: authenticated but replayed (sequence not newer),
	// from a superseded incarnation, or echoing one of our sequences too
	// old to prove the sender alive now (delayed or replayed).
	resultStale = "stale"
	// resultMalformed: not a packet of this protocol and version.
	resultMalformed = "malformed"
	// resultUnknownPeer: authenticated, but the sender is not in the peer
	// list (our view of the Nodes lags theirs) or the packet is addressed
	// to another node name (a peer has a stale address for us).
	resultUnknownPeer = "unknown_peer"
)

// Metrics are the Prometheus collectors of a Mesh. A process runs one Mesh,
// so PeersAlive is a plain gauge; sharing one Metrics between several Mesh
// instances would make it meaningless (the counters would just add up).
//
// The fields are exported so that a caller can register them elsewhere or
// read them in tests; they are never nil in a Metrics made by NewMetrics.
type Metrics struct {
	// PeersAlive is the number of peers currently alive, not counting
	// this node.
	PeersAlive prometheus.Gauge
	// Packets counts received datagrams by result (see the result*
	// constants). bad_mac and unknown_peer that don't go away point at a
	// configuration problem; a steady trickle of stale is normal around
	// restarts and partitions.
	Packets *prometheus.CounterVec
	// Transitions counts peers becoming alive or dead. Peers added to or
	// removed from the peer list are not transitions: this is for
	// alerting on flapping, not on cluster scaling.
	Transitions *prometheus.CounterVec

	// Resolved children: a packet is counted on the receive path, which
	// should not hash label values for every heartbeat.
	packets     map[string]prometheus.Counter
	toAlive     prometheus.Counter
	toDead      prometheus.Counter
	initialized bool
}

// NewMetrics creates the collectors and registers them with reg, panicking
// like prometheus.MustRegister if that fails (a programming error: the
// metrics were registered twice). A nil reg creates unregistered
// collectors, which is what tests and callers that register by hand want.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		PeersAlive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "ironlb",
			Subsystem: "membership",
			Name:      "peers_alive",
			Help:      "Peers (other speakers) currently considered alive by this speaker's heartbeat mesh.",
		}),
		Packets: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ironlb",
			Subsystem: "membership",
			Name:      "packets_total",
			Help:      "Heartbeat mesh datagrams received, by result (ok, bad_mac, stale, malformed, unknown_peer).",
		}, []string{"result"}),
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ironlb",
			Subsystem: "membership",
			Name:      "peer_transitions_total",
			Help:      "Peers changing liveness, by the state they changed to (alive or dead).",
		}, []string{"to"}),
	}
	// Creating every series up front also makes dashboards show 0 rather
	// than "no data" before the first event.
	m.packets = make(map[string]prometheus.Counter)
	for _, r := range []string{resultOK, resultBadMAC, resultStale, resultMalformed, resultUnknownPeer} {
		m.packets[r] = m.Packets.WithLabelValues(r)
	}
	m.toAlive = m.Transitions.WithLabelValues("alive")
	m.toDead = m.Transitions.WithLabelValues("dead")
	m.initialized = true
	if reg != nil {
		reg.MustRegister(m.PeersAlive, m.Packets, m.Transitions)
	}
	return m
}

// The helpers below are nil-safe so that the mesh counts unconditionally.
// They also accept a Metrics built by hand (not by NewMetrics), falling
// back to the label lookups.

func (m *Metrics) packet(result string) {
	switch {
	case m == nil:
	case m.initialized:
		m.packets[result].Inc()
	case m.Packets != nil:
		m.Packets.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) transition(alive bool) {
	switch {
	case m == nil:
	case m.initialized && alive:
		m.toAlive.Inc()
	case m.initialized:
		m.toDead.Inc()
	case m.Transitions != nil && alive:
		m.Transitions.WithLabelValues("alive").Inc()
	case m.Transitions != nil:
		m.Transitions.WithLabelValues("dead").Inc()
	}
}

func (m *Metrics) peersAlive(n int) {
	if m != nil && m.PeersAlive != nil {
		m.PeersAlive.Set(float64(n))
	}
}
