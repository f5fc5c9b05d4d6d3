package controller

import (
	"errors"
	"net/netip"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/ipam"
)

func TestServiceRequest(t *testing.T) {
	tenant := v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "tenant"}, Spec: v1beta1.IPAddressPoolSpec{
		Addresses: []v1beta1.AddressRange{"198.18.5.0/24"}, ServiceAllocation: &v1beta1.ServiceAllocation{Namespaces: []string{"team-a"}},
	}}
	open := v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "open"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/24", "2001:db8::/64"}}}
	cfg, ps := config.Parse(config.Objects{Pools: []v1beta1.IPAddressPool{tenant, open}})
	if len(ps) > 0 {
		t.Fatal(ps)
	}
	base := func(mut func(*corev1.Service)) *corev1.Service {
		s := &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "s", Annotations: map[string]string{}},
			Spec: corev1.ServiceSpec{
				Type: corev1.ServiceTypeLoadBalancer, IPFamilies: []corev1.IPFamily{corev1.IPv4Protocol},
				Ports: []corev1.ServicePort{{Port: 53, Protocol: corev1.ProtocolUDP}, {Port: 53}}, Selector: map[string]string{"app": "dns"},
			},
		}
		mut(s)
		return s
	}
	tests := []struct {
		name    string
		svc     *corev1.Service
		check   func(ipam.Service, ipam.Request) string
		wantErr string
	}{
		{name: "plain", svc: base(func(*corev1.Service) {}), check: func(s ipam.Service, r ipam.Request) string {
			if s.Key != "default/s" || len(s.Ports) != 2 || s.Ports[1].Protocol != "TCP" || s.Local || strings.Join(r.Candidates, ",") != "open" || len(r.Families) != 1 {
				return "unexpected"
			}
			return ""
		}},
		{name: "local selector", svc: base(func(s *corev1.Service) { s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal }), check: func(s ipam.Service, _ ipam.Request) string {
			if !s.Local || s.Selector != "app=dns" {
				return "selector " + s.Selector
			}
			return ""
		}},
		{name: "require dual", svc: base(func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyRequireDualStack)
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
		}), check: func(_ ipam.Service, r ipam.Request) string {
			if !r.RequireAll || len(r.Families) != 2 || r.Families[0] != ipam.FamilyV6 {
				return "families"
			}
			return ""
		}},
		{name: "single stack trims", svc: base(func(s *corev1.Service) {
			s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicySingleStack)
			s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
		}), check: func(_ ipam.Service, r ipam.Request) string {
			if len(r.Families) != 1 {
				return "families"
			}
			return ""
		}},
		{name: "requested ips set families", svc: base(func(s *corev1.Service) {
			s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = " 2001:db8::5 , 198.18.0.5"
		}), check: func(_ ipam.Service, r ipam.Request) string {
			if len(r.IPs) != 2 || r.IPs[0] != netip.MustParseAddr("2001:db8::5") || r.Families[0] != ipam.FamilyV6 {
				return "ips"
			}
			return ""
		}},
		{name: "sharing key", svc: base(func(s *corev1.Service) { s.Annotations[v1beta1.AnnotationAllowSharedIP] = "k" }), check: func(s ipam.Service, _ ipam.Request) string {
			if s.SharingKey != "k" {
				return "key"
			}
			return ""
		}},
		{name: "tenant namespace gets tenant first", svc: base(func(s *corev1.Service) { s.Namespace = "team-a" }), check: func(_ ipam.Service, r ipam.Request) string {
			if strings.Join(r.Candidates, ",") != "tenant,open" {
				return strings.Join(r.Candidates, ",")
			}
			return ""
		}},
		{name: "both requests", svc: base(func(s *corev1.Service) {
			s.Spec.LoadBalancerIP = "198.18.0.1"
			s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.2"
		}), wantErr: "both spec.loadBalancerIP"},
		{name: "bad ip", svc: base(func(s *corev1.Service) { s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.x" }), wantErr: `"198.18.0.x" is not an IP address`},
		{name: "empty annotation", svc: base(func(s *corev1.Service) { s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "" }), wantErr: "is empty"},
		{name: "two of a family", svc: base(func(s *corev1.Service) { s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.1,198.18.0.2" }), wantErr: "at most one address per family"},
		{name: "outside pools", svc: base(func(s *corev1.Service) { s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "203.0.113.1" }), wantErr: "not inside any IPAddressPool"},
		{name: "tenant ip from elsewhere", svc: base(func(s *corev1.Service) { s.Spec.LoadBalancerIP = "198.18.5.1" }), wantErr: `does not admit Services of namespace "default"`},
		{name: "unknown pool", svc: base(func(s *corev1.Service) { s.Annotations[v1beta1.AnnotationAddressPool] = "x" }), wantErr: `IPAddressPool "x" does not exist`},
		{name: "ip not in named pool", svc: base(func(s *corev1.Service) {
			s.Annotations[v1beta1.AnnotationAddressPool] = "open"
			s.Namespace = "team-a"
			s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.5.1"
		}), wantErr: `not to "open"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, r, err := ServiceRequest(tt.svc, nil, cfg)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, errRequest) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if msg := tt.check(s, r); msg != "" {
				t.Fatalf("%s: %+v %+v", msg, s, r)
			}
		})
	}
}

// TestReleaseRetriesOnlyPending is the unit half of "deleting one Service
// must not trigger a pass over all Services".
func TestReleaseRetriesOnlyPending(t *testing.T) {
	s := NewState()
	cfg, _ := config.Parse(config.Objects{Pools: []v1beta1.IPAddressPool{{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/30"}}}}})
	s.SetConfig(cfg, nil, nil)
	req := ipam.Request{Families: []ipam.Family{ipam.FamilyV4}, Candidates: []string{"p"}}
	for _, k := range []string{"a/1", "a/2", "a/3", "a/4", "a/5", "a/6"} {
		_, _ = s.Ensure(ipam.Service{Key: k}, req)
	}
	freed, retry := s.Release("a/2")
	if len(freed) != 1 || strings.Join(retry, ",") != "a/5,a/6" {
		t.Fatalf("freed %v retry %v, want the two waiting Services only", freed, retry)
	}
	if _, retry := s.Release("nobody"); len(retry) != 0 {
		t.Fatalf("releasing nothing retried %v", retry)
	}
}
