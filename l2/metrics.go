package l2

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the Prometheus counters of the layer-2 announcers. One Metrics
// is meant to be shared by all announcers of a process (one per interface),
// so the series are per protocol ("arp" or "ndp"), not per interface.
//
// The fields are exported so that a caller can register them elsewhere or
// read them in tests; they are never nil in a Metrics made by NewMetrics.
type Metrics struct {
	// RequestsReceived counts ARP requests and Neighbor Solicitations for
	// IPs this node announces. Requests for other IPs are not counted: on a
	// busy segment they are most of the traffic and say nothing about us.
	RequestsReceived *prometheus.CounterVec
	// ResponsesSent counts ARP replies and solicited Neighbor
	// Advertisements sent.
	ResponsesSent *prometheus.CounterVec
	// GratuitousSent counts gratuitous ARPs and unsolicited Neighbor
	// Advertisements sent, at takeover and in defence of an IP.
	GratuitousSent *prometheus.CounterVec
	// Conflicts counts conflicts reported (one per OnConflict call), not
	// conflicting packets: those are rate-limited per IP.
	Conflicts *prometheus.CounterVec
	// Handovers counts IPs withdrawn because their new owner announced
	// them while this node was yielding (graceful stop or a move to a
	// live node).
	Handovers *prometheus.CounterVec
}

// NewMetrics creates the collectors and registers them with reg, panicking
// like prometheus.MustRegister if that fails (a programming error: the
// metrics were registered twice). A nil reg creates unregistered collectors,
// which is what tests and callers that register by hand want.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	vec := func(name, help string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ironlb",
			Subsystem: "l2",
			Name:      name,
			Help:      help,
		}, []string{"protocol"})
		// Create both series up front so that dashboards see 0, not
		// "no data", before the first packet.
		v.WithLabelValues(protoARP)
		v.WithLabelValues(protoNDP)
		return v
	}
	m := &Metrics{
		RequestsReceived: vec("requests_received", "ARP requests and NDP neighbor solicitations received for IPs this node announces."),
		ResponsesSent:    vec("responses_sent", "ARP replies and solicited NDP neighbor advertisements sent."),
		GratuitousSent:   vec("gratuitous_sent", "Gratuitous ARPs and unsolicited NDP neighbor advertisements sent."),
		Conflicts:        vec("conflicts_total", "Address conflicts detected: another host claims an IP this node probes or announces."),
		Handovers:        vec("handovers_total", "IPs withdrawn after their new owner announced them (graceful handover)."),
	}
	if reg != nil {
		reg.MustRegister(m.RequestsReceived, m.ResponsesSent, m.GratuitousSent, m.Conflicts, m.Handovers)
	}
	return m
}

// The helpers below are nil-safe so that the announcer can count
// unconditionally whether or not the caller wants metrics.

func (m *Metrics) request(proto string) {
	if m != nil {
		m.RequestsReceived.WithLabelValues(proto).Inc()
	}
}

func (m *Metrics) response(proto string) {
	if m != nil {
		m.ResponsesSent.WithLabelValues(proto).Inc()
	}
}

func (m *Metrics) gratuitous(proto string) {
	if m != nil {
		m.GratuitousSent.WithLabelValues(proto).Inc()
	}
}

func (m *Metrics) conflict(proto string) {
	if m != nil {
		m.Conflicts.WithLabelValues(proto).Inc()
	}
}

func (m *Metrics) handover(proto string) {
	if m != nil {
		m.Handovers.WithLabelValues(proto).Inc()
	}
}
