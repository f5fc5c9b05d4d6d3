package controller

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlconfig "sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/internal/app"
	"github.com/ironlb/ironlb/test/apiserver"
)

func init() {
	ctrl.SetLogger(zap.New(zap.UseDevMode(true), zap.Level(zapLevel())))
}

// harness is one API server plus helpers; controllers are started with
// startController so tests can stop and restart them.
type harness struct {
	t   *testing.T
	env *apiserver.Env
	c   client.Client
	ctx context.Context
	n   atomic.Int32
}

func newHarness(t *testing.T) *harness {
	t.Parallel()
	env := apiserver.Start(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	return &harness{t: t, env: env, c: env.Client, ctx: ctx}
}

type controllerOpts struct {
	leaderElect bool
	identity    string
	filter      config.ClassFilter
}

// startController runs a manager with the ironlb controllers until the
// returned stop function is called (or the test ends).
func (h *harness) startController(o controllerOpts) (stop func()) {
	stop, _ = h.startElected(o)
	return stop
}

// startElected is startController that also returns the channel closed
// when this manager becomes leader.
func (h *harness) startElected(o controllerOpts) (stop func(), elected <-chan struct{}) {
	h.t.Helper()
	if o.identity == "" {
		o.identity = fmt.Sprintf("c%d", h.n.Add(1))
	}
	leaseDuration, renew, retry := 4*time.Second, 3*time.Second, 500*time.Millisecond
	cfg := rest.CopyConfig(h.env.Config)
	app.TuneRESTConfig(cfg)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                        h.env.Scheme,
		Metrics:                       metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:        "0",
		LeaderElection:                o.leaderElect,
		LeaderElectionID:              "ironlb-controller",
		LeaderElectionNamespace:       "default",
		LeaderElectionReleaseOnCancel: true,
		LeaseDuration:                 &leaseDuration,
		RenewDeadline:                 &renew,
		RetryPeriod:                   &retry,
		Controller:                    ctrlconfig.Controller{SkipNameValidation: ptr.To(true)},
		Logger:                        ctrl.Log.WithName(o.identity),
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := Setup(mgr, Options{Filter: o.filter, PoolStatusDelay: 50 * time.Millisecond}); err != nil {
		h.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(h.ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := mgr.Start(ctx); err != nil {
			h.t.Errorf("manager %s: %v", o.identity, err)
		}
	}()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	h.t.Cleanup(stop)
	return stop, mgr.Elected()
}

func (h *harness) create(obj client.Object) {
	h.t.Helper()
	if err := h.c.Create(h.ctx, obj); err != nil {
		h.t.Fatalf("create %T %s: %v", obj, obj.GetName(), err)
	}
}

func (h *harness) pool(name string, addrs ...string) *v1beta1.IPAddressPool {
	p := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: name}}
	for _, a := range addrs {
		p.Spec.Addresses = append(p.Spec.Addresses, v1beta1.AddressRange(a))
	}
	return p
}

// svc returns a LoadBalancer Service in namespace default with one TCP
// port; mutate it before h.create.
func (h *harness) svc(name string, port int32) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", Annotations: map[string]string{}},
		Spec: corev1.ServiceSpec{
			Type:     corev1.ServiceTypeLoadBalancer,
			Selector: map[string]string{"app": name},
			Ports:    []corev1.ServicePort{{Name: "p", Port: port, TargetPort: intstr.FromInt32(8080), Protocol: corev1.ProtocolTCP}},
		},
	}
}

func (h *harness) get(name string) *corev1.Service {
	h.t.Helper()
	var s corev1.Service
	if err := h.c.Get(h.ctx, types.NamespacedName{Namespace: "default", Name: name}, &s); err != nil {
		h.t.Fatalf("get service %s: %v", name, err)
	}
	return &s
}

// eventually polls cond until it returns "" or the timeout passes, then
// fails with cond's last complaint.
func (h *harness) eventually(timeout time.Duration, cond func() string) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		if last = cond(); last == "" {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	h.t.Fatalf("timed out after %s: %s", timeout, last)
}

func ips(s *corev1.Service) string {
	var out []string
	for _, in := range s.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return strings.Join(out, ",")
}

// waitIPs waits until the Service's ingress is exactly want ("" = none).
func (h *harness) waitIPs(name, want string) *corev1.Service {
	h.t.Helper()
	var s *corev1.Service
	h.eventually(10*time.Second, func() string {
		s = h.get(name)
		if got := ips(s); got != want {
			return fmt.Sprintf("service %s has ingress %q, want %q (conditions %v)", name, got, want, s.Status.Conditions)
		}
		return ""
	})
	return s
}

// waitCondition waits for the IPAllocated condition to have reason and a
// message containing msg.
func (h *harness) waitCondition(name, reason, msg string) *corev1.Service {
	h.t.Helper()
	var s *corev1.Service
	h.eventually(10*time.Second, func() string {
		s = h.get(name)
		c := meta.FindStatusCondition(s.Status.Conditions, v1beta1.ServiceConditionIPAllocated)
		if c == nil || c.Reason != reason || !strings.Contains(c.Message, msg) {
			return fmt.Sprintf("service %s condition %+v, want reason %s containing %q", name, c, reason, msg)
		}
		return ""
	})
	return s
}

// waitEvent waits for an Event with reason about the named object whose
// note contains msg.
func (h *harness) waitEvent(objName, reason, msg string) {
	h.t.Helper()
	h.eventually(10*time.Second, func() string {
		var evs eventsv1.EventList
		if err := h.c.List(h.ctx, &evs); err != nil {
			return err.Error()
		}
		var seen []string
		for _, e := range evs.Items {
			if e.Regarding.Name == objName {
				seen = append(seen, e.Reason+": "+e.Note)
				if e.Reason == reason && strings.Contains(e.Note, msg) {
					return ""
				}
			}
		}
		return fmt.Sprintf("no event %s containing %q for %s; have %v", reason, msg, objName, seen)
	})
}

func (h *harness) delete(obj client.Object) {
	h.t.Helper()
	if err := h.c.Delete(h.ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		h.t.Fatalf("delete %s: %v", obj.GetName(), err)
	}
}

func (h *harness) update(obj client.Object, mutate func()) {
	h.t.Helper()
	h.eventually(5*time.Second, func() string {
		if err := h.c.Get(h.ctx, client.ObjectKeyFromObject(obj), obj); err != nil {
			return err.Error()
		}
		mutate()
		if err := h.c.Update(h.ctx, obj); err != nil {
			return err.Error()
		}
		return ""
	})
}

func (h *harness) poolReady(name string) *v1beta1.IPAddressPool {
	h.t.Helper()
	var p v1beta1.IPAddressPool
	h.eventually(10*time.Second, func() string {
		if err := h.c.Get(h.ctx, types.NamespacedName{Name: name}, &p); err != nil {
			return err.Error()
		}
		c := meta.FindStatusCondition(p.Status.Conditions, v1beta1.ConditionReady)
		if c == nil || c.Status != metav1.ConditionTrue {
			return fmt.Sprintf("pool %s not ready: %+v", name, c)
		}
		return ""
	})
	return &p
}

func mustAddr(s string) netip.Addr { return netip.MustParseAddr(s) }
