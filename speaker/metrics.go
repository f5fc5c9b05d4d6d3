package speaker

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the speaker's own series (the announcers and the mesh have
// theirs). A nil *Metrics counts nothing.
type Metrics struct {
	// Takeovers counts addresses this node started announcing that
	// another node announced before: cause "failover" when that node is
	// gone (crash, stop, partition), "rebalance" when it is alive (a node
	// joined, eligibility or endpoints changed).
	Takeovers *prometheus.CounterVec
}

// NewMetrics registers the speaker's series with reg. announced counts,
// at scrape time, the addresses this node announces per protocol ("l2",
// "bgp"): read from the announcers themselves, so the gauge shows what is
// on the wire rather than what was planned.
func NewMetrics(reg prometheus.Registerer, announced func() map[string]int) *Metrics {
	m := &Metrics{
		Takeovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "ironlb", Subsystem: "l2", Name: "takeovers_total",
			Help: "Addresses this node took over from another node, by cause (failover: the previous owner is gone; rebalance: it is alive).",
		}, []string{"cause"}),
	}
	m.Takeovers.WithLabelValues("failover")
	m.Takeovers.WithLabelValues("rebalance")
	reg.MustRegister(m.Takeovers, &announcedCollector{
		desc:  prometheus.NewDesc("ironlb_announced", "Addresses this node announces, by protocol.", []string{"protocol"}, nil),
		count: announced,
	})
	return m
}

func (m *Metrics) takeover(cause string) {
	if m != nil {
		m.Takeovers.WithLabelValues(cause).Inc()
	}
}

// announcedCollector reads the announced counts when scraped.
type announcedCollector struct {
	desc  *prometheus.Desc
	count func() map[string]int
}

func (c *announcedCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *announcedCollector) Collect(ch chan<- prometheus.Metric) {
	counts := c.count()
	for _, proto := range []string{"l2", "bgp"} {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(counts[proto]), proto)
	}
}
