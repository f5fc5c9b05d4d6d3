package config

import (
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/ironlb/ironlb/config/v1beta1"
)

func TestClassFilter(t *testing.T) {
	lb := func(class *string) *corev1.Service {
		return &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, LoadBalancerClass: class}}
	}
	for _, tt := range []struct {
		def  bool
		svc  *corev1.Service
		want bool
	}{
		{true, lb(nil), true},
		{false, lb(nil), false},
		{false, lb(ptr(v1beta1.LoadBalancerClass)), true},
		{true, lb(ptr("other")), false},
		{true, &corev1.Service{Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeNodePort}}, false},
	} {
		if got := (ClassFilter{Default: tt.def}).Manages(tt.svc); got != tt.want {
			t.Errorf("default=%v %+v: %v", tt.def, tt.svc.Spec, got)
		}
	}
}
