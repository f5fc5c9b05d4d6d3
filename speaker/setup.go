package speaker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/internal/kube"
	"github.com/ironlb/ironlb/l2"
	"github.com/ironlb/ironlb/speaker/core"
	"github.com/ironlb/ironlb/speaker/membership"
)

// Options configure a speaker.
type Options struct {
	NodeName string
	// MeshPort is the UDP port of the liveness mesh on the node address.
	MeshPort uint16
	// MeshMaxRate is the mesh's packet budget (membership.Config.MaxRate).
	MeshMaxRate int
	// Key authenticates mesh packets (from a Secret).
	Key []byte
	// Interfaces are announced on when an L2Advertisement names none;
	// default: the interface holding the node's InternalIP.
	Interfaces []string
	Registry   prometheus.Registerer
	// Namespace is the speaker's own; BGP password Secrets are read there,
	// and only there (empty: none are).
	Namespace string
	// SyncTimeout bounds the first list of every watched kind. A
	// DaemonSet rollout has every speaker list every Service at once; on
	// a busy API server that can take minutes, and giving up early means
	// a restart and another list. Default 15 minutes.
	SyncTimeout time.Duration
	// Filter says which Services are ironlb's; it must be the
	// controller's.
	Filter config.ClassFilter
}

// Run runs the speaker until ctx ends, then hands its addresses over
// (no leader election: every node runs one).
func Run(ctx context.Context, cs *kube.Clients, log logr.Logger, opts Options) error {
	var node corev1.Node
	if err := cs.Core.Get().Resource("nodes").Name(opts.NodeName).Do(ctx).Into(&node); err != nil {
		return fmt.Errorf("node %q: %w", opts.NodeName, err)
	}
	nodeIP, ok := netip.Addr{}, false
	for _, a := range node.Status.Addresses {
		if a.Type == corev1.NodeInternalIP {
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				nodeIP, ok = ip, true
				break
			}
		}
	}
	if !ok {
		return fmt.Errorf("node %q has no InternalIP in status.addresses", opts.NodeName)
	}
	if len(opts.Interfaces) == 0 {
		var err error
		opts.Interfaces, err = interfaceOf(nodeIP)
		if err != nil {
			return err
		}
	}

	var meshMetrics *membership.Metrics
	var l2Metrics *l2.Metrics
	if opts.Registry != nil {
		meshMetrics = membership.NewMetrics(opts.Registry)
		l2Metrics = l2.NewMetrics(opts.Registry)
	}
	mesh, err := membership.New(membership.Config{
		Self: opts.NodeName, Bind: netip.AddrPortFrom(nodeIP, opts.MeshPort), Key: opts.Key, MaxRate: opts.MeshMaxRate,
		Logger: log.WithName("mesh"), Metrics: meshMetrics,
	})
	if err != nil {
		return fmt.Errorf("liveness mesh on %s:%d: %w", nodeIP, opts.MeshPort, err)
	}

	trigger := make(chan struct{}, 1)
	poke := func() {
		select {
		case trigger <- struct{}{}:
		default:
		}
	}
	trimmer := NewTrimmer()
	stores, informers, err := watch(cs, opts.Namespace, poke, trimmer.Active)
	if err != nil {
		return err
	}
	events := kube.NewRecorder(cs, "ironlb-speaker", log.WithName("events"))
	nodeV4, nodeV6 := core.NodeAddresses(&node)
	drv := &bgpDriver{log: log.WithName("bgp"), nodeIPv4: nodeV4, nodeV6: nodeV6, reg: opts.Registry}
	rec := &Reconciler{
		Stores: stores, Core: cs.Core, IronLB: cs.IronLB, Self: opts.NodeName, Mesh: mesh, MeshPort: opts.MeshPort,
		Recorder: events, Log: log, Interfaces: opts.Interfaces, Namespace: opts.Namespace, BGP: drv,
		Trimmer: trimmer, Filter: opts.Filter,
	}
	anns := &announcerSet{
		byName: map[string]*l2.Announcer{},
		log:    log.WithName("l2"),
		onStop: poke,
		create: func(iface string) (*l2.Announcer, error) {
			return l2.NewAnnouncer(iface, l2.Options{
				Logger:  log.WithName("l2").WithValues("interface", iface),
				Metrics: l2Metrics,
				OnConflict: func(ip netip.Addr, mac net.HardwareAddr) {
					rec.Conflict(ip, mac)
					rec.RequestRepublish(ctx)
				},
				// The Announced condition follows the wire.
				OnAnnounced: func(netip.Addr) { rec.RequestRepublish(ctx) },
				IsPeer:      rec.IsPeerMAC,
			})
		},
	}
	rec.Announcer = func(iface string) (Announcer, error) {
		return anns.get(iface)
	}
	if opts.Registry != nil {
		rec.Metrics = NewMetrics(opts.Registry, func() map[string]int {
			return map[string]int{"l2": anns.announcing(), "bgp": rec.bgpAnnounced()}
		})
	}

	// The informers and the event writer stop with ctx; the announcers
	// live a little longer, for a graceful handover.
	for _, inf := range informers {
		go inf.RunWithContext(ctx)
	}
	go events.Run(ctx)
	go rec.Trimmer.Run(ctx, 10*time.Second)
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = 15 * time.Minute
	}
	syncCtx, cancelSync := context.WithTimeout(ctx, opts.SyncTimeout)
	synced := make([]cache.InformerSynced, len(informers))
	for i, inf := range informers {
		synced[i] = inf.HasSynced
	}
	ok = cache.WaitForCacheSync(syncCtx.Done(), synced...)
	cancelSync()
	if !ok {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("the API server did not list every watched kind within %s", opts.SyncTimeout)
	}
	log.Info("caches synced", "kinds", len(informers))

	annCtx, annCancel := context.WithCancel(context.Background())
	defer annCancel()
	anns.ctx = annCtx
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-mesh.Changes():
				poke()
			}
		}
	}()
	go func() {
		// The node's BGPNodeStatus follows the sessions (their state
		// changes without any API event).
		var last v1beta1.BGPNodeStatusStatus
		every(ctx, 2*time.Second, func() {
			if err := rec.syncNodeStatus(ctx, &last); err != nil {
				log.Error(err, "BGP node status")
			}
		})
	}()
	go watchLinks(ctx, log, func(iface string) {
		if rec.WaitingFor(iface) {
			poke()
		}
	})
	// Graceful stop, in this order: announcers start yielding, then the
	// mesh tells the peers we leave (Run does on cancel), so the new
	// owner's first announcement already finds us yielding.
	meshCtx, meshCancel := context.WithCancel(context.Background())
	defer meshCancel()
	meshDone := make(chan error, 1)
	// Without the mesh every peer would soon look dead and this node
	// claim every address: if it ends, the speaker ends (and restarts).
	loopCtx, stopLoop := context.WithCancel(ctx)
	defer stopLoop()
	go func() {
		err := mesh.Run(meshCtx)
		if err == nil && meshCtx.Err() == nil {
			err = errors.New("the liveness mesh stopped")
		}
		meshDone <- err
		stopLoop()
	}()

	loop(loopCtx, log, trigger, rec.Pass)

	for _, a := range anns.all() {
		a.BeginHandover()
	}
	meshCancel()
	err = <-meshDone
	// Keep answering until each address's new owner announced it, then
	// withdraw (at most 2 s).
	hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for _, a := range anns.all() {
		wg.Go(func() {
			if left := a.Handover(hctx); left > 0 {
				log.Info("stopping with addresses nobody took over", "count", left)
			}
		})
	}
	wg.Wait()
	// With graceful restart the routers keep our routes meanwhile.
	drv.Stop()
	return err
}

// Pass backoff after a failed pass: doubling from retryMin up to retryMax,
// reset by a pass that succeeds. News (a trigger) runs a pass at once.
const (
	retryMin = 100 * time.Millisecond
	retryMax = time.Minute
)

// loop runs pass on every trigger, and again when pass asks for a retry
// or fails, until ctx ends. Passes never overlap.
func loop(ctx context.Context, log logr.Logger, trigger <-chan struct{}, pass func(context.Context) (time.Duration, error)) {
	timer := time.NewTimer(0) // the first pass
	defer timer.Stop()
	backoff := time.Duration(0)
	for {
		select {
		case <-ctx.Done():
			return
		case <-trigger:
		case <-timer.C:
		}
		retry, err := pass(ctx)
		if err != nil {
			backoff = min(max(2*backoff, retryMin), retryMax)
			retry = backoff
			log.Error(err, "pass failed", "retryIn", retry)
		} else {
			backoff = 0
		}
		timer.Stop()
		if retry > 0 {
			timer.Reset(retry)
		}
	}
}
