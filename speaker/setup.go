package speaker

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
	"sigs.k8s.io/controller-runtime/pkg/source"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/l2"
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
	// Namespace is the speaker's own; BGP password Secrets are read there
	// (the manager's cache must watch Secrets in it, and only there).
	Namespace string
}

// CacheOptions are the manager cache settings the speaker needs. Secrets
// are cached in namespace only (the speaker may read no others; empty:
// none are watched). Every object is kept without what the speaker never
// reads (stripUnread): every node caches every Service, Node and
// EndpointSlice of the cluster, so what a cached object carries is paid
// once per object per node.
func CacheOptions(namespace string) cache.Options {
	o := cache.Options{DefaultTransform: stripUnread}
	if namespace != "" {
		o.ByObject = map[client.Object]cache.ByObject{
			&corev1.Secret{}: {Namespaces: map[string]cache.Config{namespace: {}}},
		}
	}
	return o
}

// stripUnread is the cache transform of CacheOptions. It keeps, of every
// object, its identity, labels and annotations (minus managedFields and
// the last-applied annotation), and of Services, Nodes and EndpointSlices
// only the fields the plan reads (ServiceInfos, NodeInfos, peers and the
// Announced condition's bookkeeping): a Service's ports and selector, a
// Node's images and capacity, an endpoint's addresses go. TestStripUnread
// holds the plan's input unchanged by it.
func stripUnread(in any) (any, error) {
	if o, ok := in.(metav1.Object); ok {
		o.SetManagedFields(nil)
		if a := o.GetAnnotations(); a != nil {
			if _, ok := a[corev1.LastAppliedConfigAnnotation]; ok {
				a = maps.Clone(a)
				delete(a, corev1.LastAppliedConfigAnnotation)
				o.SetAnnotations(a)
			}
		}
	}
	switch o := in.(type) {
	case *corev1.Service:
		o.Spec = corev1.ServiceSpec{Type: o.Spec.Type, ExternalTrafficPolicy: o.Spec.ExternalTrafficPolicy}
	case *corev1.Node:
		o.Spec = corev1.NodeSpec{Unschedulable: o.Spec.Unschedulable}
		st := corev1.NodeStatus{Addresses: o.Status.Addresses}
		for _, c := range o.Status.Conditions {
			// Only the status: the heartbeat times change every few
			// minutes and would make each such update look like news.
			if c.Type == corev1.NodeReady || c.Type == corev1.NodeNetworkUnavailable {
				st.Conditions = append(st.Conditions, corev1.NodeCondition{Type: c.Type, Status: c.Status})
			}
		}
		o.Status = st
	case *discoveryv1.EndpointSlice:
		eps := make([]discoveryv1.Endpoint, len(o.Endpoints))
		for i, e := range o.Endpoints {
			eps[i] = discoveryv1.Endpoint{NodeName: e.NodeName, Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}}
		}
		o.Endpoints, o.Ports = eps, nil
	}
	return in, nil
}

// Setup adds the speaker to mgr (no leader election: every node runs one).
func Setup(ctx context.Context, mgr ctrl.Manager, opts Options) error {
	log := ctrl.Log.WithName("speaker")
	var node corev1.Node
	if err := mgr.GetAPIReader().Get(ctx, types.NamespacedName{Name: opts.NodeName}, &node); err != nil {
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

	trigger := make(chan event.GenericEvent, 1)
	poke := func() {
		select {
		case trigger <- event.GenericEvent{Object: &corev1.Node{}}:
		default:
		}
	}
	nodeV4, nodeV6 := nodeAddresses(&node)
	drv := &bgpDriver{log: log.WithName("bgp"), nodeIPv4: nodeV4, nodeV6: nodeV6, reg: opts.Registry}
	rec := &Reconciler{
		Client: mgr.GetClient(), Self: opts.NodeName, Mesh: mesh, MeshPort: opts.MeshPort,
		Recorder: mgr.GetEventRecorder("ironlb-speaker"), Log: log, Interfaces: opts.Interfaces,
		Namespace: opts.Namespace, BGP: drv,
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
			rec.mu.Lock()
			viaBGP := rec.bgpAnnounced
			rec.mu.Unlock()
			return map[string]int{"l2": anns.announcing(), "bgp": viaBGP}
		})
	}

	// The mesh lives as long as the manager; the announcers a little
	// longer, for a graceful handover.
	annCtx, annCancel := context.WithCancel(context.Background())
	anns.ctx = annCtx
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		defer annCancel()
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
			t := time.NewTicker(2 * time.Second)
			defer t.Stop()
			for {
				select {
				case <-ctx.Done():
					return
				case <-t.C:
					if err := rec.syncNodeStatus(ctx, &last); err != nil {
						log.Error(err, "BGP node status")
					}
				}
			}
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
		go func() {
			<-ctx.Done()
			for _, a := range anns.all() {
				a.BeginHandover()
			}
			meshCancel()
		}()
		err := mesh.Run(meshCtx)
		// Keep answering until each address's new owner announced it,
		// then withdraw (at most 2 s).
		hctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for _, a := range anns.all() {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if left := a.Handover(hctx); left > 0 {
					log.Info("stopping with addresses nobody took over", "count", left)
				}
			}()
		}
		wg.Wait()
		// With graceful restart the routers keep our routes meanwhile.
		drv.Stop()
		return err
	})); err != nil {
		return err
	}

	all := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "plan"}}}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("speaker").
		// A DaemonSet rollout has every speaker list every Service at
		// once; on a busy API server that can take minutes, and giving up
		// after the default 2 minutes means a restart and another list.
		WithOptions(controller.Options{CacheSyncTimeout: 15 * time.Minute}).
		WatchesRawSource(source.Channel(trigger, all)).
		Watches(&corev1.Service{}, all, builder.WithPredicates(planInputChanged)).
		Watches(&corev1.Node{}, all, builder.WithPredicates(planInputChanged)).
		Watches(&discoveryv1.EndpointSlice{}, all, builder.WithPredicates(planInputChanged))
	if opts.Namespace != "" {
		b = b.Watches(&corev1.Secret{}, all) // BGP passwords
	}
	for _, o := range []client.Object{&v1beta1.IPAddressPool{}, &v1beta1.L2Advertisement{}, &v1beta1.BGPPeer{}, &v1beta1.BGPAdvertisement{}, &v1beta1.BFDProfile{}, &v1beta1.Community{}} {
		b = b.Watches(o, all)
	}
	return b.Complete(rec)
}

// planInputChanged passes the Service, Node and EndpointSlice updates
// that can change the plan. For Services, status condition writes (the
// speakers' own Announced condition, the controller's) cannot, and with
// one write per address per change, each waking every speaker for a full
// pass, they kept large clusters busy long after the addresses had
// settled. For Nodes and EndpointSlices, what stripUnread leaves is what
// the plan reads, so a kubelet's status refresh or an endpoint's new pod
// address on the same node wakes nobody.
var planInputChanged = predicate.Funcs{UpdateFunc: func(e event.UpdateEvent) bool {
	if !maps.Equal(e.ObjectOld.GetLabels(), e.ObjectNew.GetLabels()) ||
		!maps.Equal(e.ObjectOld.GetAnnotations(), e.ObjectNew.GetAnnotations()) ||
		!e.ObjectOld.GetDeletionTimestamp().Equal(e.ObjectNew.GetDeletionTimestamp()) {
		return true
	}
	switch o := e.ObjectOld.(type) {
	case *corev1.Service:
		n, ok := e.ObjectNew.(*corev1.Service)
		return !ok || !equality.Semantic.DeepEqual(o.Spec, n.Spec) ||
			!equality.Semantic.DeepEqual(o.Status.LoadBalancer, n.Status.LoadBalancer)
	case *corev1.Node:
		n, ok := e.ObjectNew.(*corev1.Node)
		return !ok || !equality.Semantic.DeepEqual(o.Spec, n.Spec) || !equality.Semantic.DeepEqual(o.Status, n.Status)
	case *discoveryv1.EndpointSlice:
		n, ok := e.ObjectNew.(*discoveryv1.EndpointSlice)
		return !ok || !equality.Semantic.DeepEqual(o.Endpoints, n.Endpoints)
	}
	return true
}}

// announcerSet keeps one announcer per interface, created on first use
// and forgotten when it stops for good (its interface went away), so that
// a later pass creates it anew once the interface is back.
type announcerSet struct {
	ctx    context.Context // the announcers' Run context; set before use
	create func(iface string) (*l2.Announcer, error)
	onStop func()
	log    logr.Logger

	mu     sync.Mutex
	byName map[string]*l2.Announcer
}

func (s *announcerSet) get(iface string) (*l2.Announcer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.byName[iface]; ok {
		return a, nil
	}
	a, err := s.create(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", iface, err)
	}
	s.byName[iface] = a
	go func() {
		err := a.Run(s.ctx)
		_ = a.Close()
		s.mu.Lock()
		if s.byName[iface] == a {
			delete(s.byName, iface)
		}
		s.mu.Unlock()
		if s.ctx.Err() == nil {
			s.log.Error(err, "announcer stopped; it is recreated when the interface is usable again", "interface", iface)
			s.onStop()
		}
	}()
	return a, nil
}

func (s *announcerSet) all() []*l2.Announcer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*l2.Announcer, 0, len(s.byName))
	for _, a := range s.byName {
		out = append(out, a)
	}
	return out
}

// announcing counts the distinct addresses answered on any interface.
func (s *announcerSet) announcing() int {
	ips := map[netip.Addr]bool{}
	for _, a := range s.all() {
		for _, ip := range a.Announcing() {
			ips[ip] = true
		}
	}
	return len(ips)
}

// watchLinks calls changed with the name of every link that changes, so
// an interface that appears or comes up later is announced on without
// waiting for the retry.
func watchLinks(ctx context.Context, log logr.Logger, changed func(iface string)) {
	opts := netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
		log.V(1).Info("link updates", "error", err.Error())
	}}
	updates := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(updates, ctx.Done(), opts); err != nil {
		log.Error(err, "cannot watch links; interfaces are retried periodically")
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				return
			}
			changed(u.Attrs().Name)
		}
	}
}

// interfaceOf finds the interface holding ip.
func interfaceOf(ip netip.Addr) ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == ip {
				return []string{ifi.Name}, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface holds the node address %s", ip)
}
