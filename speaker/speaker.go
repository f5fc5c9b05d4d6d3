// Package speaker is the per-node agent: it decides (with package announce)
// which LoadBalancer addresses this node announces and drives the layer-2
// announcers. Everything it needs from the API server comes from informer
// caches, so a speaker that loses the API server keeps announcing what it
// announced, and keeps failing over on its own liveness mesh.
package speaker

import (
	"context"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/controller"
	"github.com/ironlb/ironlb/speaker/announce"
)

// ExcludeLabel keeps a node from announcing any LoadBalancer address.
const ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

// Announcer is what the speaker needs from a layer-2 announcer.
type Announcer interface {
	// SetWithTakeover announces ips; new ones for which takeover is true
	// skip the probe (their previous owner is known gone).
	SetWithTakeover(ips []netip.Addr, takeover func(netip.Addr) bool)
	Announcing() []netip.Addr
}

// Liveness tells which speakers are alive.
type Liveness interface {
	Alive() map[string]bool
	SetPeers(map[string]netip.AddrPort)
}

// Reconciler recomputes the cluster-wide plan on every change and applies
// this node's part of it.
type Reconciler struct {
	Client   client.Client
	Self     string
	Mesh     Liveness
	MeshPort uint16
	Recorder events.EventRecorder
	// Announcers returns the announcer for an interface ("" = the node's
	// default interfaces), creating it on first use.
	Announcers func(iface string) (Announcer, error)
	Log        logr.Logger

	mu        sync.Mutex
	conflicts map[netip.Addr]net.HardwareAddr
	active    map[string]bool // interfaces with a non-empty set last time
	// owners is the previous plan's owner of each address: an address
	// another speaker owned is a takeover, announced without a probe. If
	// that speaker is dead there is nobody to ask; if it is alive it
	// computes the same plan and releases the address within moments, and
	// a probe would only see its last answers and back off for seconds.
	owners map[netip.Addr]string

	// Condition writes go through one background writer, so a reconcile
	// (and with it a failover) never waits on the API server: pending
	// holds the newest state to publish, publishing says the writer runs.
	pubMu      sync.Mutex
	pending    *publication
	publishing bool
}

type publication struct {
	svcs  []corev1.Service
	plan  announce.L2Plan
	alive map[string]bool
}

// publish hands the newest state to the background writer.
func (r *Reconciler) publish(ctx context.Context, p *publication) {
	r.pubMu.Lock()
	r.pending = p
	if r.publishing {
		r.pubMu.Unlock()
		return
	}
	r.publishing = true
	r.pubMu.Unlock()
	go func() {
		for {
			r.pubMu.Lock()
			next := r.pending
			r.pending = nil
			if next == nil {
				r.publishing = false
				r.pubMu.Unlock()
				return
			}
			r.pubMu.Unlock()
			r.writeConditions(ctx, next.svcs, next.plan, next.alive)
		}
	}()
}

// Conflict records an address another host claims; the next pass reports
// it on the Service.
func (r *Reconciler) Conflict(ip netip.Addr, mac net.HardwareAddr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conflicts == nil {
		r.conflicts = map[netip.Addr]net.HardwareAddr{}
	}
	r.conflicts[ip] = mac
}

// Reconcile runs one pass. It is keyed on nothing: the plan is global.
func (r *Reconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	objs, err := controller.ReadConfig(ctx, r.Client)
	if err != nil {
		return ctrl.Result{}, err
	}
	cfg, _ := config.Parse(objs)
	var nodeList corev1.NodeList
	if err := r.Client.List(ctx, &nodeList); err != nil {
		return ctrl.Result{}, err
	}
	var svcList corev1.ServiceList
	if err := r.Client.List(ctx, &svcList); err != nil {
		return ctrl.Result{}, err
	}
	var epSlices discoveryv1.EndpointSliceList
	if err := r.Client.List(ctx, &epSlices); err != nil {
		return ctrl.Result{}, err
	}

	r.Mesh.SetPeers(peers(nodeList.Items, r.MeshPort))
	alive := r.Mesh.Alive()
	nodes := NodeInfos(nodeList.Items, alive)
	svcs := ServiceInfos(svcList.Items, epSlices.Items)
	for i := range svcs {
		if p := cfg.PoolOf(svcs[i].IPs[0]); p != nil {
			svcs[i].Pool = p.Name
		}
	}
	plan := announce.PlanL2(cfg, nodes, svcs)

	mine := plan.ForNode(r.Self)
	r.mu.Lock()
	prevOwners := r.owners
	r.owners = make(map[netip.Addr]string, len(plan.Addresses))
	for ip, a := range plan.Addresses {
		r.owners[ip] = a.Node
	}
	prevActive := r.active
	r.active = map[string]bool{}
	for iface := range mine {
		r.active[iface] = true
	}
	r.mu.Unlock()
	for iface := range prevActive {
		if _, still := mine[iface]; !still {
			mine[iface] = nil // release what this interface announced
		}
	}
	for iface, ips := range mine {
		a, err := r.Announcers(iface)
		if err != nil {
			r.Log.Error(err, "no announcer", "interface", iface)
			continue
		}
		a.SetWithTakeover(ips, func(ip netip.Addr) bool {
			prev, ok := prevOwners[ip]
			return ok && prev != r.Self
		})
		// A conflict is over once the address is announced again (or
		// no longer ours).
		announcing := a.Announcing()
		r.mu.Lock()
		for ip := range r.conflicts {
			if slices.Contains(announcing, ip) || !slices.Contains(ips, ip) {
				delete(r.conflicts, ip)
			}
		}
		r.mu.Unlock()
	}
	r.publish(ctx, &publication{svcs: svcList.Items, plan: plan, alive: alive})
	return ctrl.Result{}, nil
}

// writeConditions publishes ironlb.io/Announced. The owner of an address
// writes it for that address's Services; for Services nobody announces,
// the alive speaker with the lowest name does, so every Service has one
// writer.
func (r *Reconciler) writeConditions(ctx context.Context, svcs []corev1.Service, plan announce.L2Plan, alive map[string]bool) {
	var aliveNames []string
	for n, ok := range alive {
		if ok {
			aliveNames = append(aliveNames, n)
		}
	}
	sort.Strings(aliveNames)
	reporter := len(aliveNames) > 0 && aliveNames[0] == r.Self
	r.mu.Lock()
	conflicts := maps.Clone(r.conflicts)
	r.mu.Unlock()
	for i := range svcs {
		s := &svcs[i]
		ips := controller.IngressIPs(s)
		if len(ips) == 0 {
			continue
		}
		key := s.Namespace + "/" + s.Name
		var cond *metav1.Condition
		var mine []string
		for _, ip := range ips {
			if a, ok := plan.Addresses[ip]; ok && a.Node == r.Self {
				where := "all interfaces"
				if len(a.Interfaces) > 0 {
					where = strings.Join(a.Interfaces, ",")
				}
				proto := "ARP"
				if ip.Is6() {
					proto = "NDP"
				}
				mine = append(mine, fmt.Sprintf("%s on %s (%s)", ip, where, proto))
				if mac, bad := conflicts[ip]; bad {
					cond = &metav1.Condition{Status: metav1.ConditionFalse, Reason: "AddressConflict",
						Message: fmt.Sprintf("another host (MAC %s) answers for %s; not announced", mac, ip)}
				}
			}
		}
		switch {
		case cond != nil:
		case len(mine) > 0:
			cond = &metav1.Condition{Status: metav1.ConditionTrue, Reason: "Layer2",
				Message: fmt.Sprintf("announced by node %s: %s", r.Self, strings.Join(mine, "; "))}
		case plan.NotAnnounced[key] != "" && reporter:
			cond = &metav1.Condition{Status: metav1.ConditionFalse, Reason: plan.NotAnnounced[key], Message: notAnnouncedMessage(plan.NotAnnounced[key])}
		default:
			continue
		}
		cond.Type = v1beta1.ServiceConditionAnnounced
		cond.ObservedGeneration = s.Generation
		old := meta.FindStatusCondition(s.Status.Conditions, cond.Type)
		if old != nil && old.Status == cond.Status && old.Reason == cond.Reason && old.Message == cond.Message {
			continue
		}
		cond.LastTransitionTime = metav1.Now()
		patched := s.DeepCopy()
		meta.SetStatusCondition(&patched.Status.Conditions, *cond)
		// A strategic merge of conditions by type touches only ours: the
		// controller's condition and ingress are left alone.
		if err := r.Client.Status().Patch(ctx, patched, client.StrategicMergeFrom(s)); err != nil {
			r.Log.Error(err, "write Announced condition", "service", key)
			continue
		}
		typ := corev1.EventTypeNormal
		if cond.Status != metav1.ConditionTrue {
			typ = corev1.EventTypeWarning
		}
		reason := "Announcing"
		if cond.Status != metav1.ConditionTrue {
			reason = cond.Reason
		}
		r.Recorder.Eventf(s, nil, typ, reason, "Announce", "%s", cond.Message)
	}
}

func notAnnouncedMessage(reason string) string {
	switch reason {
	case announce.ReasonNoAdvertisement:
		return "no L2Advertisement selects this Service's pool and labels"
	case announce.ReasonNoLocalEndpoint:
		return "externalTrafficPolicy Local and no node has a ready endpoint"
	default:
		return "no eligible node: none is Ready, alive, selected by the L2Advertisement and not excluded"
	}
}

// peers maps node names to their speakers' mesh addresses (InternalIP).
func peers(nodes []corev1.Node, port uint16) map[string]netip.AddrPort {
	out := map[string]netip.AddrPort{}
	for _, n := range nodes {
		for _, a := range n.Status.Addresses {
			if a.Type != corev1.NodeInternalIP {
				continue
			}
			if ip, err := netip.ParseAddr(a.Address); err == nil {
				out[n.Name] = netip.AddrPortFrom(ip, port)
				break
			}
		}
	}
	return out
}

// NodeInfos turns Node objects and the mesh's view into the plan's input.
func NodeInfos(nodes []corev1.Node, alive map[string]bool) []announce.NodeInfo {
	out := make([]announce.NodeInfo, 0, len(nodes))
	for _, n := range nodes {
		info := announce.NodeInfo{Labels: labels.Set(n.Labels)}
		info.Name = n.Name
		info.Unschedulable = n.Spec.Unschedulable
		_, info.Excluded = n.Labels[ExcludeLabel]
		info.SpeakerAlive = alive[n.Name]
		for _, c := range n.Status.Conditions {
			switch c.Type {
			case corev1.NodeReady:
				info.Ready = c.Status == corev1.ConditionTrue
			case corev1.NodeNetworkUnavailable:
				info.NetworkUnavailable = c.Status == corev1.ConditionTrue
			}
		}
		out = append(out, info)
	}
	return out
}

// ServiceInfos lists the LoadBalancer Services that have addresses, with
// the nodes of their ready endpoints.
func ServiceInfos(svcs []corev1.Service, eps []discoveryv1.EndpointSlice) []announce.ServiceInfo {
	endpoints := map[string]map[string]bool{}
	for _, es := range eps {
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			continue
		}
		key := es.Namespace + "/" + svc
		for _, e := range es.Endpoints {
			if e.NodeName == nil || (e.Conditions.Ready != nil && !*e.Conditions.Ready) {
				continue
			}
			if endpoints[key] == nil {
				endpoints[key] = map[string]bool{}
			}
			endpoints[key][*e.NodeName] = true
		}
	}
	var out []announce.ServiceInfo
	for _, s := range svcs {
		ips := controller.IngressIPs(&s)
		if s.Spec.Type != corev1.ServiceTypeLoadBalancer || len(ips) == 0 {
			continue
		}
		key := s.Namespace + "/" + s.Name
		pool, _, _ := strings.Cut(s.Annotations[v1beta1.AnnotationAllocatedFrom], ",")
		out = append(out, announce.ServiceInfo{
			Key: key, IPs: ips, Pool: pool, Labels: labels.Set(s.Labels),
			Local:         s.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
			EndpointNodes: endpoints[key],
		})
	}
	return out
}
