package speaker

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/bgp"
	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/speaker/announce"
)

// defaultPasswordKey is the Secret key read when a BGPPeer's passwordSecret
// names none.
const defaultPasswordKey = "password"

// BGPDesired is what this node's BGP speaker should run.
type BGPDesired struct {
	RouterID netip.Addr
	ASN      uint32
	Peers    []bgp.PeerSpec
	Routes   []bgp.Route
}

// BGPDriver runs this node's BGP sessions.
type BGPDriver interface {
	Apply(ctx context.Context, d BGPDesired) error
	Status() []bgp.PeerStatus
}

// desiredBGP computes this node's BGP sessions and routes from its part of
// the plan.
// Problems that concern one peer (a missing password Secret, a community
// that does not parse) leave that peer or value out and are returned per
// peer name ("" for the node as a whole), so one bad object never takes
// down the others.
func (r *Reconciler) desiredBGP(ctx context.Context, cfg *config.Config, self *corev1.Node, mine []announce.Announcement) (_ BGPDesired, problems map[string]string, selectedPeers int) {
	problems = map[string]string{}
	var selected []*config.BGPPeer
	names := make([]string, 0, len(cfg.BGPPeers))
	for n := range cfg.BGPPeers {
		names = append(names, n)
	}
	sort.Strings(names)
	nodeLabels := labels.Set(self.Labels)
	for _, n := range names {
		p := cfg.BGPPeers[n]
		if len(p.NodeSelectors) == 0 || config.MatchesAny(p.NodeSelectors, nodeLabels) {
			selected = append(selected, p)
		}
	}
	var d BGPDesired
	if len(selected) == 0 {
		return d, problems, 0
	}
	v4, _ := nodeAddresses(self)
	id, err := bgp.RouterID(selected, v4)
	if err != nil {
		problems[""] = err.Error()
		return d, problems, len(selected)
	}
	d.RouterID, d.ASN = id, selected[0].MyASN
	for _, p := range selected {
		password, err := r.password(ctx, p)
		if err != nil {
			problems[p.Name] = err.Error()
			continue
		}
		d.Peers = append(d.Peers, bgp.NewPeerSpec(p, password))
	}
	var items []bgp.Item
	for _, a := range mine {
		items = append(items, bgp.Item{IP: a.IP, Advertisements: a.Advertisements})
	}
	routes, err := bgp.Build(items, d.Peers)
	if err != nil {
		problems[""] = err.Error()
	}
	d.Routes = routes
	return d, problems, len(selected)
}

// applyBGP brings this node's sessions and routes in line with the plan.
func (r *Reconciler) applyBGP(ctx context.Context, cfg *config.Config, nodes []*corev1.Node, plan announce.BGPPlan) error {
	var self *corev1.Node
	for i := range nodes {
		if nodes[i].Name == r.Self {
			self = nodes[i]
		}
	}
	if self == nil {
		return fmt.Errorf("node %q not found", r.Self)
	}
	mine := plan.ForNode(r.Self) // one entry per address
	want, problems, selected := r.desiredBGP(ctx, cfg, self, mine)
	for peer, msg := range problems {
		r.Log.Info("BGP configuration problem", "peer", peer, "problem", msg)
	}
	r.mu.Lock()
	r.bgpProblems = problems
	r.bgpPeers = selected
	r.bgpAnnounced = 0
	if len(want.Peers) > 0 {
		r.bgpAnnounced = len(mine)
	}
	r.mu.Unlock()
	if err := r.BGP.Apply(ctx, want); err != nil {
		return fmt.Errorf("BGP: %w", err)
	}
	return nil
}

// password reads a peer's TCP-MD5 password from its Secret, which must be
// in the speaker's namespace: the speaker may read no other Secrets.
func (r *Reconciler) password(ctx context.Context, p *config.BGPPeer) (string, error) {
	ref := p.PasswordSecret
	if ref == nil {
		return "", nil
	}
	if r.Namespace == "" || ref.Namespace != r.Namespace {
		return "", fmt.Errorf("passwordSecret %s/%s: must be in the speaker's namespace %q", ref.Namespace, ref.Name, r.Namespace)
	}
	if r.Stores.Secrets == nil {
		return "", fmt.Errorf("passwordSecret %s/%s: the speaker watches no Secrets", ref.Namespace, ref.Name)
	}
	o, ok, _ := r.Stores.Secrets.GetByKey(ref.Namespace + "/" + ref.Name)
	if !ok {
		return "", fmt.Errorf("passwordSecret %s/%s: not found", ref.Namespace, ref.Name)
	}
	s := o.(*corev1.Secret)
	key := ref.Key
	if key == "" {
		key = defaultPasswordKey
	}
	v, ok := s.Data[key]
	if !ok || len(v) == 0 {
		return "", fmt.Errorf("passwordSecret %s/%s: no key %q", ref.Namespace, ref.Name, key)
	}
	return string(v), nil
}

// nodeAddresses returns the node's InternalIP of each family.
func nodeAddresses(n *corev1.Node) (v4, v6 netip.Addr) {
	for _, a := range n.Status.Addresses {
		if a.Type != corev1.NodeInternalIP {
			continue
		}
		ip, err := netip.ParseAddr(a.Address)
		switch {
		case err != nil:
		case ip.Is4() && !v4.IsValid():
			v4 = ip
		case ip.Is6() && !v6.IsValid():
			v6 = ip
		}
	}
	return v4, v6
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

func (d *bgpDriver) Apply(ctx context.Context, want BGPDesired) error {
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

// bgpNodeStatus is this node's BGP state as the BGPNodeStatus shows it.
func (r *Reconciler) bgpNodeStatus() v1beta1.BGPNodeStatusStatus {
	r.mu.Lock()
	problems := maps.Clone(r.bgpProblems)
	st := v1beta1.BGPNodeStatusStatus{PeerCount: int32(r.bgpPeers), Prefixes: int32(r.bgpAnnounced)}
	r.mu.Unlock()
	for _, p := range r.BGP.Status() {
		s := v1beta1.BGPSessionStatus{Name: p.Name, Address: p.Address.String(), State: p.State,
			PrefixesSent: int64(p.PrefixesSent), BFD: p.BFDState}
		if !p.Since.IsZero() {
			s.Since = &metav1.Time{Time: p.Since}
		}
		if p.Established() {
			st.Established++
		}
		st.Peers = append(st.Peers, s)
	}
	for name, msg := range problems {
		if name == "" {
			name = "(node)"
		}
		st.Peers = append(st.Peers, v1beta1.BGPSessionStatus{Name: name, State: "error", Error: msg})
	}
	slices.SortFunc(st.Peers, func(a, b v1beta1.BGPSessionStatus) int { return strings.Compare(a.Name, b.Name) })
	return st
}

// syncNodeStatus writes this node's BGPNodeStatus when it changed. The
// object is created on first need, owned by the Node so it goes with it.
func (r *Reconciler) syncNodeStatus(ctx context.Context, last *v1beta1.BGPNodeStatusStatus) error {
	st := r.bgpNodeStatus()
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
