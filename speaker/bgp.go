package speaker

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sync"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/bgp"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/speaker/core"
)

// BGPDriver runs this node's BGP sessions.
type BGPDriver interface {
	Apply(ctx context.Context, d core.BGPDesired) error
	Status() []bgp.PeerStatus
}

// applyBGP brings this node's sessions and routes in line with its part
// of the plan (nil: the node runs no BGP).
func (r *Reconciler) applyBGP(ctx context.Context, act *core.BGPAction) error {
	if act == nil {
		return nil
	}
	r.mu.Lock()
	r.lastBGP = act
	r.mu.Unlock()
	if act.Err != nil {
		return fmt.Errorf("BGP: %w", act.Err)
	}
	for peer, msg := range act.Problems {
		r.Log.Info("BGP configuration problem", "peer", peer, "problem", msg)
	}
	if err := r.BGP.Apply(ctx, act.Desired); err != nil {
		return fmt.Errorf("BGP: %w", err)
	}
	return nil
}

// bgpAnnounced counts the addresses the last pass routed.
func (r *Reconciler) bgpAnnounced() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lastBGP == nil {
		return 0
	}
	return r.lastBGP.Announced
}

// bgpDriver owns this node's GoBGP speaker. GoBGP fixes the router ID and
// ASN when it starts, so a change of either restarts the speaker (all its
// sessions); everything else is applied to the running one, which leaves
// unchanged sessions alone.
type bgpDriver struct {
	log              logr.Logger
	nodeIPv4, nodeV6 netip.Addr
	reg              prometheus.Registerer

	mu       sync.Mutex
	sp       *bgp.Speaker
	routerID netip.Addr
	asn      uint32
	stopped  bool
}

func (d *bgpDriver) Apply(ctx context.Context, want core.BGPDesired) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.stopped {
		return nil
	}
	if d.sp != nil && (len(want.Peers) == 0 || want.RouterID != d.routerID || want.ASN != d.asn) {
		if len(want.Peers) > 0 {
			d.log.Info("router ID or ASN changed: restarting the BGP speaker", "routerID", want.RouterID, "asn", want.ASN)
		}
		// No sessions left, or a new identity: end the old sessions
		// (with a Cease, so the routers withdraw at once).
		_ = d.sp.SetPeers(ctx, nil)
		d.sp.Stop()
		d.sp = nil
	}
	if len(want.Peers) == 0 {
		return nil
	}
	if d.sp == nil {
		sp := bgp.New(d.log, bgp.Options{RouterID: want.RouterID, ASN: want.ASN, NodeIPv4: d.nodeIPv4, NodeIPv6: d.nodeV6, Registerer: d.reg})
		if err := sp.Start(ctx); err != nil {
			return err
		}
		d.sp, d.routerID, d.asn = sp, want.RouterID, want.ASN
	}
	return errors.Join(d.sp.SetPeers(ctx, want.Peers), d.sp.SetRoutes(ctx, want.Routes))
}

func (d *bgpDriver) Status() []bgp.PeerStatus {
	d.mu.Lock()
	sp := d.sp
	d.mu.Unlock()
	if sp == nil {
		return nil
	}
	return sp.Status()
}

// Stop ends the sessions for good: with graceful restart the routers keep
// the routes while the speaker restarts.
func (d *bgpDriver) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.stopped = true
	if d.sp != nil {
		d.sp.Stop()
		d.sp = nil
	}
}

// syncNodeStatus writes this node's BGPNodeStatus when it changed. The
// object is created on first need, owned by the Node so it goes with it.
func (r *Reconciler) syncNodeStatus(ctx context.Context, last *v1beta1.BGPNodeStatusStatus) error {
	r.mu.Lock()
	act := r.lastBGP
	r.mu.Unlock()
	st := core.NodeStatus(r.Self, act, r.BGP.Status())
	// Conditions keep their transition time while their status holds.
	conds := slices.Clone(last.Conditions)
	for _, c := range st.Conditions {
		meta.SetStatusCondition(&conds, c)
	}
	for _, c := range last.Conditions {
		if meta.FindStatusCondition(st.Conditions, c.Type) == nil {
			meta.RemoveStatusCondition(&conds, c.Type)
		}
	}
	st.Conditions = conds
	if equality.Semantic.DeepEqual(&st, last) {
		return nil
	}
	const res = "bgpnodestatuses"
	var obj v1beta1.BGPNodeStatus
	err := r.IronLB.Get().Resource(res).Name(r.Self).Do(ctx).Into(&obj)
	switch {
	case apierrors.IsNotFound(err):
		if st.PeerCount == 0 && len(st.Peers) == 0 {
			*last = st // nothing to show, and no object to clear
			return nil
		}
		o, ok, _ := r.Stores.Nodes.GetByKey(r.Self)
		if !ok {
			return fmt.Errorf("node %q not found", r.Self)
		}
		node := o.(*corev1.Node)
		obj = v1beta1.BGPNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: r.Self, OwnerReferences: []metav1.OwnerReference{{
			APIVersion: "v1", Kind: "Node", Name: node.Name, UID: node.UID,
		}}}}
		if err := r.IronLB.Post().Resource(res).Body(&obj).Do(ctx).Into(&obj); err != nil {
			return fmt.Errorf("create BGPNodeStatus %q: %w", r.Self, err)
		}
	case err != nil:
		return fmt.Errorf("read BGPNodeStatus %q: %w", r.Self, err)
	}
	obj.Status = st
	if err := r.IronLB.Put().Resource(res).Name(r.Self).SubResource("status").Body(&obj).Do(ctx).Error(); err != nil {
		return fmt.Errorf("update BGPNodeStatus %q: %w", r.Self, err)
	}
	*last = st
	return nil
}
