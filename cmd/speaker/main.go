// Command speaker runs on every node (host network) and announces the
// LoadBalancer addresses this node owns.
package main

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/internal/app"
	"github.com/ironlb/ironlb/internal/kube"
	"github.com/ironlb/ironlb/speaker"
)

var version = "dev"

func main() {
	// Heap profiling keeps a table of sampled allocation stacks that
	// grows for the process's life; only --pprof can read it, at the
	// runtime's rate (GODEBUG=memprofilerate=N sets another).
	profileRate := runtime.MemProfileRate
	runtime.MemProfileRate = 0
	if os.Getenv("GOGC") == "" {
		// The heap may grow to 1.5 times what is live between
		// collections, not twice: the speaker's memory is paid on every
		// node, and at idle it allocates so little that collecting more
		// often costs next to no CPU (docs/scale.md).
		debug.SetGCPercent(50)
	}
	if err := run(profileRate); err != nil {
		fmt.Fprintln(os.Stderr, "ironlb-speaker:", err)
		os.Exit(1)
	}
}

func run(profileRate int) error {
	var (
		nodeName        = flag.String("node-name", os.Getenv("NODE_NAME"), "this node's name (default: $NODE_NAME)")
		kubeconfig      = flag.String("kubeconfig", os.Getenv("KUBECONFIG"), "kubeconfig file (default: $KUBECONFIG, else the in-cluster ServiceAccount)")
		meshPort        = flag.Uint("mesh-port", 7946, "UDP port of the speakers' liveness mesh")
		meshMaxRate     = flag.Int("mesh-max-rate", 250, "heartbeats this speaker sends per second at most: past this many peers per 100 ms the mesh's period and timeout stretch (lower it where packets are expensive, at the cost of slower failover on big clusters)")
		keyFile         = flag.String("mesh-key-file", "/etc/ironlb/mesh/key", "file holding the mesh's shared key (mounted from a Secret)")
		namespace       = flag.String("namespace", os.Getenv("POD_NAMESPACE"), "the speaker's namespace, where BGP password Secrets live (default: $POD_NAMESPACE)")
		interfaces      = flag.String("interfaces", "", "comma-separated interfaces to announce on when an L2Advertisement names none (default: the node address's)")
		metricsAddr     = flag.String("metrics-bind-address", ":7474", "HTTPS metrics endpoint, authenticated through the API server (\"0\" disables)")
		insecureMetrics = flag.Bool("metrics-insecure", false, "serve metrics over plain HTTP without authentication (only for local labs)")
		pprofOn         = flag.Bool("pprof", false, "also serve Go's profiler under /debug/pprof/ on the metrics endpoint, authenticated like it")
		probeAddr       = flag.String("health-probe-bind-address", ":7475", "address of /healthz and /readyz")
		defaultClass    = flag.Bool("default-class", true, "also handle LoadBalancer Services that set no spec.loadBalancerClass (must match the controller's)")
		syncTimeout     = flag.Duration("cache-sync-timeout", 15*time.Minute, "give up (and exit) when the first list of every watched kind takes longer")
	)
	logOpts := app.BindLogFlags(flag.CommandLine)
	flag.Parse()
	if *pprofOn {
		runtime.MemProfileRate = profileRate
	}
	log, err := logOpts.Logger()
	if err != nil {
		return err
	}
	klog.SetLogger(log) // client-go's own messages, in the same format
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

	var cfg *rest.Config
	if *kubeconfig != "" {
		cfg, err = clientcmd.BuildConfigFromFlags("", *kubeconfig)
	} else {
		cfg, err = rest.InClusterConfig()
	}
	if err != nil {
		return fmt.Errorf("kubeconfig: %w", err)
	}
	app.TuneRESTConfig(cfg)
	cfg.UserAgent = "ironlb-speaker/" + version
	// The API server gzips watch streams too, and each open one then
	// holds a decompressor (about 40 KiB, ten watches) and costs CPU on
	// both ends, on every node; the speaker's traffic is small.
	cfg.DisableCompression = true
	cs, err := kube.NewClients(cfg)
	if err != nil {
		return err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if err := kube.RegisterRequestMetrics(reg); err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := app.StartMetrics(ctx, app.MetricsOptions{
		Addr: *metricsAddr, Insecure: *insecureMetrics, Pprof: *pprofOn, Gatherer: reg,
		Config: cfg, HTTPClient: cs.HTTPClient(), Log: log,
	}); err != nil {
		return err
	}
	if err := app.StartProbes(ctx, *probeAddr, log); err != nil {
		return err
	}
	var ifaces []string
	if *interfaces != "" {
		ifaces = strings.Split(*interfaces, ",")
	}
	log.Info("speaker starting", "version", version, "node", *nodeName)
	return speaker.Run(ctx, cs, log.WithName("speaker"), speaker.Options{
		NodeName: *nodeName, MeshPort: uint16(*meshPort), MeshMaxRate: *meshMaxRate, Key: key, Namespace: *namespace,
		Interfaces: ifaces, Registry: reg, SyncTimeout: *syncTimeout, Filter: config.ClassFilter{Default: *defaultClass},
	})
}
