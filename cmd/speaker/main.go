// Command speaker runs on every node (host network) and announces the
// LoadBalancer addresses this node owns.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/ironlb/ironlb/internal/app"
	"github.com/ironlb/ironlb/internal/netnsrun"
	"github.com/ironlb/ironlb/speaker"
)

var version = "dev"

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "ironlb-speaker:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		nodeName        = flag.String("node-name", os.Getenv("NODE_NAME"), "this node's name (default: $NODE_NAME)")
		meshPort        = flag.Uint("mesh-port", 7946, "UDP port of the speakers' liveness mesh")
		meshMaxRate     = flag.Int("mesh-max-rate", 250, "heartbeats this speaker sends per second at most: past this many peers per 100 ms the mesh's period and timeout stretch (lower it where packets are expensive, at the cost of slower failover on big clusters)")
		keyFile         = flag.String("mesh-key-file", "/etc/ironlb/mesh/key", "file holding the mesh's shared key (mounted from a Secret)")
		apiNetNS        = flag.String("apiserver-netns", "", "labs only: reach the API server from this network namespace (a path like /proc/PID/ns/net), while everything else runs in the speaker's own")
		namespace       = flag.String("namespace", os.Getenv("POD_NAMESPACE"), "the speaker's namespace, where BGP password Secrets live (default: $POD_NAMESPACE)")
		interfaces      = flag.String("interfaces", "", "comma-separated interfaces to announce on when an L2Advertisement names none (default: the node address's)")
		metricsAddr     = flag.String("metrics-bind-address", ":7474", "HTTPS metrics endpoint, authenticated through the API server (\"0\" disables)")
		insecureMetrics = flag.Bool("metrics-insecure", false, "serve metrics over plain HTTP without authentication (only for local labs)")
		pprofOn         = flag.Bool("pprof", false, "also serve Go's profiler under /debug/pprof/ on the metrics endpoint, authenticated like it")
		probeAddr       = flag.String("health-probe-bind-address", ":7475", "address of /healthz and /readyz")
	)
	opts := zap.Options{}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))
	if *nodeName == "" {
		return fmt.Errorf("--node-name (or $NODE_NAME) is required")
	}
	key, err := os.ReadFile(*keyFile)
	if err != nil {
		return fmt.Errorf("mesh key: %w", err)
	}
	key = bytes.TrimSpace(key)
	if len(key) < 16 {
		return fmt.Errorf("mesh key in %s is %d bytes; at least 16 are needed", *keyFile, len(key))
	}

	scheme, err := app.Scheme()
	if err != nil {
		return err
	}
	cfg, err := ctrl.GetConfig()
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	app.TuneRESTConfig(cfg)
	cfg.UserAgent = "ironlb-speaker/" + version
	if ns := *apiNetNS; ns != "" {
		// A lab runs one API server on the host's loopback and each
		// "node" speaker in a namespace of its own: the API connections
		// are the only sockets opened outside the node.
		cfg.Dial = func(ctx context.Context, network, addr string) (net.Conn, error) {
			return netnsrun.In(ns, func() (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, network, addr)
			})
		}
	}
	metricsOpts := app.Metrics(*metricsAddr, *insecureMetrics, *pprofOn)
	mgrOpts := ctrl.Options{Scheme: scheme, Metrics: metricsOpts, HealthProbeBindAddress: *probeAddr}
	mgrOpts.Cache = speaker.CacheOptions(*namespace)
	mgr, err := ctrl.NewManager(cfg, mgrOpts)
	if err != nil {
		return err
	}
	ctx := ctrl.SetupSignalHandler()
	var ifaces []string
	if *interfaces != "" {
		ifaces = strings.Split(*interfaces, ",")
	}
	if err := speaker.Setup(ctx, mgr, speaker.Options{
		NodeName: *nodeName, MeshPort: uint16(*meshPort), MeshMaxRate: *meshMaxRate, Key: key, Namespace: *namespace,
		Interfaces: ifaces, Registry: metrics.Registry,
	}); err != nil {
		return err
	}
	if err := app.AddProbes(mgr); err != nil {
		return err
	}
	ctrl.Log.Info("speaker starting", "version", version, "node", *nodeName)
	return mgr.Start(ctx)
}
