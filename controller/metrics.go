package controller

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the controller's Prometheus series. Reconcile durations come
// from controller-runtime (controller_runtime_reconcile_time_seconds).
type Metrics struct {
	PoolTotal   *prometheus.GaugeVec
	PoolInUse   *prometheus.GaugeVec
	Allocations *prometheus.CounterVec
	StatusWrite prometheus.Histogram
}

// NewMetrics creates the series and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		PoolTotal: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ironlb_pool_addresses_total", Help: "Addresses in an IPAddressPool (saturates at 2^63 for large IPv6 pools).",
		}, []string{"pool", "family"}),
		PoolInUse: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "ironlb_pool_addresses_in_use", Help: "Addresses of an IPAddressPool assigned to Services.",
		}, []string{"pool", "family"}),
		Allocations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ironlb_allocations_total", Help: "Allocation outcomes written to Services, by condition reason.",
		}, []string{"result"}),
		StatusWrite: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "ironlb_service_status_write_seconds", Help: "Time to write a Service's status.",
			Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.PoolTotal, m.PoolInUse, m.Allocations, m.StatusWrite)
	}
	return m
}

func (m *Metrics) observe(result string) {
	m.Allocations.WithLabelValues(result).Inc()
}
