package controller

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/ipam"
)

// errRequest marks a problem with what the Service asks for, as opposed to
// a shortage of addresses: the user has to change the Service.
var errRequest = errors.New("invalid request")

func requestErrorf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errRequest, fmt.Sprintf(format, args...))
}

// ServiceRequest translates a Service into the allocator's terms: who it is
// (for sharing) and what it asks for. It is pure so every annotation rule
// is unit-tested without an API server.
func ServiceRequest(svc *corev1.Service, nsLabels labels.Set, cfg *config.Config) (ipam.Service, ipam.Request, error) {
	s := ipam.Service{
		Key:        svc.Namespace + "/" + svc.Name,
		SharingKey: svc.Annotations[v1beta1.AnnotationAllowSharedIP],
		Local:      svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal,
	}
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		s.Ports = append(s.Ports, ipam.Port{Protocol: string(proto), Port: p.Port})
	}
	if s.Local {
		s.Selector = labels.SelectorFromSet(svc.Spec.Selector).String()
	}

	req := ipam.Request{Families: requestFamilies(svc)}
	if len(req.Families) == 0 {
		req.Families = []ipam.Family{ipam.FamilyV4}
	}
	if svc.Spec.IPFamilyPolicy != nil && *svc.Spec.IPFamilyPolicy == corev1.IPFamilyPolicySingleStack {
		req.Families = req.Families[:1]
	}
	req.RequireAll = svc.Spec.IPFamilyPolicy != nil && *svc.Spec.IPFamilyPolicy == corev1.IPFamilyPolicyRequireDualStack

	ips, err := requestedIPs(svc)
	if err != nil {
		return s, req, err
	}
	if len(ips) > 0 {
		// Asking for addresses is asking for their families.
		req.IPs = ips
		req.Families = req.Families[:0:0]
		for _, ip := range ips {
			req.Families = append(req.Families, ipam.FamilyOf(ip))
		}
	}

	ns := svc.Namespace
	svcLabels := labels.Set(svc.Labels)
	if name, ok := svc.Annotations[v1beta1.AnnotationAddressPool]; ok {
		pool := cfg.Pools[name]
		switch {
		case pool == nil:
			return s, req, requestErrorf("annotation %s: IPAddressPool %q does not exist or is invalid", v1beta1.AnnotationAddressPool, name)
		case pool.Terminating:
			return s, req, requestErrorf("annotation %s: IPAddressPool %q is being deleted", v1beta1.AnnotationAddressPool, name)
		case !pool.Admits(ns, nsLabels, svcLabels):
			return s, req, requestErrorf("annotation %s: IPAddressPool %q does not admit Services of namespace %q with these labels (see its spec.serviceAllocation)", v1beta1.AnnotationAddressPool, name, ns)
		}
		req.Pool = name
		req.Candidates = []string{name}
	} else {
		req.Candidates = cfg.Candidates(ns, nsLabels, svcLabels)
	}
	for _, ip := range req.IPs {
		pool := cfg.PoolOf(ip)
		switch {
		case pool == nil:
			return s, req, requestErrorf("requested IP %s is not inside any IPAddressPool", ip)
		case pool.Terminating:
			return s, req, requestErrorf("requested IP %s belongs to IPAddressPool %q, which is being deleted", ip, pool.Name)
		case !pool.Admits(ns, nsLabels, svcLabels):
			return s, req, requestErrorf("requested IP %s belongs to IPAddressPool %q, which does not admit Services of namespace %q with these labels", ip, pool.Name, ns)
		case req.Pool != "" && pool.Name != req.Pool:
			return s, req, requestErrorf("requested IP %s belongs to IPAddressPool %q, not to %q named by annotation %s", ip, pool.Name, req.Pool, v1beta1.AnnotationAddressPool)
		}
	}
	return s, req, nil
}

// requestedIPs reads the addresses a Service asks for: the annotation (one
// address per family) or the deprecated spec.loadBalancerIP, never both.
func requestedIPs(svc *corev1.Service) ([]netip.Addr, error) {
	ann, hasAnn := svc.Annotations[v1beta1.AnnotationLoadBalancerIPs]
	spec := svc.Spec.LoadBalancerIP //nolint:staticcheck // still honoured, as users expect
	if hasAnn && spec != "" {
		return nil, requestErrorf("both spec.loadBalancerIP (%s) and annotation %s (%s) are set; keep only the annotation", spec, v1beta1.AnnotationLoadBalancerIPs, ann)
	}
	field, text := "annotation "+v1beta1.AnnotationLoadBalancerIPs, ann
	if spec != "" {
		field, text = "spec.loadBalancerIP", spec
	}
	if strings.TrimSpace(text) == "" {
		if hasAnn {
			return nil, requestErrorf("%s is empty", field)
		}
		return nil, nil
	}
	var ips []netip.Addr
	seen := map[ipam.Family]netip.Addr{}
	for _, part := range strings.Split(text, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(part))
		if err != nil || ip.Zone() != "" {
			return nil, requestErrorf("%s: %q is not an IP address", field, strings.TrimSpace(part))
		}
		ip = ip.Unmap()
		f := ipam.FamilyOf(ip)
		if prev, dup := seen[f]; dup {
			return nil, requestErrorf("%s: %s and %s are both %s; give at most one address per family", field, prev, ip, f)
		}
		seen[f] = ip
		ips = append(ips, ip)
	}
	return ips, nil
}

// orderIngress sorts holdings into the order of the Service's families, so
// status lists IPv4 first for an IPv4-primary Service and vice versa.
func orderIngress(holdings []ipam.Holding, families []ipam.Family) []ipam.Holding {
	out := slices.Clone(holdings)
	rank := func(f ipam.Family) int {
		if i := slices.Index(families, f); i >= 0 {
			return i
		}
		return len(families)
	}
	sort.SliceStable(out, func(i, j int) bool {
		return rank(ipam.FamilyOf(out[i].IP)) < rank(ipam.FamilyOf(out[j].IP))
	})
	return out
}

// requestFamilies reads spec.ipFamilies in the allocator's terms, in the
// Service's order.
func requestFamilies(svc *corev1.Service) []ipam.Family {
	var out []ipam.Family
	for _, f := range svc.Spec.IPFamilies {
		switch f {
		case corev1.IPv4Protocol:
			out = append(out, ipam.FamilyV4)
		case corev1.IPv6Protocol:
			out = append(out, ipam.FamilyV6)
		}
	}
	return out
}
