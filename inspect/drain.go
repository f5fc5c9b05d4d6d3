package inspect

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"

	"github.com/ironlb/ironlb/speaker/announce"
)

// Drain is what `kubectl drain NODE` would do to the announcements.
type Drain struct {
	Node string `json:"node"`
	// Moves are the addresses whose announcing nodes change, by address.
	Moves []Move `json:"moves"`
	// Unchanged counts the announced addresses that stay where they are.
	Unchanged int      `json:"unchanged"`
	Notes     []string `json:"notes,omitempty"`
}

// Move is one address's announcing nodes before and after the drain.
type Move struct {
	IP       string   `json:"ip"`
	Protocol string   `json:"protocol"`
	Services []string `json:"services"`
	From     []string `json:"from"`
	To       []string `json:"to"`
	// Dark: no node announces it after the drain (Reason says why).
	Dark   bool   `json:"dark,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// SimulateDrain plans the announcements as they would be once node is
// drained, with the speakers' own decision: the node cordoned, the
// endpoints on it gone (its pods evicted; the speaker, a DaemonSet pod,
// keeps running), and compares that with the plan of today.
func (v *View) SimulateDrain(node string) (Drain, error) {
	d := Drain{Node: node, Moves: []Move{}}
	nodes := slices.Clone(v.c.Nodes)
	i := slices.IndexFunc(nodes, func(n corev1.Node) bool { return n.Name == node })
	if i < 0 {
		return d, fmt.Errorf("node %q not found", node)
	}
	n := nodes[i].DeepCopy()
	n.Spec.Unschedulable = true
	nodes[i] = *n
	eps := make([]discoveryv1.EndpointSlice, len(v.c.EndpointSlices))
	evicted := 0
	for k := range v.c.EndpointSlices {
		es := v.c.EndpointSlices[k].DeepCopy()
		es.Endpoints = slices.DeleteFunc(es.Endpoints, func(e discoveryv1.Endpoint) bool {
			on := e.NodeName != nil && *e.NodeName == node
			if on {
				evicted++
			}
			return on
		})
		eps[k] = *es
	}
	after := v.plan(nodes, eps)
	before := v.Plans

	add := func(proto announce.Protocol, ip netip.Addr, svcs, from, to []string, reason string) {
		if slices.Equal(from, to) {
			if len(from) > 0 {
				d.Unchanged++
			}
			return
		}
		m := Move{IP: ip.String(), Protocol: string(proto), Services: svcs, From: nonNil(from), To: nonNil(to)}
		if len(to) == 0 {
			m.Dark, m.Reason = true, reason
		}
		d.Moves = append(d.Moves, m)
	}
	for ip, a := range before.L2.Addresses {
		b, ok := after.L2.Addresses[ip]
		var to []string
		if ok {
			to = []string{b.Node}
		}
		add(announce.L2, ip, a.Services, []string{a.Node}, to, after.L2.NotAnnounced[first(a.Services)])
	}
	for ip, a := range before.BGP.Addresses {
		add(announce.BGP, ip, a.Services, a.Nodes, after.BGP.Addresses[ip].Nodes, after.BGP.NotAnnounced[first(a.Services)])
	}
	slices.SortFunc(d.Moves, func(a, b Move) int {
		if c := netip.MustParseAddr(a.IP).Compare(netip.MustParseAddr(b.IP)); c != 0 {
			return c
		}
		return strings.Compare(a.Protocol, b.Protocol)
	})
	if evicted > 0 {
		d.Notes = append(d.Notes, fmt.Sprintf("the %d endpoints on %s are taken as evicted: a Service with externalTrafficPolicy Local comes back where the scheduler puts its pods", evicted, node))
	}
	if !v.Alive[node] {
		d.Notes = append(d.Notes, fmt.Sprintf("the speaker on %s is not running today", node))
	}
	return d, nil
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
