package bgp

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are one Speaker's Prometheus metrics. Session and BFD states are
// read from GoBGP when scraped (a Collector), so they are never stale and
// vanish with their peer; counters and the prefix gauge are kept as the
// speaker acts.
type metrics struct {
	s         *Speaker
	updates   *prometheus.CounterVec
	announced prometheus.Gauge
	sessionUp *prometheus.Desc
	bfdUp     *prometheus.Desc
	reg       prometheus.Registerer
}

func newMetrics(s *Speaker) *metrics {
	return &metrics{
		s: s,
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ironlb_bgp_updates_total",
			Help: "Route changes handed to the BGP server, by op (add, withdraw).",
		}, []string{"op"}),
		announced: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "ironlb_bgp_announced_prefixes",
			Help: "Prefixes in the speaker's BGP table (each goes to the peers its advertisements allow).",
		}),
		sessionUp: prometheus.NewDesc("ironlb_bgp_session_up",
			"1 if the BGP session with the peer is established.", []string{"peer"}, nil),
		bfdUp: prometheus.NewDesc("ironlb_bfd_session_up",
			"1 if the BFD session with the peer is up (peers with BFD only).", []string{"peer"}, nil),
	}
}

func (m *metrics) register(r prometheus.Registerer) error {
	for i, c := range []prometheus.Collector{m.updates, m.announced, m} {
		if err := r.Register(c); err != nil {
			for _, done := range []prometheus.Collector{m.updates, m.announced, m}[:i] {
				r.Unregister(done)
			}
			return err
		}
	}
	m.reg = r
	return nil
}

func (m *metrics) unregister() {
	if m.reg == nil {
		return
	}
	m.reg.Unregister(m.updates)
	m.reg.Unregister(m.announced)
	m.reg.Unregister(m)
	m.reg = nil
}

// Describe implements prometheus.Collector for the per-peer states.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.sessionUp
	ch <- m.bfdUp
}

// Collect implements prometheus.Collector for the per-peer states.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	for _, st := range m.s.Status() {
		ch <- prometheus.MustNewConstMetric(m.sessionUp, prometheus.GaugeValue, b2f(st.Established()), st.Name)
		if st.BFDState != "" {
			ch <- prometheus.MustNewConstMetric(m.bfdUp, prometheus.GaugeValue, b2f(st.BFDState == "up"), st.Name)
		}
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
