// Command controller assigns EXTERNAL-IPs to LoadBalancer Services from
// ironlb IPAddressPools. Run two replicas: one leads, the other waits.
package main

import (
	"flag"
	"fmt"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/klog/v2"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/controller"
	"github.com/ironlb/ironlb/internal/app"
)

// version is stamped at build time (-ldflags -X main.version=...).
var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ironlb-controller:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		metricsAddr     = flag.String("metrics-bind-address", ":7472", "HTTPS metrics endpoint, authenticated and authorized through the API server (\"0\" disables)")
		insecureMetrics = flag.Bool("metrics-insecure", false, "serve metrics over plain HTTP without authentication (only for local labs)")
		pprofOn         = flag.Bool("pprof", false, "also serve Go's profiler under /debug/pprof/ on the metrics endpoint, authenticated like it")
		probeAddr       = flag.String("health-probe-bind-address", ":7473", "address of /healthz and /readyz")
		leaderElect     = flag.Bool("leader-elect", true, "elect one active replica")
		leaderNS        = flag.String("leader-election-namespace", os.Getenv("POD_NAMESPACE"), "namespace of the leader election Lease (default: the pod's namespace)")
		defaultClass    = flag.Bool("default-class", true, "also handle LoadBalancer Services that set no spec.loadBalancerClass")
		workers         = flag.Int("workers", 16, "Services reconciled concurrently")
		qps             = flag.Float64("kube-api-qps", -1, "client-side QPS limit towards the API server (-1: none, rely on API Priority and Fairness)")
		burst           = flag.Int("kube-api-burst", 0, "client-side burst towards the API server")
		leaseDuration   = flag.Duration("leader-elect-lease-duration", 15*time.Second, "how long a crashed leader's lease blocks the other replicas")
		renewDeadline   = flag.Duration("leader-elect-renew-deadline", 10*time.Second, "how long the leader retries renewing before it gives up leadership")
		retryPeriod     = flag.Duration("leader-elect-retry-period", 2*time.Second, "how often replicas try to acquire or renew the lease")
	)
	logOpts := app.BindLogFlags(flag.CommandLine)
	flag.Parse()
	logger, err := logOpts.Logger()
	if err != nil {
		return err
	}
	ctrl.SetLogger(logger)
	klog.SetLogger(logger) // client-go's own messages, in the same format
	log := ctrl.Log.WithName("setup")

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	if err := v1beta1.AddToScheme(scheme); err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	app.TuneRESTConfig(cfg)
	cfg.QPS, cfg.Burst = float32(*qps), *burst
	cfg.UserAgent = "ironlb-controller/" + version

	// Metrics and probes are served by package app, as the speaker's
	// are, on every replica (not only the leader).
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        scheme,
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		LeaderElection:                *leaderElect,
		LeaderElectionID:              "ironlb-controller",
		LeaderElectionNamespace:       *leaderNS,
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 leaseDuration,
		RenewDeadline:                 renewDeadline,
		RetryPeriod:                   retryPeriod,
	})
	if err != nil {
		return fmt.Errorf("manager: %w", err)
	}
	if _, err := controller.Setup(mgr, controller.Options{
		Filter:   config.ClassFilter{Default: *defaultClass},
		Workers:  *workers,
		Registry: metrics.Registry,
	}); err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	if err := app.StartMetrics(ctx, app.MetricsOptions{
		Addr: *metricsAddr, Insecure: *insecureMetrics, Pprof: *pprofOn, Gatherer: metrics.Registry,
		Config: cfg, HTTPClient: mgr.GetHTTPClient(), Log: ctrl.Log,
	}); err != nil {
		return err
	}
	if err := app.StartProbes(ctx, *probeAddr, ctrl.Log); err != nil {
		return err
	}
	log.Info("starting", "version", version, "defaultClass", *defaultClass, "workers", *workers)
	return mgr.Start(ctx)
}
