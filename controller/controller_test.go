package controller

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
)

func TestAssignsLowestFreeAndWritesStatus(t *testing.T) {
	h := newHarness(t)
	h.startController(controllerOpts{filter: config.ClassFilter{Default: true}})
	h.create(h.pool("blue", "198.18.0.10-198.18.0.12"))
	h.create(h.svc("a", 80))
	s := h.waitIPs("a", "198.18.0.10")
	if m := s.Status.LoadBalancer.Ingress[0].IPMode; m == nil || *m != corev1.LoadBalancerIPModeVIP {
		t.Fatalf("ipMode = %v, want VIP", m)
	}
	h.eventually(5*time.Second, func() string {
		if got := h.get("a").Annotations[v1beta1.AnnotationAllocatedFrom]; got != "blue" {
			return "pool annotation " + got
		}
		return ""
	})
	h.waitCondition("a", ReasonAllocated, "198.18.0.10 from IPAddressPool blue")
	h.waitEvent("a", EventIPAllocated, "198.18.0.10")
	h.create(h.svc("b", 80))
	h.waitIPs("b", "198.18.0.11")
	p := h.poolReady("blue")
	h.eventually(5*time.Second, func() string {
		_ = h.c.Get(h.ctx, types.NamespacedName{Name: "blue"}, p)
		if p.Status.IPv4 == nil || p.Status.IPv4.Assigned != 2 || p.Status.IPv4.Available != 1 || p.Status.Assigned != 2 {
			return fmt.Sprintf("pool usage %+v", p.Status)
		}
		return ""
	})
	// Exhaust and fail clearly.
	h.create(h.svc("c", 80))
	h.waitIPs("c", "198.18.0.12")
	h.create(h.svc("d", 80))
	h.waitCondition("d", ReasonNoAddress, "no free IPv4")
	h.waitEvent("d", EventAllocationFailed, "IPv4")
	// Deleting one Service hands its address to the waiting one.
	h.delete(h.get("b"))
	h.waitIPs("d", "198.18.0.11")
}

func TestRequestedIPs(t *testing.T) {
	h := newHarness(t)
	h.startController(controllerOpts{filter: config.ClassFilter{Default: true}})
	h.create(h.pool("blue", "198.18.0.0/24", "2001:db8::/120"))

	s := h.svc("ann", 80)
	s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.77"
	h.create(s)
	h.waitIPs("ann", "198.18.0.77")

	s = h.svc("spec", 80)
	s.Spec.LoadBalancerIP = "198.18.0.78"
	h.create(s)
	h.waitIPs("spec", "198.18.0.78")

	s = h.svc("both", 80)
	s.Spec.LoadBalancerIP = "198.18.0.79"
	s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.79"
	h.create(s)
	h.waitCondition("both", ReasonInvalidRequest, "both spec.loadBalancerIP")

	s = h.svc("outside", 80)
	s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "203.0.113.5"
	h.create(s)
	h.waitCondition("outside", ReasonInvalidRequest, "203.0.113.5 is not inside any IPAddressPool")

	s = h.svc("taken", 80)
	s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.77"
	h.create(s)
	h.waitCondition("taken", ReasonSharingConflict, "default/ann")

	s = h.svc("dual", 80)
	s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.90,2001:db8::90"
	h.create(s)
	h.waitIPs("dual", "198.18.0.90,2001:db8::90")

	// Changing the request moves the address; nothing else does.
	h.update(h.get("ann"), func() {})
	svc := h.get("ann")
	h.update(svc, func() { svc.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.80" })
	h.waitIPs("ann", "198.18.0.80")
	h.waitIPs("spec", "198.18.0.78")
	// The freed address can be requested by the one that wanted it.
	svc = h.get("taken")
	h.update(svc, func() { svc.Annotations["touch"] = "1" })
	h.waitIPs("taken", "198.18.0.77")
}

func TestNamedPoolAndServiceAllocation(t *testing.T) {
	h := newHarness(t)
	h.startController(controllerOpts{filter: config.ClassFilter{Default: true}})
	manual := h.pool("manual", "198.18.9.0/24")
	manual.Spec.AutoAssign = ptr.To(false)
	h.create(manual)
	h.create(h.pool("open", "198.18.0.0/24"))
	tenant := h.pool("tenant", "198.18.5.0/24")
	tenant.Spec.ServiceAllocation = &v1beta1.ServiceAllocation{Namespaces: []string{"team-a"}}
	h.create(tenant)
	h.create(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}})

	h.create(h.svc("auto", 80))
	h.waitIPs("auto", "198.18.0.0") // autoAssign false pools are skipped

	s := h.svc("named", 80)
	s.Annotations[v1beta1.AnnotationAddressPool] = "manual"
	h.create(s)
	h.waitIPs("named", "198.18.9.0")

	s = h.svc("ghost", 80)
	s.Annotations[v1beta1.AnnotationAddressPool] = "nope"
	h.create(s)
	h.waitCondition("ghost", ReasonInvalidRequest, `IPAddressPool "nope" does not exist`)

	// A tenant's Service gets the tenant pool first.
	ts := h.svc("t", 80)
	ts.Namespace = "team-a"
	h.create(ts)
	h.eventually(10*time.Second, func() string {
		var got corev1.Service
		_ = h.c.Get(h.ctx, types.NamespacedName{Namespace: "team-a", Name: "t"}, &got)
		if ips(&got) != "198.18.5.0" {
			return "team-a/t has " + ips(&got)
		}
		return ""
	})
	// Nobody else may take from the tenant pool, not even by asking.
	s = h.svc("thief", 80)
	s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.5.9"
	h.create(s)
	h.waitCondition("thief", ReasonInvalidRequest, `does not admit Services of namespace "default"`)
}

func TestSharing(t *testing.T) {
	h := newHarness(t)
	h.startController(controllerOpts{filter: config.ClassFilter{Default: true}})
	h.create(h.pool("blue", "198.18.0.0/24"))
	mk := func(name, key string, port int32, local bool, app string) {
		s := h.svc(name, port)
		if key != "" {
			s.Annotations[v1beta1.AnnotationAllowSharedIP] = key
		}
		if local {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
		s.Spec.Selector = map[string]string{"app": app}
		h.create(s)
	}
	mk("web", "k", 80, false, "x")
	h.waitIPs("web", "198.18.0.0")
	mk("dns", "k", 53, false, "y")
	h.waitIPs("dns", "198.18.0.0") // same key, other port: shares
	mk("web2", "k", 80, false, "z")
	h.waitIPs("web2", "198.18.0.1") // same port: gets its own
	mk("other", "", 443, false, "x")
	h.waitIPs("other", "198.18.0.2")

	// Requested shared IP with an overlapping port fails and says why.
	s := h.svc("clash", 53)
	s.Annotations[v1beta1.AnnotationAllowSharedIP] = "k"
	s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.0"
	h.create(s)
	h.waitCondition("clash", ReasonSharingConflict, "TCP/53")
	// ETP Local must share the selector.
	mk("l1", "loc", 80, true, "same")
	h.waitIPs("l1", "198.18.0.3")
	s = h.svc("l2", 81)
	s.Annotations[v1beta1.AnnotationAllowSharedIP] = "loc"
	s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.3"
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	s.Spec.Selector = map[string]string{"app": "different"}
	h.create(s)
	h.waitCondition("l2", ReasonSharingConflict, "198.18.0.3")
	s = h.svc("l3", 82)
	s.Annotations[v1beta1.AnnotationAllowSharedIP] = "loc"
	s.Annotations[v1beta1.AnnotationLoadBalancerIPs] = "198.18.0.3"
	s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	s.Spec.Selector = map[string]string{"app": "same"}
	h.create(s)
	h.waitIPs("l3", "198.18.0.3")
}

func dualStack(s *corev1.Service, policy corev1.IPFamilyPolicy) {
	s.Spec.IPFamilyPolicy = &policy
	s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv4Protocol, corev1.IPv6Protocol}
}

func TestDualStack(t *testing.T) {
	h := newHarness(t)
	h.startController(controllerOpts{filter: config.ClassFilter{Default: true}})
	h.create(h.pool("v4only", "198.18.0.0/30"))

	s := h.svc("req", 80)
	dualStack(s, corev1.IPFamilyPolicyRequireDualStack)
	h.create(s)
	h.waitCondition("req", ReasonNoAddress, "IPv6")
	if got := ips(h.get("req")); got != "" {
		t.Fatalf("RequireDualStack got %q from a v4-only pool", got)
	}

	s = h.svc("pref", 80)
	dualStack(s, corev1.IPFamilyPolicyPreferDualStack)
	h.create(s)
	h.waitIPs("pref", "198.18.0.0")
	h.waitCondition("pref", ReasonPartial, "IPv6")

	// A dual-stack pool appears: PreferDualStack gains IPv6 without
	// losing its IPv4; RequireDualStack gets both from the one pool.
	h.create(h.pool("dual", "198.18.1.0/30", "2001:db8::/126"))
	// Both retry at once, so which IPv6 address each gets is a race; the
	// families, the order and the pools are not.
	h.eventually(10*time.Second, func() string {
		p, r := ips(h.get("pref")), ips(h.get("req"))
		okP := strings.HasPrefix(p, "198.18.0.0,2001:db8::") && strings.Count(p, ",") == 1
		okR := strings.HasPrefix(r, "198.18.1.0,2001:db8::") && strings.Count(r, ",") == 1
		if !okP || !okR {
			return "pref " + p + " req " + r
		}
		return ""
	})

	s = h.svc("v6first", 80)
	s.Spec.IPFamilyPolicy = ptr.To(corev1.IPFamilyPolicyPreferDualStack)
	s.Spec.IPFamilies = []corev1.IPFamily{corev1.IPv6Protocol, corev1.IPv4Protocol}
	h.create(s)
	h.waitIPs("v6first", "2001:db8::2,198.18.1.1") // one pool for both when it can
}

func TestClassFiltering(t *testing.T) {
	h := newHarness(t)
	h.startController(controllerOpts{filter: config.ClassFilter{Default: false}})
	h.create(h.pool("blue", "198.18.0.0/24"))
	s := h.svc("noclass", 80)
	h.create(s)
	s = h.svc("ours", 80)
	s.Spec.LoadBalancerClass = ptr.To(v1beta1.LoadBalancerClass)
	h.create(s)
	s = h.svc("theirs", 80)
	s.Spec.LoadBalancerClass = ptr.To("example.com/other")
	h.create(s)
	h.waitIPs("ours", "198.18.0.0")
	time.Sleep(500 * time.Millisecond)
	for _, n := range []string{"noclass", "theirs"} {
		if got := h.get(n); ips(got) != "" || len(got.Status.Conditions) != 0 {
			t.Fatalf("%s touched: %v %v", n, ips(got), got.Status.Conditions)
		}
	}
	// Leaving our care clears what we wrote and frees the address.
	ours := h.get("ours")
	h.update(ours, func() {
		ours.Spec.Type = corev1.ServiceTypeClusterIP
		ours.Spec.Ports[0].NodePort = 0
		ours.Spec.AllocateLoadBalancerNodePorts = nil
		ours.Spec.LoadBalancerClass = nil
	})
	h.waitIPs("ours", "")
	h.eventually(5*time.Second, func() string {
		got := h.get("ours")
		if _, ok := got.Annotations[v1beta1.AnnotationAllocatedFrom]; ok || meta.FindStatusCondition(got.Status.Conditions, v1beta1.ServiceConditionIPAllocated) != nil {
			return "annotation or condition left behind"
		}
		return ""
	})
	s = h.svc("next", 80)
	s.Spec.LoadBalancerClass = ptr.To(v1beta1.LoadBalancerClass)
	h.create(s)
	h.waitIPs("next", "198.18.0.0")
}

func TestPoolShrinkAndDelete(t *testing.T) {
	h := newHarness(t)
	h.startController(controllerOpts{filter: config.ClassFilter{Default: true}})
	p := h.pool("blue", "198.18.0.0/30")
	h.create(p)
	h.create(h.svc("a", 80))
	h.create(h.svc("b", 80))
	h.waitIPs("a", "198.18.0.0")
	h.waitIPs("b", "198.18.0.1")

	// Shrink: a's address leaves the pool; a keeps it, flagged.
	h.update(p, func() { p.Spec.Addresses = []v1beta1.AddressRange{"198.18.0.1-198.18.0.3"} })
	h.waitCondition("a", v1beta1.ReasonOutsidePool, "198.18.0.0 kept")
	h.waitEvent("a", EventOutsidePool, "198.18.0.0")
	h.waitIPs("a", "198.18.0.0")
	h.waitIPs("b", "198.18.0.1")
	h.create(h.svc("c", 80))
	h.waitIPs("c", "198.18.0.2")

	// Grow back: the orphan is re-homed, never handed to another.
	h.update(p, func() { p.Spec.Addresses = []v1beta1.AddressRange{"198.18.0.0/30"} })
	h.waitCondition("a", ReasonAllocated, "198.18.0.0 from IPAddressPool blue")
	h.create(h.svc("d", 80))
	h.waitIPs("d", "198.18.0.3")

	// Delete: held by the finalizer while in use.
	h.delete(p)
	h.eventually(10*time.Second, func() string {
		var got v1beta1.IPAddressPool
		if err := h.c.Get(h.ctx, types.NamespacedName{Name: "blue"}, &got); err != nil {
			return err.Error()
		}
		c := meta.FindStatusCondition(got.Status.Conditions, v1beta1.ConditionReady)
		if got.DeletionTimestamp == nil || c == nil || c.Reason != v1beta1.ReasonTerminating || !strings.Contains(c.Message, "4 addresses") {
			return fmt.Sprintf("pool %+v", c)
		}
		return ""
	})
	for n, ip := range map[string]string{"a": "198.18.0.0", "b": "198.18.0.1", "c": "198.18.0.2", "d": "198.18.0.3"} {
		h.waitIPs(n, ip)
	}
	h.create(h.svc("e", 80))
	h.waitCondition("e", ReasonNoAddress, "")
	for _, n := range []string{"a", "b", "c", "d"} {
		h.delete(h.get(n))
	}
	h.eventually(10*time.Second, func() string {
		err := h.c.Get(h.ctx, types.NamespacedName{Name: "blue"}, &v1beta1.IPAddressPool{})
		if !apierrors.IsNotFound(err) {
			return fmt.Sprintf("pool still there: %v", err)
		}
		return ""
	})
}

func TestInvalidConfigIsFlaggedAndHarmless(t *testing.T) {
	h := newHarness(t)
	h.startController(controllerOpts{filter: config.ClassFilter{Default: true}})
	h.create(h.pool("old", "198.18.0.0/24"))
	h.create(h.svc("a", 80))
	h.waitIPs("a", "198.18.0.0")
	time.Sleep(10 * time.Millisecond)
	h.create(h.pool("new", "198.18.0.0/25"))
	h.eventually(10*time.Second, func() string {
		var got v1beta1.IPAddressPool
		_ = h.c.Get(h.ctx, types.NamespacedName{Name: "new"}, &got)
		c := meta.FindStatusCondition(got.Status.Conditions, v1beta1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionFalse || c.Reason != v1beta1.ReasonOverlap || !strings.Contains(c.Message, `IPAddressPool "old"`) {
			return fmt.Sprintf("condition %+v", c)
		}
		return ""
	})
	h.waitEvent("new", v1beta1.ReasonOverlap, `"old"`)
	h.poolReady("old")
	h.create(&v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "l2"}, Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"ghost"}}})
	h.eventually(10*time.Second, func() string {
		var got v1beta1.L2Advertisement
		_ = h.c.Get(h.ctx, types.NamespacedName{Name: "l2"}, &got)
		c := meta.FindStatusCondition(got.Status.Conditions, v1beta1.ConditionReady)
		if c == nil || c.Reason != v1beta1.ReasonUnknownRef || !strings.Contains(c.Message, `"ghost"`) {
			return fmt.Sprintf("condition %+v", c)
		}
		return ""
	})
	h.waitIPs("a", "198.18.0.0")
	h.create(h.svc("b", 80))
	h.waitIPs("b", "198.18.0.1")
}

// TestRestartMovesNothing checks the central invariant: a controller that
// restarts, with Services created and deleted while it was down, keeps
// every address where it was and hands out none twice.
func TestRestartMovesNothing(t *testing.T) {
	h := newHarness(t)
	stop := h.startController(controllerOpts{filter: config.ClassFilter{Default: true}})
	h.create(h.pool("blue", "198.18.0.0/28"))
	want := map[string]string{}
	for i := range 6 {
		n := fmt.Sprintf("s%d", i)
		h.create(h.svc(n, 80))
		want[n] = fmt.Sprintf("198.18.0.%d", i)
		h.waitIPs(n, want[n])
	}
	stop()
	// While down: free the lowest address and add newcomers. A controller
	// that forgot the rest would hand 198.18.0.1.. to the newcomers.
	h.delete(h.get("s0"))
	delete(want, "s0")
	h.create(h.svc("late1", 80))
	h.create(h.svc("late2", 80))
	h.startController(controllerOpts{filter: config.ClassFilter{Default: true}})
	for n, ip := range want {
		h.waitIPs(n, ip)
	}
	// The two newcomers are reconciled concurrently: which gets which is
	// a race, but they get exactly the freed one and the next free one.
	h.eventually(10*time.Second, func() string {
		got := []string{ips(h.get("late1")), ips(h.get("late2"))}
		sort.Strings(got)
		if strings.Join(got, " ") != "198.18.0.0 198.18.0.6" {
			return fmt.Sprintf("newcomers got %v", got)
		}
		return ""
	})
	time.Sleep(300 * time.Millisecond)
	for n, ip := range want {
		h.waitIPs(n, ip)
	}
}

func TestLeaderElectionHandover(t *testing.T) {
	h := newHarness(t)
	stopA, electedA := h.startElected(controllerOpts{leaderElect: true, identity: "a", filter: config.ClassFilter{Default: true}})
	stopB, electedB := h.startElected(controllerOpts{leaderElect: true, identity: "b", filter: config.ClassFilter{Default: true}})
	h.create(h.pool("blue", "198.18.0.0/24"))
	for i := range 5 {
		h.create(h.svc(fmt.Sprintf("s%d", i), 80))
	}
	for i := range 5 {
		h.waitIPs(fmt.Sprintf("s%d", i), fmt.Sprintf("198.18.0.%d", i))
	}
	// Stop whichever leads; the other must take over without moving
	// anything, and hand the freed lowest address to the newcomer.
	var standby <-chan struct{}
	select {
	case <-electedA:
		stopA()
		standby = electedB
	case <-electedB:
		stopB()
		standby = electedA
	case <-time.After(10 * time.Second):
		t.Fatal("no leader")
	}
	select {
	case <-standby:
	case <-time.After(15 * time.Second):
		t.Fatal("standby never became leader")
	}
	h.delete(h.get("s1"))
	h.create(h.svc("new", 80))
	h.waitIPs("new", "198.18.0.1")
	for _, i := range []int{0, 2, 3, 4} {
		h.waitIPs(fmt.Sprintf("s%d", i), fmt.Sprintf("198.18.0.%d", i))
	}
}
