// Package speaker is the per-node agent: it decides (with package announce)
// which LoadBalancer addresses this node announces and drives the layer-2
// announcers. Everything it needs from the API server comes from informer
// caches, so a speaker that loses the API server keeps announcing what it
// announced, and keeps failing over on its own liveness mesh.
package speaker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/l2"
	"github.com/ironlb/ironlb/speaker/announce"
	"github.com/ironlb/ironlb/speaker/membership"
)

// Reasons of the Announced condition when announced: layer 2 (possibly
// BGP too), or BGP only.
const (
	reasonLayer2 = "Layer2"
	reasonBGP    = "BGP"
)

// ExcludeLabel keeps a node from announcing any LoadBalancer address.
const ExcludeLabel = "node.kubernetes.io/exclude-from-external-load-balancers"

// Announcer is what the speaker needs from a layer-2 announcer.
type Announcer interface {
	// Update announces ips; moves say which new ones skip the probe and
	// which leaving ones are yielded to a live new owner.
	Update(ips []netip.Addr, moves l2.Moves)
	Announcing() []netip.Addr
	// Reassert announces every announced address once more.
	Reassert()
}

// Liveness tells which speakers are alive.
type Liveness interface {
	Alive() map[string]bool
	SetPeers(map[string]netip.AddrPort)
	// Settled is false until the liveness view is worth acting on (see
	// membership.Mesh.Settled).
	Settled() bool
}

// EventRecorder records Events (kube.Recorder).
type EventRecorder interface {
	Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any)
}

// Stores are the informer caches a pass reads. Their objects are shared:
// nothing may modify them.
type Stores struct {
	Services, Nodes, EndpointSlices                                                cache.Store
	Pools, L2Advertisements, BGPPeers, BGPAdvertisements, BFDProfiles, Communities cache.Store
	// Secrets holds the speaker's namespace's only; nil without one.
	Secrets cache.Store
}

// objects lists a store's objects: the store's own, never to be modified.
func objects[T any](s cache.Store) []*T {
	l := s.List()
	out := make([]*T, 0, len(l))
	for _, o := range l {
		if t, ok := o.(*T); ok {
			out = append(out, t)
		}
	}
	return out
}

// items copies a store's objects into a slice, shallowly (what a pass
// reads of them is never modified).
func items[T any](s cache.Store) []T {
	ptrs := objects[T](s)
	out := make([]T, len(ptrs))
	for i, p := range ptrs {
		out[i] = *p
	}
	return out
}

// config reads the ironlb objects.
func (s *Stores) config() config.Objects {
	return config.Objects{
		Pools: items[v1beta1.IPAddressPool](s.Pools), L2Advertisements: items[v1beta1.L2Advertisement](s.L2Advertisements),
		BGPPeers: items[v1beta1.BGPPeer](s.BGPPeers), BGPAdvertisements: items[v1beta1.BGPAdvertisement](s.BGPAdvertisements),
		BFDProfiles: items[v1beta1.BFDProfile](s.BFDProfiles), Communities: items[v1beta1.Community](s.Communities),
	}
}

// Reconciler recomputes the cluster-wide plan on every change and applies
// this node's part of it.
type Reconciler struct {
	Stores *Stores
	// Core and IronLB write the Services' conditions and the node's
	// BGPNodeStatus.
	Core, IronLB rest.Interface
	Self         string
	Mesh         Liveness
	MeshPort     uint16
	Recorder     EventRecorder
	// Announcer returns the announcer of an interface, creating it on
	// first use.
	Announcer func(iface string) (Announcer, error)
	// Interfaces are used when an L2Advertisement names none.
	Interfaces []string
	Log        logr.Logger
	// Metrics may be nil.
	Metrics *Metrics
	// Namespace is the speaker's own: BGP password Secrets must be there.
	Namespace string
	// BGP runs this node's sessions; nil disables BGP.
	BGP BGPDriver
	// Trimmer hears of every pass (nil: nobody trims).
	Trimmer *Trimmer
	// Filter says which Services are ironlb's: another load balancer's
	// are neither announced nor given ironlb's condition.
	Filter config.ClassFilter

	mu        sync.Mutex
	conflicts map[netip.Addr]net.HardwareAddr
	active    map[string]bool // interfaces with a non-empty set last time
	missing   map[string]bool // interfaces without an announcer last time
	// owners is the previous plan's owner of each address: an address
	// another speaker owned is a takeover, announced without a probe. If
	// that speaker is dead there is nobody to ask; if it is alive it
	// computes the same plan and releases the address within moments, and
	// a probe would only see its last answers and back off for seconds.
	owners map[netip.Addr]string
	// planned says owners holds a plan: before the first one (a fresh
	// start) the Services' Announced conditions tell which addresses some
	// peer announces already.
	planned bool
	// wasAlive is the mesh's view at the previous pass.
	wasAlive map[string]bool
	// peerIPs are the other nodes' mesh addresses: a claim on an address
	// from one of their MACs is an ownership change in flight, not a
	// conflict (see IsPeerMAC).
	peerIPs map[netip.Addr]bool
	// peerMACs are the MACs the neighbour table gave for peerIPs, kept
	// across reads: a claim arrives while the peers' entries are being
	// re-resolved as often as not, and a missing entry turned a peer's
	// claim into a reported conflict.
	peerMACs map[netip.Addr]string
	// lastPub is the last pass's publication and lastAnns its announcers,
	// for Republish.
	lastPub  *publication
	lastAnns []Announcer
	// bgpProblems are the last pass's BGP problems by peer ("" = the
	// node), bgpPeers the peers selecting this node and bgpAnnounced the
	// addresses routed: for the node's BGPNodeStatus and metrics.
	bgpProblems  map[string]string
	bgpPeers     int
	bgpAnnounced int

	// Condition writes go through one background writer, so a reconcile
	// (and with it a failover) never waits on the API server: pending
	// holds the newest state to publish, publishing says the writer runs.
	pubMu      sync.Mutex
	pending    *publication
	publishing bool
	// republishQueued: a Republish is scheduled (RequestRepublish).
	republishQueued bool
}

// republishDelay coalesces the announcers' reports (an address on the
// wire, a conflict) into one condition update: a speaker taking over
// dozens of addresses reports each.
const republishDelay = 100 * time.Millisecond

// RequestRepublish schedules Republish in republishDelay, unless one is
// scheduled already. It is what the announcers' reports call: they change
// what the conditions say, not the plan, and a full pass per report kept
// big clusters busy replanning.
func (r *Reconciler) RequestRepublish(ctx context.Context) {
	r.pubMu.Lock()
	defer r.pubMu.Unlock()
	if r.republishQueued {
		return
	}
	r.republishQueued = true
	time.AfterFunc(republishDelay, func() {
		r.pubMu.Lock()
		r.republishQueued = false
		r.pubMu.Unlock()
		r.Republish(ctx)
	})
}

// announcingOn is the set of addresses anns answer for now.
func announcingOn(anns []Announcer) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, a := range anns {
		for _, ip := range a.Announcing() {
			out[ip] = true
		}
	}
	return out
}

// Republish writes the conditions of the last plan again, with what the
// announcers answer for now; conflicts on addresses answered again are
// over.
func (r *Reconciler) Republish(ctx context.Context) {
	r.mu.Lock()
	last, anns := r.lastPub, r.lastAnns
	r.mu.Unlock()
	if last == nil {
		return
	}
	announcing := announcingOn(anns)
	r.mu.Lock()
	for ip := range r.conflicts {
		if announcing[ip] {
			delete(r.conflicts, ip)
		}
	}
	r.mu.Unlock()
	p := *last
	p.announcing = announcing
	r.publish(ctx, &p)
}

type publication struct {
	// svcs holds only what the writer needs of each Service, not the
	// cached objects: the cache replaces an object on each update, and a
	// publication kept the replaced ones alive, a second copy of every
	// Service at idle.
	svcs []pubService
	// announcing is what this node's announcers answer for now.
	announcing map[netip.Addr]bool
	plan       announce.L2Plan
	bgp        announce.BGPPlan
	alive      map[string]bool
}

// pubService is a Service with addresses, as the plan saw it.
type pubService struct {
	key string // namespace/name
	ips []netip.Addr
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
			r.writeConditions(ctx, next)
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

// Pass runs one pass; the plan is global, so a pass is keyed on nothing.
// retry > 0 asks for another pass after that long even without news.
func (r *Reconciler) Pass(ctx context.Context) (retry time.Duration, err error) {
	cfg, _ := config.Parse(r.Stores.config())
	// A pass only reads the caches' own objects, not deep copies of every
	// Service on every pass (most of a pass's allocations in a large
	// cluster). Nothing below may modify them.
	nodeList := objects[corev1.Node](r.Stores.Nodes)
	svcList := slices.DeleteFunc(objects[cachedService](r.Stores.Services), func(s *cachedService) bool {
		return !r.Filter.ManagesClass(s.Class)
	})
	epSlices := objects[discoveryv1.EndpointSlice](r.Stores.EndpointSlices)

	meshPeers := peers(nodeList, r.MeshPort)
	r.Mesh.SetPeers(meshPeers)
	r.setPeerIPs(meshPeers)
	alive := r.Mesh.Alive()
	nodes := NodeInfos(nodeList, alive)
	svcs := ServiceInfos(svcList, epSlices)
	for i := range svcs {
		for k, ip := range svcs[i].IPs {
			if p := cfg.PoolOf(ip); p != nil && k < len(svcs[i].Pools) {
				svcs[i].Pools[k] = p.Name
			}
		}
	}
	plan := announce.PlanL2(cfg, nodes, svcs)
	bgpPlan := announce.PlanBGP(cfg, nodes, svcs)
	// A BGP failure is retried, but must not hold up layer 2.
	var bgpErr error
	if r.BGP != nil {
		bgpErr = r.applyBGP(ctx, cfg, nodeList, bgpPlan)
	}

	if !r.Mesh.Settled() {
		// Until the mesh has heard from its peers they all look dead, and
		// this node would claim every address. The mesh's settling
		// triggers the next pass.
		return 0, bgpErr
	}

	// This node's addresses per interface; one interface may be named by
	// several advertisements and be a default one too.
	mine := map[string][]netip.Addr{}
	for group, ips := range plan.ForNode(r.Self) {
		ifaces := []string{group}
		if group == "" {
			ifaces = r.Interfaces
		}
		for _, i := range ifaces {
			mine[i] = append(mine[i], ips...)
		}
	}
	r.mu.Lock()
	prevOwners, planned := r.owners, r.planned
	r.owners = make(map[netip.Addr]string, len(plan.Addresses))
	for ip, a := range plan.Addresses {
		r.owners[ip] = a.Node
	}
	r.planned = true
	// A peer back from the dead may be the other side of a healed
	// partition, still answering for addresses it took over meanwhile:
	// it yields them now (same plan), and our claim makes it withdraw.
	rejoined := false
	for n, ok := range alive {
		if ok && n != r.Self && r.wasAlive != nil && !r.wasAlive[n] {
			rejoined = true
		}
	}
	r.wasAlive = alive
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
	announcedBefore := map[netip.Addr]bool{}
	if !planned {
		announcedBefore = announcedAddresses(svcList)
	}
	moves := l2.Moves{
		// An address another node announced moves here without a probe:
		// if that node is gone nobody answers one, and if it is alive it
		// computes the same plan and yields until we announce.
		Takeover: func(ip netip.Addr) bool {
			prev, ok := prevOwners[ip]
			taken := (ok && prev != r.Self) || (!ok && announcedBefore[ip])
			if taken {
				cause := "failover"
				if alive[prev] {
					cause = "rebalance"
				}
				r.Metrics.takeover(cause)
			}
			return taken
		},
		// An address leaving for another (live, by construction of the
		// plan) node keeps being answered until that node announces it.
		Yield: func(ip netip.Addr) bool {
			a, ok := plan.Addresses[ip]
			return ok && a.Node != r.Self
		},
	}
	missing := map[string]bool{}
	var used, touched []Announcer
	wanted := map[netip.Addr]bool{}
	for iface, ips := range mine {
		a, err := r.Announcer(iface)
		if err != nil {
			if len(ips) > 0 {
				r.Log.Error(err, "cannot announce on this interface yet; retrying", "interface", iface)
				missing[iface] = true
			}
			continue
		}
		a.Update(ips, moves)
		touched = append(touched, a)
		if len(ips) > 0 {
			used = append(used, a)
		}
		for _, ip := range ips {
			wanted[ip] = true
		}
	}
	announcing := announcingOn(touched)
	// A conflict is over once the address is announced again (or no
	// longer ours).
	r.mu.Lock()
	r.missing = missing
	for ip := range r.conflicts {
		if announcing[ip] || !wanted[ip] {
			delete(r.conflicts, ip)
		}
	}
	r.mu.Unlock()
	if rejoined && len(used) > 0 {
		// After one heartbeat the peer has most likely heard from us too
		// and is yielding, so it withdraws instead of defending.
		time.AfterFunc(membership.DefaultInterval, func() {
			for _, a := range used {
				a.Reassert()
			}
		})
	}
	if r.Trimmer != nil {
		r.Trimmer.Active()
	}
	refs := make([]pubService, len(svcs))
	for i, s := range svcs {
		refs[i] = pubService{key: s.Key, ips: s.IPs}
	}
	pub := &publication{svcs: refs, announcing: announcing, plan: plan, bgp: bgpPlan, alive: alive}
	r.mu.Lock()
	r.lastPub, r.lastAnns = pub, touched
	r.mu.Unlock()
	r.publish(ctx, pub)
	if bgpErr != nil {
		return 0, bgpErr
	}
	if len(missing) > 0 {
		// An interface that is missing or down now may come up later
		// (link events also trigger a pass; this is the safety net).
		return interfaceRetry, nil
	}
	return 0, nil
}

// setPeerIPs records the other nodes' addresses.
func (r *Reconciler) setPeerIPs(peers map[string]netip.AddrPort) {
	ips := make(map[netip.Addr]bool, len(peers))
	for n, ap := range peers {
		if n != r.Self {
			ips[ap.Addr()] = true
		}
	}
	r.mu.Lock()
	r.peerIPs = ips
	r.mu.Unlock()
}

// IsPeerMAC tells whether mac is another node's (see l2.Options.IsPeer):
// the kernel's neighbour table, which the mesh's traffic keeps filled,
// maps the peers' addresses to their MACs. It is read only when a claim
// arrives, which is rare, rather than on every pass.
func (r *Reconciler) IsPeerMAC(mac net.HardwareAddr) bool {
	if r.knownPeerMAC(mac) {
		return true
	}
	neighs, err := netlink.NeighList(0, netlink.FAMILY_ALL)
	// An interrupted dump (the table changed meanwhile, as it does all
	// the time on a busy node) still returns what it read.
	if err != nil && !errors.Is(err, netlink.ErrDumpInterrupted) {
		r.Log.V(1).Info("neighbour table unreadable; a peer's claim counts as a conflict", "error", err.Error())
		return false
	}
	r.mu.Lock()
	if r.peerMACs == nil {
		r.peerMACs = map[netip.Addr]string{}
	}
	for _, n := range neighs {
		if ip, ok := netip.AddrFromSlice(n.IP); ok && r.peerIPs[ip.Unmap()] && len(n.HardwareAddr) > 0 {
			r.peerMACs[ip.Unmap()] = n.HardwareAddr.String()
		}
	}
	r.mu.Unlock()
	return r.knownPeerMAC(mac)
}

func (r *Reconciler) knownPeerMAC(mac net.HardwareAddr) bool {
	m := mac.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	for ip, pm := range r.peerMACs {
		if pm == m && r.peerIPs[ip] {
			return true
		}
	}
	return false
}

// WaitingFor tells whether the last pass could not announce on iface, so
// a link event for it deserves a new pass.
func (r *Reconciler) WaitingFor(iface string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.missing[iface]
}

// interfaceRetry is how soon a pass is retried after an announcer could
// not be created.
const interfaceRetry = 5 * time.Second

// announcedAddresses lists the addresses whose Services report being
// announced in layer 2 by some node.
func announcedAddresses(svcs []*cachedService) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, s := range svcs {
		c := s.Announced
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != reasonLayer2 {
			continue
		}
		for _, ip := range s.IPs {
			out[ip] = true
		}
	}
	return out
}

// writeConditions publishes ironlb.io/Announced. One speaker writes it
// per Service: the layer-2 owner of its address (the only one that knows
// about conflicts), else the first node announcing it over BGP, else, for
// Services nobody announces, the alive speaker with the lowest name.
func (r *Reconciler) writeConditions(ctx context.Context, pub *publication) {
	var aliveNames []string
	for n, ok := range pub.alive {
		if ok {
			aliveNames = append(aliveNames, n)
		}
	}
	sort.Strings(aliveNames)
	reporter := len(aliveNames) > 0 && aliveNames[0] == r.Self
	r.mu.Lock()
	conflicts := maps.Clone(r.conflicts)
	r.mu.Unlock()
	for _, ps := range pub.svcs {
		key := ps.key
		cond := r.announcedCondition(key, ps.ips, pub, conflicts, reporter)
		if cond == nil {
			continue
		}
		// Compare with the Service as the cache has it now, not as it was
		// when the plan was made: a pass that ran while the previous
		// batch of writes was still going would otherwise write those
		// conditions again, each write waking every speaker for another
		// pass and another batch.
		o, ok, _ := r.Stores.Services.GetByKey(key)
		if !ok {
			continue // gone
		}
		s := o.(*cachedService)
		cond.Type = v1beta1.ServiceConditionAnnounced
		cond.ObservedGeneration = s.Generation
		var conds []metav1.Condition
		if s.Announced != nil {
			conds = append(conds, *s.Announced)
		}
		if !meta.SetStatusCondition(&conds, *cond) {
			continue
		}
		*cond = conds[0]
		if err := r.patchCondition(ctx, s, *cond); err != nil {
			if ctx.Err() != nil {
				return // stopping
			}
			r.Log.Error(err, "write Announced condition", "service", key)
			continue
		}
		typ := corev1.EventTypeNormal
		reason := "Announcing"
		if cond.Status != metav1.ConditionTrue {
			typ, reason = corev1.EventTypeWarning, cond.Reason
		}
		r.Recorder.Eventf(s.ref(), nil, typ, reason, "Announce", "%s", cond.Message)
	}
}

// patchCondition sets one condition of a Service's status. A strategic
// merge of conditions by type touches only that one: the controller's
// condition and the ingress are left alone.
func (r *Reconciler) patchCondition(ctx context.Context, s *cachedService, cond metav1.Condition) error {
	body, err := json.Marshal(map[string]any{"status": map[string]any{"conditions": []metav1.Condition{cond}}})
	if err != nil {
		return err
	}
	return r.Core.Patch(types.StrategicMergePatchType).Namespace(s.Namespace).Resource("services").Name(s.Name).
		SubResource("status").Body(body).Do(ctx).Error()
}

// announcedCondition is the condition this speaker writes for the Service
// key with addresses ips, or nil when another speaker writes it.
func (r *Reconciler) announcedCondition(key string, ips []netip.Addr, pub *publication, conflicts map[netip.Addr]net.HardwareAddr, reporter bool) *metav1.Condition {
	var l2Owner string
	var mine []string
	pending := false
	for _, ip := range ips {
		a, ok := pub.plan.Addresses[ip]
		if !ok {
			continue
		}
		if l2Owner == "" {
			l2Owner = a.Node
		}
		if a.Node != r.Self {
			continue
		}
		if mac, bad := conflicts[ip]; bad {
			return &metav1.Condition{Status: metav1.ConditionFalse, Reason: "AddressConflict",
				Message: fmt.Sprintf("another host (MAC %s) answers for %s; not announced", mac, ip)}
		}
		if !pub.announcing[ip] {
			// Still probing (or waiting for a peer to let go): say so
			// once it is on the wire (OnAnnounced triggers a pass).
			pending = true
			continue
		}
		where := "all interfaces"
		if len(a.Interfaces) > 0 {
			where = strings.Join(a.Interfaces, ",")
		}
		proto := "ARP"
		if ip.Is6() {
			proto = "NDP"
		}
		mine = append(mine, fmt.Sprintf("%s on %s (%s)", ip, where, proto))
	}
	var bgpNodes []string
	for _, ip := range ips {
		for _, n := range pub.bgp.Addresses[ip].Nodes {
			if !slices.Contains(bgpNodes, n) {
				bgpNodes = append(bgpNodes, n)
			}
		}
	}
	sort.Strings(bgpNodes)
	viaBGP := ""
	if len(bgpNodes) > 0 {
		viaBGP = fmt.Sprintf("BGP from %d nodes (%s)", len(bgpNodes), strings.Join(bgpNodes, ", "))
	}
	switch {
	case len(mine) == 0 && pending:
		return nil
	case len(mine) > 0:
		msg := fmt.Sprintf("announced by node %s: %s", r.Self, strings.Join(mine, "; "))
		if viaBGP != "" {
			msg += "; " + viaBGP
		}
		return &metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonLayer2, Message: msg}
	case l2Owner != "":
		return nil // the owner writes
	case len(bgpNodes) > 0:
		if bgpNodes[0] != r.Self {
			return nil
		}
		return &metav1.Condition{Status: metav1.ConditionTrue, Reason: reasonBGP, Message: "announced over " + viaBGP}
	case !reporter:
		return nil
	}
	reason := pub.bgp.NotAnnounced[key]
	if reason == "" {
		reason = pub.plan.NotAnnounced[key]
	}
	if reason == "" {
		return nil
	}
	return &metav1.Condition{Status: metav1.ConditionFalse, Reason: reason, Message: notAnnouncedMessage(reason)}
}

func notAnnouncedMessage(reason string) string {
	switch reason {
	case announce.ReasonNoAdvertisement:
		return "no L2Advertisement or BGPAdvertisement selects this Service's pool and labels"
	case announce.ReasonNoLocalEndpoint:
		return "externalTrafficPolicy Local and no node has a ready endpoint"
	default:
		return "no eligible node: none is Ready, alive, selected by an advertisement and not excluded or cordoned"
	}
}

// peers maps node names to their speakers' mesh addresses (InternalIP).
func peers(nodes []*corev1.Node, port uint16) map[string]netip.AddrPort {
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
func NodeInfos(nodes []*corev1.Node, alive map[string]bool) []announce.NodeInfo {
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

// ServiceInfos lists the LoadBalancer Services that have addresses (the
// cache holds no others), with the nodes of their ready endpoints. The
// addresses are the cache's: read only.
func ServiceInfos(svcs []*cachedService, eps []*discoveryv1.EndpointSlice) []announce.ServiceInfo {
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
		if len(s.IPs) == 0 {
			continue
		}
		key := s.Namespace + "/" + s.Name
		// The annotation names the pools without repeats, so it tells an
		// address's pool only when there is one; the caller fills in the
		// rest from the configured ranges.
		pools := make([]string, len(s.IPs))
		if named := s.AllocatedFrom; !strings.Contains(named, ",") {
			for k := range pools {
				pools[k] = named
			}
		}
		out = append(out, announce.ServiceInfo{
			Key: key, IPs: s.IPs, Pools: pools, Labels: labels.Set(s.Labels),
			Local: s.Local, EndpointNodes: endpoints[key],
		})
	}
	return out
}
