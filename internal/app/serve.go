package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"k8s.io/client-go/rest"
	certutil "k8s.io/client-go/util/cert"
)

// MetricsOptions configure StartMetrics.
type MetricsOptions struct {
	// Addr is the listen address; "" or "0" serves nothing.
	Addr string
	// Insecure serves plain HTTP without authentication (labs only).
	Insecure bool
	// Pprof adds Go's profiler under /debug/pprof/, behind the same
	// authentication (a reader needs a ClusterRole allowing GET on that
	// non-resource URL): it is how an idle speaker's CPU is explained
	// without a debugger on the node.
	Pprof    bool
	Gatherer prometheus.Gatherer
	// Config and HTTPClient reach the API server for the reviews.
	Config     *rest.Config
	HTTPClient *http.Client
	Log        logr.Logger
}

// StartMetrics serves /metrics over HTTPS with a self-signed certificate,
// each scrape authenticated and authorized through the API server
// (TokenReview, SubjectAccessReview): no unauthenticated port. It returns
// once listening (an error if it can't) and serves until ctx ends.
func StartMetrics(ctx context.Context, o MetricsOptions) error {
	if o.Addr == "" || o.Addr == "0" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{
		// A scrape is a few kB; gzip would keep a compressor of over a
		// megabyte per concurrent scrape in a pool between scrapes.
		DisableCompression: true,
	}))
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	var h http.Handler = mux
	l, err := net.Listen("tcp", o.Addr)
	if err != nil {
		return fmt.Errorf("metrics endpoint %s: %w", o.Addr, err)
	}
	if !o.Insecure {
		if h, err = authFilter(o.Config, o.HTTPClient, o.Log, mux); err != nil {
			_ = l.Close()
			return err
		}
		cert, err := selfSigned()
		if err != nil {
			_ = l.Close()
			return fmt.Errorf("metrics endpoint certificate: %w", err)
		}
		l = tls.NewListener(l, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	}
	serve(ctx, o.Log.WithName("metrics"), l, h)
	o.Log.Info("serving metrics", "address", l.Addr().String(), "secure", !o.Insecure)
	return nil
}

// selfSigned makes the metrics endpoint's certificate. Scrapers trust it
// by its ServiceAccount-authenticated answers, not by a CA, as with
// controller-runtime's default.
func selfSigned() (tls.Certificate, error) {
	certPEM, keyPEM, err := certutil.GenerateSelfSignedCertKey("localhost", nil, nil)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(certPEM, keyPEM)
}

// StartProbes serves /healthz and /readyz on addr ("" or "0": nothing):
// a process that answers is alive and ready, as with controller-runtime's
// ping check.
func StartProbes(ctx context.Context, addr string, log logr.Logger) error {
	if addr == "" || addr == "0" {
		return nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("health probe endpoint %s: %w", addr, err)
	}
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok")) })
	mux := http.NewServeMux()
	mux.Handle("/healthz", ok)
	mux.Handle("/readyz", ok)
	serve(ctx, log.WithName("probes"), l, mux)
	return nil
}

// serve runs an HTTP server on l until ctx ends.
func serve(ctx context.Context, log logr.Logger, l net.Listener, h http.Handler) {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error(err, "server stopped")
		}
	}()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
}
