package speaker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/internal/kube"
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

// stripUnread is the informers' transform: every node caches every
// LoadBalancer Service, Node and EndpointSlice of the cluster, so what a
// cached object carries is paid once per object per node. A Service
// becomes a cachedService. Every other object loses its managedFields.
// Of Nodes and EndpointSlices, it keeps of the metadata what the speaker
// reads (name, labels, UID: a BGPNodeStatus's owner; an EndpointSlice's
// labels only its Service's name), and of the rest only the fields the
// plan reads (NodeInfos, peers, ServiceInfos): a Node's images and
// capacity, an endpoint's addresses go. Other kinds lose the
// last-applied annotation. TestStripUnread holds the plan's input
// unchanged by it.
func stripUnread(in any) (any, error) {
	m, ok := in.(metav1.Object)
	if !ok {
		return in, nil
	}
	if s, ok := in.(*corev1.Service); ok {
		return newCachedService(s), nil
	}
	m.SetManagedFields(nil)
	switch in.(type) {
	case *corev1.Node, *discoveryv1.EndpointSlice:
		m.SetOwnerReferences(nil)
		m.SetFinalizers(nil)
		m.SetGenerateName("")
	default:
		if a := m.GetAnnotations(); a != nil {
			if _, ok := a[corev1.LastAppliedConfigAnnotation]; ok {
				a = maps.Clone(a)
				delete(a, corev1.LastAppliedConfigAnnotation)
				m.SetAnnotations(a)
			}
		}
		return in, nil
	}
	switch o := in.(type) {
	case *corev1.Node:
		o.Annotations = nil
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
		o.Annotations = nil
		// Of the labels only the Service's name (the map itself when it
		// is the only one).
		if name, ok := o.Labels[discoveryv1.LabelServiceName]; !ok {
			o.Labels = nil
		} else if len(o.Labels) > 1 {
			o.Labels = map[string]string{discoveryv1.LabelServiceName: name}
		}
		eps := make([]discoveryv1.Endpoint, len(o.Endpoints))
		for i, e := range o.Endpoints {
			eps[i] = discoveryv1.Endpoint{NodeName: e.NodeName, Conditions: discoveryv1.EndpointConditions{Ready: e.Conditions.Ready}}
		}
		o.Endpoints, o.Ports = eps, nil
	}
	return in, nil
}

// cachedService is what a speaker keeps of a LoadBalancer Service. Every
// node caches every one, and a corev1.Service costs about 1.4 KB even
// stripped to what a speaker reads (its structs alone are 640 bytes, a
// one-annotation map 300 more); this about 0.5 KB. It embeds ObjectMeta
// so that the informer can key it, and keeps of it the namespace, name,
// UID (an Event's object), generation, labels (advertisements select
// Services by them) and deletion timestamp.
type cachedService struct {
	metav1.ObjectMeta
	// AllocatedFrom is the v1beta1.AnnotationAllocatedFrom annotation.
	AllocatedFrom string
	// Class is spec.loadBalancerClass (nil: none): a Service of another
	// load balancer's class is not this speaker's to announce or report.
	Class *string
	IPs   []netip.Addr // of status.loadBalancer.ingress
	Local bool         // externalTrafficPolicy: Local
	// Announced is the ironlb.io/Announced condition, nil if none.
	Announced *metav1.Condition
}

func newCachedService(s *corev1.Service) *cachedService {
	c := &cachedService{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: s.Namespace, Name: s.Name, UID: s.UID, Generation: s.Generation,
			Labels: s.Labels, DeletionTimestamp: s.DeletionTimestamp,
		},
		AllocatedFrom: s.Annotations[v1beta1.AnnotationAllocatedFrom],
		Class:         s.Spec.LoadBalancerClass,
		IPs:           config.IngressIPs(s),
		Local:         s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
	}
	if a := meta.FindStatusCondition(s.Status.Conditions, v1beta1.ServiceConditionAnnounced); a != nil {
		cond := *a
		cond.Type = v1beta1.ServiceConditionAnnounced // not the decoded copy
		c.Announced = &cond
	}
	return c
}

// ref is the Service for Events about s.
func (s *cachedService) ref() *corev1.Service {
	return &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name, UID: s.UID}}
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
	nodeV4, nodeV6 := nodeAddresses(&node)
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
			rec.mu.Lock()
			viaBGP := rec.bgpAnnounced
			rec.mu.Unlock()
			return map[string]int{"l2": anns.announcing(), "bgp": viaBGP}
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

// watch starts nothing: it builds the informers of every kind a pass
// reads, each change calling poke (Services, Nodes and EndpointSlices
// only when planInputChanged) and every one calling active (decoding is
// most of what a speaker allocates), and the stores a pass reads them
// from.
func watch(cs *kube.Clients, namespace string, poke, active func()) (*Stores, []cache.SharedIndexInformer, error) {
	var st Stores
	var infs []cache.SharedIndexInformer
	for _, w := range []struct {
		store    *cache.Store
		client   rest.Interface
		resource string
		obj      runtime.Object
		sel      fields.Selector
	}{
		// Only LoadBalancer Services: most of a cluster's are not, and
		// each would cost every node memory and a decode per change.
		{&st.Services, cs.Core, "services", &corev1.Service{},
			fields.OneTermEqualSelector("spec.type", string(corev1.ServiceTypeLoadBalancer))},
		{&st.Nodes, cs.Core, "nodes", &corev1.Node{}, nil},
		{&st.EndpointSlices, cs.Discovery, "endpointslices", &discoveryv1.EndpointSlice{}, nil},
		{&st.Pools, cs.IronLB, "ipaddresspools", &v1beta1.IPAddressPool{}, nil},
		{&st.L2Advertisements, cs.IronLB, "l2advertisements", &v1beta1.L2Advertisement{}, nil},
		{&st.BGPPeers, cs.IronLB, "bgppeers", &v1beta1.BGPPeer{}, nil},
		{&st.BGPAdvertisements, cs.IronLB, "bgpadvertisements", &v1beta1.BGPAdvertisement{}, nil},
		{&st.BFDProfiles, cs.IronLB, "bfdprofiles", &v1beta1.BFDProfile{}, nil},
		{&st.Communities, cs.IronLB, "communities", &v1beta1.Community{}, nil},
		{&st.Secrets, cs.Core, "secrets", &corev1.Secret{}, nil}, // BGP passwords
	} {
		ns := ""
		if w.resource == "secrets" {
			if namespace == "" {
				continue
			}
			ns = namespace // the speaker may read no others
		}
		inf, err := kube.Informer(w.client, w.resource, ns, w.sel, w.obj, stripUnread)
		if err != nil {
			return nil, nil, fmt.Errorf("watch %s: %w", w.resource, err)
		}
		if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
			AddFunc: func(any) { active(); poke() },
			UpdateFunc: func(old, new any) {
				active()
				if planInputChanged(old, new) {
					poke()
				}
			},
			DeleteFunc: func(any) { active(); poke() },
		}); err != nil {
			return nil, nil, fmt.Errorf("watch %s: %w", w.resource, err)
		}
		*w.store = inf.GetStore()
		infs = append(infs, inf)
	}
	return &st, infs, nil
}

// planInputChanged tells the updates that can change the plan. For
// Services, status condition writes (the speakers' own Announced
// condition, the controller's) cannot, and with one write per address
// per change, each waking every speaker for a full pass, they kept large
// clusters busy long after the addresses had settled. For Nodes and
// EndpointSlices, what stripUnread leaves is what the plan reads, so a
// kubelet's status refresh or an endpoint's new pod address on the same
// node wakes nobody. Other kinds always can.
func planInputChanged(oldObj, newObj any) bool {
	o, ok1 := oldObj.(metav1.Object)
	n, ok2 := newObj.(metav1.Object)
	if !ok1 || !ok2 || !maps.Equal(o.GetLabels(), n.GetLabels()) ||
		!maps.Equal(o.GetAnnotations(), n.GetAnnotations()) ||
		!o.GetDeletionTimestamp().Equal(n.GetDeletionTimestamp()) {
		return true
	}
	switch o := oldObj.(type) {
	case *cachedService:
		n, ok := newObj.(*cachedService)
		return !ok || o.AllocatedFrom != n.AllocatedFrom || o.Local != n.Local || !slices.Equal(o.IPs, n.IPs) ||
			!ptr.Equal(o.Class, n.Class)
	case *corev1.Node:
		n, ok := newObj.(*corev1.Node)
		return !ok || !equality.Semantic.DeepEqual(o.Spec, n.Spec) || !equality.Semantic.DeepEqual(o.Status, n.Status)
	case *discoveryv1.EndpointSlice:
		n, ok := newObj.(*discoveryv1.EndpointSlice)
		return !ok || !equality.Semantic.DeepEqual(o.Endpoints, n.Endpoints)
	}
	return true
}

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
