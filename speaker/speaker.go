// Package speaker is the per-node agent's shells around package core:
// informers in (Stores → core.Inputs), core's Actions out (the layer-2
// announcers, the BGP driver, one condition writer). Everything it needs
// from the API server comes from informer caches, so a speaker that loses
// the API server keeps announcing what it announced, and keeps failing
// over on its own liveness mesh.
package speaker

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/l2"
	"github.com/ironlb/ironlb/speaker/core"
	"github.com/ironlb/ironlb/speaker/membership"
)

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
	Services, Nodes, EndpointSlices cache.Store
	// Config holds a store per configuration kind (config.Kinds).
	Config map[string]cache.Store
	// Secrets holds the speaker's namespace's only; nil without one.
	Secrets cache.Store
}

// objects lists a store's objects: the store's own, never to be modified.
func objects[T any](s cache.Store) []*T {
	if s == nil {
		return nil
	}
	l := s.List()
	out := make([]*T, 0, len(l))
	for _, o := range l {
		if t, ok := o.(*T); ok {
			out = append(out, t)
		}
	}
	return out
}

// config reads the ironlb objects (shallow copies: what a pass reads of
// them is never modified).
func (s *Stores) config() config.Objects {
	var objs config.Objects
	for _, k := range config.Kinds() {
		for _, o := range s.Config[k.Name].List() {
			k.Append(&objs, o.(config.Object))
		}
	}
	return objs
}

// Reconciler is the shell of one node's passes: it reads the stores into
// core.Inputs, runs core.Step and carries out its Actions.
type Reconciler struct {
	Stores *Stores
	// Core writes the Services' conditions, IronLB the node's
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

	mu    sync.Mutex
	state core.State
	// conflicts are the addresses another host claims, as the announcers
	// reported them; a report ends those that are over.
	conflicts map[netip.Addr]net.HardwareAddr
	missing   map[string]bool // interfaces without an announcer last time
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
	// for Republish; lastBGP its BGP part, for the BGPNodeStatus.
	lastPub  *core.Publication
	lastAnns []Announcer
	lastBGP  *core.BGPAction

	writer conditionWriter
}

// interfaceRetry is how soon a pass is retried after an announcer could
// not be created.
const interfaceRetry = 5 * time.Second

// Pass runs one pass; the plan is global, so a pass is keyed on nothing.
// retry > 0 asks for another pass after that long even without news.
func (r *Reconciler) Pass(ctx context.Context) (retry time.Duration, err error) {
	cfg, _ := config.Parse(r.Stores.config())
	// A pass only reads the caches' own objects, not deep copies of every
	// Service on every pass (most of a pass's allocations in a large
	// cluster). Nothing below may modify them.
	nodes := objects[corev1.Node](r.Stores.Nodes)
	peers := core.MeshPeers(nodes, r.MeshPort)
	r.Mesh.SetPeers(peers)
	r.setPeerIPs(peers)
	in := core.Inputs{
		Self: r.Self, Config: cfg, Filter: r.Filter, Nodes: nodes,
		Services:       objects[core.Service](r.Stores.Services),
		EndpointSlices: objects[discoveryv1.EndpointSlice](r.Stores.EndpointSlices),
		Alive:          r.Mesh.Alive(), Settled: r.Mesh.Settled(),
		Interfaces: r.Interfaces, BGP: r.BGP != nil,
		Namespace: r.Namespace, Secrets: objects[corev1.Secret](r.Stores.Secrets),
	}
	r.mu.Lock()
	prev := r.state
	r.mu.Unlock()
	next, act := core.Step(prev, in)
	r.mu.Lock()
	r.state = next
	r.mu.Unlock()

	// A BGP failure is retried, but must not hold up layer 2.
	bgpErr := r.applyBGP(ctx, act.BGP)
	if act.L2 == nil {
		return 0, bgpErr
	}
	missing := map[string]bool{}
	var used, touched []Announcer
	for iface, u := range act.L2 {
		a, err := r.Announcer(iface)
		if err != nil {
			if len(u.IPs) > 0 {
				r.Log.Error(err, "cannot announce on this interface yet; retrying", "interface", iface)
				missing[iface] = true
			}
			continue
		}
		a.Update(u.IPs, l2.Moves{
			Takeover: func(ip netip.Addr) bool {
				cause, ok := u.Takeover[ip]
				if ok {
					r.Metrics.takeover(cause)
				}
				return ok
			},
			Yield: u.Yield(r.Self),
		})
		touched = append(touched, a)
		if len(u.IPs) > 0 {
			used = append(used, a)
		}
	}
	r.mu.Lock()
	r.missing = missing
	r.lastPub, r.lastAnns = act.Report, touched
	r.mu.Unlock()
	if act.Reassert && len(used) > 0 {
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
	r.report(ctx, act.Report, touched)
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

// Republish reports the last plan again, with what the announcers answer
// for now.
func (r *Reconciler) Republish(ctx context.Context) {
	r.mu.Lock()
	last, anns := r.lastPub, r.lastAnns
	r.mu.Unlock()
	if last != nil {
		r.report(ctx, last, anns)
	}
}

// RequestRepublish schedules Republish in republishDelay, unless one is
// scheduled already. It is what the announcers' reports call: they change
// what the conditions say, not the plan, and a full pass per report kept
// big clusters busy replanning.
func (r *Reconciler) RequestRepublish(ctx context.Context) {
	r.writer.schedule(func() { r.Republish(ctx) })
}

// report hands the wire as anns answer it now, with pub, to the writer.
func (r *Reconciler) report(ctx context.Context, pub *core.Publication, anns []Announcer) {
	announcing := announcingOn(anns)
	r.writer.publish(func() { r.writeVerdicts(ctx, pub, announcing) })
}

// Conflict records an address another host claims; the next report says
// so on the Service.
func (r *Reconciler) Conflict(ip netip.Addr, mac net.HardwareAddr) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.conflicts == nil {
		r.conflicts = map[netip.Addr]net.HardwareAddr{}
	}
	r.conflicts[ip] = mac
}

// writeVerdicts is the one place a Service's Announced condition is
// written.
func (r *Reconciler) writeVerdicts(ctx context.Context, pub *core.Publication, announcing map[netip.Addr]bool) {
	r.mu.Lock()
	w := core.Wire{Announcing: announcing, Conflicts: maps.Clone(r.conflicts)}
	for _, ip := range pub.Over(w) {
		delete(r.conflicts, ip)
	}
	r.mu.Unlock()
	for _, v := range pub.Report(w) {
		// Compare with the Service as the cache has it now, not as it was
		// when the plan was made: a pass that ran while the previous
		// batch of writes was still going would otherwise write those
		// conditions again, each write waking every speaker for another
		// pass and another batch.
		o, ok, _ := r.Stores.Services.GetByKey(v.Key)
		if !ok {
			continue // gone
		}
		s := o.(*core.Service)
		cond := v.Condition
		cond.Type = v1beta1.ServiceConditionAnnounced
		cond.ObservedGeneration = s.Generation
		var conds []metav1.Condition
		if s.Announced != nil {
			conds = append(conds, *s.Announced)
		}
		if !meta.SetStatusCondition(&conds, cond) {
			continue
		}
		if err := r.applyCondition(ctx, s, conds[0]); err != nil {
			if ctx.Err() != nil {
				return // stopping
			}
			r.Log.Error(err, "write Announced condition", "service", v.Key)
			continue
		}
		typ, reason := corev1.EventTypeNormal, "Announcing"
		if cond.Status != metav1.ConditionTrue {
			typ, reason = corev1.EventTypeWarning, cond.Reason
		}
		r.Recorder.Eventf(s.Ref(), nil, typ, reason, "Announce", "%s", cond.Message)
	}
}

// applyCondition sets the Announced condition of a Service's status by
// server-side apply, with a field manager per node: it owns that one
// condition and nothing else, so the controller's condition and the
// ingress are left alone, and a node that takes over reporting takes the
// condition over (force).
func (r *Reconciler) applyCondition(ctx context.Context, s *core.Service, cond metav1.Condition) error {
	body, err := json.Marshal(map[string]any{
		"apiVersion": "v1", "kind": "Service",
		"metadata": map[string]any{"namespace": s.Namespace, "name": s.Name},
		"status":   map[string]any{"conditions": []metav1.Condition{cond}},
	})
	if err != nil {
		return err
	}
	return r.Core.Patch(types.ApplyPatchType).Namespace(s.Namespace).Resource("services").Name(s.Name).
		SubResource("status").Param("fieldManager", "ironlb-speaker/"+r.Self).Param("force", "true").
		Body(body).Do(ctx).Error()
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

// WaitingFor tells whether the last pass could not announce on iface, or
// has a BGP peer bound to it, so a link event for it deserves a new pass.
func (r *Reconciler) WaitingFor(iface string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.missing[iface] {
		return true
	}
	// A BGP session bound to the link (an unnumbered one, or one in a
	// VRF) may be waiting for it to appear.
	if r.lastBGP != nil {
		for _, p := range r.lastBGP.Desired.Peers {
			if p.Interface == iface || p.VRF == iface {
				return true
			}
		}
	}
	return false
}
