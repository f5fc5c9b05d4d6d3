package core

import (
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
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

// BGPAction is this node's BGP part of a pass.
type BGPAction struct {
	Desired BGPDesired
	// Problems are per peer name ("" for the node as a whole): a missing
	// password Secret leaves that peer out, so one bad object never takes
	// down the others.
	Problems map[string]string
	// Selected counts the peers that select this node, Announced the
	// addresses routed: for the node's BGPNodeStatus and metrics.
	Selected, Announced int
	// Err is a problem that stops BGP on this node altogether.
	Err error
}

func stepBGP(in Inputs, plan announce.BGPPlan) *BGPAction {
	self, err := selfNode(in.Nodes, in.Self)
	if err != nil {
		return &BGPAction{Err: err}
	}
	mine := plan.ForNode(in.Self) // one entry per address
	act := &BGPAction{Problems: map[string]string{}}
	var selected []*config.BGPPeer
	names := make([]string, 0, len(in.Config.BGPPeers))
	for n := range in.Config.BGPPeers {
		names = append(names, n)
	}
	sort.Strings(names)
	nodeLabels := labels.Set(self.Labels)
	for _, n := range names {
		p := in.Config.BGPPeers[n]
		if len(p.NodeSelectors) == 0 || config.MatchesAny(p.NodeSelectors, nodeLabels) {
			selected = append(selected, p)
		}
	}
	act.Selected = len(selected)
	if len(selected) == 0 {
		return act
	}
	v4, _ := NodeAddresses(self)
	id, err := bgp.RouterID(selected, v4)
	if err != nil {
		act.Problems[""] = err.Error()
		return act
	}
	d := &act.Desired
	d.RouterID, d.ASN = id, selected[0].MyASN
	for _, p := range selected {
		password, err := password(in, p)
		if err != nil {
			act.Problems[p.Name] = err.Error()
			continue
		}
		d.Peers = append(d.Peers, bgp.NewPeerSpec(p, password))
	}
	items := make([]bgp.Item, 0, len(mine))
	for _, a := range mine {
		items = append(items, bgp.Item{IP: a.IP, Advertisements: a.Advertisements})
	}
	routes, err := bgp.Build(items, d.Peers)
	if err != nil {
		act.Problems[""] = err.Error()
	}
	d.Routes = routes
	if len(d.Peers) > 0 {
		act.Announced = len(mine)
	}
	return act
}

// password reads a peer's TCP-MD5 password from its Secret, which must be
// in the speaker's namespace: the speaker may read no other Secrets.
func password(in Inputs, p *config.BGPPeer) (string, error) {
	ref := p.PasswordSecret
	if ref == nil {
		return "", nil
	}
	if in.Namespace == "" || ref.Namespace != in.Namespace {
		return "", fmt.Errorf("passwordSecret %s/%s: must be in the speaker's namespace %q", ref.Namespace, ref.Name, in.Namespace)
	}
	i := slices.IndexFunc(in.Secrets, func(s *corev1.Secret) bool { return s.Namespace == ref.Namespace && s.Name == ref.Name })
	if i < 0 {
		return "", fmt.Errorf("passwordSecret %s/%s: not found", ref.Namespace, ref.Name)
	}
	key := ref.Key
	if key == "" {
		key = defaultPasswordKey
	}
	v, ok := in.Secrets[i].Data[key]
	if !ok || len(v) == 0 {
		return "", fmt.Errorf("passwordSecret %s/%s: no key %q", ref.Namespace, ref.Name, key)
	}
	return string(v), nil
}

// NodeStatus is this node's BGP state as its BGPNodeStatus shows it: the
// last pass's part and the sessions as they are now.
func NodeStatus(self string, act *BGPAction, sessions []bgp.PeerStatus) v1beta1.BGPNodeStatusStatus {
	var st v1beta1.BGPNodeStatusStatus
	if act != nil {
		st.PeerCount, st.Prefixes = int32(act.Selected), int32(act.Announced)
		if act.Err != nil {
			st.Peers = append(st.Peers, v1beta1.BGPSessionStatus{Name: "(node)", State: "error", Error: act.Err.Error()})
		}
		for name, msg := range act.Problems {
			if name == "" {
				name = "(node)"
			}
			st.Peers = append(st.Peers, v1beta1.BGPSessionStatus{Name: name, State: "error", Error: msg})
		}
	}
	for _, p := range sessions {
		s := v1beta1.BGPSessionStatus{Name: p.Name, State: p.State,
			PrefixesSent: int64(p.PrefixesSent), BFD: p.BFDState, Error: p.Error, Reason: p.Reason}
		if p.Address.IsValid() {
			s.Address = p.Address.String()
		}
		if !p.Since.IsZero() {
			s.Since = &metav1.Time{Time: p.Since}
		}
		if p.Established() {
			st.Established++
		}
		st.Peers = append(st.Peers, s)
	}
	slices.SortFunc(st.Peers, func(a, b v1beta1.BGPSessionStatus) int { return strings.Compare(a.Name, b.Name) })
	if act != nil && (act.Selected > 0 || len(st.Peers) > 0) {
		st.Conditions = []metav1.Condition{peersConfigured(self, st.Peers)}
	}
	return st
}

// peersConfigured is the node's PeersConfigured condition (without a
// transition time, which the writer keeps from the last one): False with
// the first failing peer's reason and every failing peer in the message.
func peersConfigured(node string, peers []v1beta1.BGPSessionStatus) metav1.Condition {
	c := metav1.Condition{Type: v1beta1.ConditionPeersConfigured, Status: metav1.ConditionTrue,
		Reason: v1beta1.ReasonAllPeersConfigured, Message: fmt.Sprintf("node %s runs every BGPPeer that selects it", node)}
	var bad []string
	for _, p := range peers {
		if p.Error == "" {
			continue
		}
		if len(bad) == 0 {
			c.Status, c.Reason = metav1.ConditionFalse, p.Reason
			if c.Reason == "" {
				c.Reason = v1beta1.ReasonPeerConfigError
			}
		}
		bad = append(bad, p.Error)
	}
	if len(bad) > 0 {
		c.Message = fmt.Sprintf("node %s leaves out: %s", node, strings.Join(bad, "; "))
	}
	return c
}
