// Package app holds the start-up pieces both binaries share, so the
// controller and the speaker serve metrics and probes the same way.
package app

import (
	"net/http"
	"net/http/pprof"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
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

// TuneRESTConfig makes a client config fit for ironlb's binaries: it accepts
// protobuf, which the API server sends for built-in kinds (the Service
// watch is the bulk of what both decode) and JSON for CRDs.
// Request bodies stay JSON, since CRD objects cannot be encoded as
// protobuf. No client-side rate limit: API Priority and Fairness is the
// limit.
func TuneRESTConfig(cfg *rest.Config) {
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
}

// Metrics serves /metrics over HTTPS, each scrape authenticated and
// authorized through the API server (TokenReview, SubjectAccessReview):
// no unauthenticated port. insecure (labs only) serves plain HTTP.
// withPprof adds Go's profiler under /debug/pprof/ on the same server,
// behind the same authentication (a reader needs a ClusterRole allowing
// GET on that non-resource URL): it is how an idle speaker's CPU is
// explained without a debugger on the node.
func Metrics(addr string, insecure, withPprof bool) metricsserver.Options {
	o := metricsserver.Options{BindAddress: addr, SecureServing: !insecure}
	if !insecure {
		o.FilterProvider = authFilter
	}
	if withPprof {
		o.ExtraHandlers = map[string]http.Handler{
			"/debug/pprof/":        http.HandlerFunc(pprof.Index),
			"/debug/pprof/cmdline": http.HandlerFunc(pprof.Cmdline),
			"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
			"/debug/pprof/symbol":  http.HandlerFunc(pprof.Symbol),
			"/debug/pprof/trace":   http.HandlerFunc(pprof.Trace),
		}
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
