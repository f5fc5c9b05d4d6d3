// Package app holds the start-up pieces both binaries share, so the
// controller and the speaker serve metrics and probes the same way.
package app

import (
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// Scheme knows the built-in kinds and ironlb's.
func Scheme() (*runtime.Scheme, error) {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		return nil, err
	}
	if err := v1beta1.AddToScheme(s); err != nil {
		return nil, err
	}
	return s, nil
}

// Metrics serves /metrics over HTTPS, each scrape authenticated and
// authorized through the API server (TokenReview, SubjectAccessReview):
// no unauthenticated port. insecure (labs only) serves plain HTTP.
func Metrics(addr string, insecure bool) metricsserver.Options {
	o := metricsserver.Options{BindAddress: addr, SecureServing: !insecure}
	if !insecure {
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	return o
}

// AddProbes adds /healthz and /readyz.
func AddProbes(mgr ctrl.Manager) error {
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	return mgr.AddReadyzCheck("ping", healthz.Ping)
}
