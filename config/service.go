package config

import (
	"net/netip"
	"slices"

	corev1 "k8s.io/api/core/v1"
)

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
