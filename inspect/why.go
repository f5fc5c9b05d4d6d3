package inspect

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
)

// Verdicts of Why.
const (
	VerdictAnnounced    = "Announced"
	VerdictPending      = "Pending"
	VerdictNotAnnounced = "NotAnnounced"
	VerdictNotOurs      = "NotIronlb"
	VerdictNotFound     = "NotFound"
)

// Explanation is why a Service is where it is, in findings an admin can
// act on, each naming the object and field involved.
type Explanation struct {
	Namespace string   `json:"namespace"`
	Name      string   `json:"name"`
	Verdict   string   `json:"verdict"`
	Findings  []string `json:"findings"`
}

// Why explains a Service: pending (no address), not announced, or
// announced, and what decided it.
func (v *View) Why(ns, name string) Explanation {
	e := Explanation{Namespace: ns, Name: name}
	add := func(format string, args ...any) { e.Findings = append(e.Findings, fmt.Sprintf(format, args...)) }
	s := v.service(ns, name)
	switch {
	case s == nil:
		e.Verdict = VerdictNotFound
		add("Service %s/%s does not exist", ns, name)
		return e
	case s.Spec.Type != corev1.ServiceTypeLoadBalancer:
		e.Verdict = VerdictNotOurs
		add("spec.type is %q, not LoadBalancer: no load balancer serves it", s.Spec.Type)
		return e
	case !v.c.Filter.Manages(s):
		e.Verdict = VerdictNotOurs
		if s.Spec.LoadBalancerClass != nil {
			add("spec.loadBalancerClass is %q; ironlb serves %q", *s.Spec.LoadBalancerClass, v1beta1.LoadBalancerClass)
		} else {
			add("spec.loadBalancerClass is not set and ironlb runs with --default-class=false: it serves only %q", v1beta1.LoadBalancerClass)
		}
		return e
	}
	st := v.ServiceStatus(s)
	if len(st.Addresses) == 0 {
		e.Verdict = VerdictPending
		v.whyPending(s, st, add)
		return e
	}
	e.Verdict = VerdictAnnounced
	for _, a := range st.Addresses {
		if a.Layer2 == nil && a.BGP == nil {
			e.Verdict = VerdictNotAnnounced
			add("%s (pool %q): no L2Advertisement or BGPAdvertisement covers it (their spec.ipAddressPools and spec.serviceSelectors): nobody announces it", a.IP, a.Pool)
			continue
		}
		for _, p := range []struct {
			name string
			ps   *ProtocolStatus
		}{{"layer 2", a.Layer2}, {"BGP", a.BGP}} {
			if p.ps == nil {
				continue
			}
			if len(p.ps.Announcing) > 0 {
				add("%s (pool %q): announced over %s by %s", a.IP, a.Pool, p.name, strings.Join(p.ps.Announcing, ", "))
				if p.name == "BGP" {
					for _, ns := range p.ps.Sessions {
						if ns.Peers != nil && ns.Established == 0 {
							add("%s: node %s announces it but none of its %d BGP sessions is established (BGPNodeStatus %s)", a.IP, ns.Node, ns.PeerCount, ns.Node)
						}
					}
				}
				continue
			}
			e.Verdict = VerdictNotAnnounced
			add("%s (pool %q): no node announces it over %s: %s", a.IP, a.Pool, p.name, p.ps.NotAnnounced)
			for _, o := range p.ps.Others {
				add("  node %s: %s", o.Node, o.Reason)
			}
		}
	}
	if c := st.Announced; c != nil && c.Status != "True" && e.Verdict == VerdictAnnounced {
		add("the speakers report %s=%s (%s: %s): the plan and the wire disagree, see the speakers' Events", v1beta1.ServiceConditionAnnounced, c.Status, c.Reason, c.Message)
	} else if c == nil {
		add("no speaker has written the %s condition yet", v1beta1.ServiceConditionAnnounced)
	}
	return e
}

// whyPending explains a Service without an address.
func (v *View) whyPending(s *corev1.Service, st ServiceStatus, add func(string, ...any)) {
	if c := st.Allocated; c != nil {
		add("the controller says %s=%s: %s: %s", v1beta1.ServiceConditionIPAllocated, c.Status, c.Reason, c.Message)
	} else {
		add("the controller has not written the %s condition: is it running and leading (its Lease)?", v1beta1.ServiceConditionIPAllocated)
	}
	if pool := s.Annotations[v1beta1.AnnotationAddressPool]; pool != "" {
		p, ok := v.Config.Pools[pool]
		switch {
		case !ok:
			add("annotation %s names pool %q, which does not exist or is invalid", v1beta1.AnnotationAddressPool, pool)
		case p.Terminating:
			add("annotation %s names pool %q, which is being deleted", v1beta1.AnnotationAddressPool, pool)
		default:
			add("annotation %s asks for pool %q: %s", v1beta1.AnnotationAddressPool, pool, v.usage(pool))
		}
		return
	}
	var nsLabels labels.Set
	for _, n := range v.c.Namespaces {
		if n.Name == s.Namespace {
			nsLabels = n.Labels
		}
	}
	cands := v.Config.Candidates(s.Namespace, nsLabels, s.Labels)
	if len(cands) == 0 {
		add("no IPAddressPool may auto-assign to it: each is invalid, has spec.autoAssign false, is being deleted, or its spec.serviceAllocation does not admit namespace %q and the Service's labels", s.Namespace)
	}
	for _, c := range cands {
		add("candidate pool %q: %s", c, v.usage(c))
	}
	for _, p := range v.Problems {
		if p.Fatal && p.Kind == config.KindPool {
			add("%s", p.Error())
		}
	}
}

// usage says how many addresses a pool has free, per family, from its
// status.
func (v *View) usage(pool string) string {
	for _, p := range v.Pools() {
		if p.Name != pool {
			continue
		}
		var parts []string
		for _, f := range families(p) {
			parts = append(parts, fmt.Sprintf("%s %d of %d free", f.name, f.u.Available, f.u.Total))
		}
		if len(parts) == 0 {
			return "no usage in its status yet"
		}
		return strings.Join(parts, ", ")
	}
	return "not found"
}
