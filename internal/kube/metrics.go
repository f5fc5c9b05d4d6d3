package kube

import (
	"context"

	"github.com/prometheus/client_golang/prometheus"
	clientmetrics "k8s.io/client-go/tools/metrics"
)

// RegisterRequestMetrics counts the process's API requests as
// rest_client_requests_total{code,method,host}, the series
// controller-runtime publishes for the controller, so both binaries are
// watched the same way. client-go takes the first registration of a
// process only.
func RegisterRequestMetrics(reg prometheus.Registerer) error {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "rest_client_requests_total",
		Help: "Number of HTTP requests, partitioned by status code, method, and host.",
	}, []string{"code", "method", "host"})
	if err := reg.Register(c); err != nil {
		return err
	}
	clientmetrics.Register(clientmetrics.RegisterOpts{RequestResult: requestResult{c}})
	return nil
}

type requestResult struct{ c *prometheus.CounterVec }

func (r requestResult) Increment(_ context.Context, code, method, host string) {
	r.c.WithLabelValues(code, method, host).Inc()
}
