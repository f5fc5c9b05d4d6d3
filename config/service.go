package config

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// ClassFilter decides which Services are ironlb's. The controller and the
// speakers must agree: a speaker that took another load balancer's
// Service for its own would write ironlb's condition and Events on it.
type ClassFilter struct {
	// Default makes ironlb answer Services that set no loadBalancerClass.
	Default bool
}

// Manages tells whether svc is a LoadBalancer Service of ironlb's class.
func (f ClassFilter) Manages(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer && f.ManagesClass(svc.Spec.LoadBalancerClass)
}

// ManagesClass tells whether a LoadBalancer Service of this
// spec.loadBalancerClass (nil: none set) is ironlb's.
func (f ClassFilter) ManagesClass(class *string) bool {
	if class == nil {
		return f.Default
	}
	return *class == v1beta1.LoadBalancerClass
}

// IngressIPs reads the addresses in a Service's status, each once.
func IngressIPs(svc *corev1.Service) []netip.Addr {
	var out []netip.Addr
	for _, in := range svc.Status.LoadBalancer.Ingress {
		if ip, err := netip.ParseAddr(in.IP); err == nil && !slices.Contains(out, ip.Unmap()) {
			out = append(out, ip.Unmap())
		}
	}
	return out
}
