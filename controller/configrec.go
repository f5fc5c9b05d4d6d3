package controller

import (
	"context"
	"fmt"
	"math"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/ipam"
)

// ConfigReconciler re-parses the whole configuration whenever any ironlb
// object changes; the parse is cheap and whole-set rules (overlaps,
// references) need every object anyway.
type ConfigReconciler struct {
	Reader client.Reader
	State  *State
	// Retry is told the Services to look at again.
	Retry Kicker
	// Refresh is told, per kind, every configuration object, so its
	// status reconciler republishes conditions.
	Refresh map[string]Kicker
}

// Reconcile parses the configuration and installs it.
func (r *ConfigReconciler) Reconcile(ctx context.Context, _ ctrl.Request) (ctrl.Result, error) {
	if err := r.State.WaitPrimed(ctx); err != nil {
		return ctrl.Result{}, err
	}
	objs, err := ReadConfig(ctx, r.Reader)
	if err != nil {
		return ctrl.Result{}, err
	}
	objs.Established = r.State.Config().Valid
	cfg, problems := config.Parse(objs)
	gens := map[ObjectRef]int64{}
	eachObject(&objs, func(kind string, o client.Object) {
		gens[ObjectRef{kind, o.GetName()}] = o.GetGeneration()
	})
	for _, k := range r.State.SetConfig(cfg, problems, gens) {
		r.Retry.Add(keyName(k))
	}
	eachObject(&objs, func(kind string, o client.Object) {
		r.Refresh[kind].Add(types.NamespacedName{Name: o.GetName()})
	})
	return ctrl.Result{}, nil
}

// eachObject calls fn for every object of objs with its kind.
func eachObject(objs *config.Objects, fn func(kind string, o client.Object)) {
	objs.Each(func(kind string, o config.Object) { fn(kind, o) })
}

// StatusReconciler publishes the Ready condition of one kind of
// configuration object (and, for pools, usage and the deletion finalizer).
type StatusReconciler struct {
	Client   client.Client
	State    *State
	Kind     string
	New      func() config.Object
	Recorder events.EventRecorder
	Metrics  *Metrics
}

// commonStatus returns the shared status part of any ironlb object.
func commonStatus(o client.Object) *v1beta1.CommonStatus {
	switch t := o.(type) {
	case *v1beta1.IPAddressPool:
		return &t.Status.CommonStatus
	case *v1beta1.L2Advertisement:
		return &t.Status
	case *v1beta1.BGPPeer:
		return &t.Status
	case *v1beta1.BGPAdvertisement:
		return &t.Status
	case *v1beta1.BFDProfile:
		return &t.Status
	case *v1beta1.Community:
		return &t.Status
	}
	panic(fmt.Sprintf("commonStatus: unexpected %T", o))
}

// Reconcile writes conditions derived from the last parse.
func (r *StatusReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if err := r.State.WaitPrimed(ctx); err != nil {
		return ctrl.Result{}, err
	}
	obj := r.New()
	if err := r.Client.Get(ctx, req.NamespacedName, obj); err != nil {
		if apierrors.IsNotFound(err) && r.Kind == config.KindPool {
			r.Metrics.PoolTotal.DeletePartialMatch(map[string]string{"pool": req.Name})
			r.Metrics.PoolInUse.DeletePartialMatch(map[string]string{"pool": req.Name})
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	ref := ObjectRef{r.Kind, obj.GetName()}
	problems, gen, parsed := r.State.Parsed(ref)
	if !parsed || gen != obj.GetGeneration() {
		// The config reconciler has not seen this version yet; it will
		// nudge us once it has, so we never publish a stale verdict.
		return ctrl.Result{}, nil
	}
	orig := obj.DeepCopyObject().(client.Object)
	st := commonStatus(obj)
	cond := readyCondition(problems, obj.GetGeneration())
	if pool, ok := obj.(*v1beta1.IPAddressPool); ok {
		done, err := r.poolStatus(ctx, pool, &cond)
		if err != nil || done {
			return ctrl.Result{}, err
		}
	}
	old, _ := findCondition(st.Conditions, cond.Type)
	meta.SetStatusCondition(&st.Conditions, cond)
	st.ObservedGeneration = obj.GetGeneration()
	if equalStatus(orig, obj) {
		return ctrl.Result{}, nil
	}
	if err := r.Client.Status().Patch(ctx, obj, client.MergeFrom(orig)); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if old.Reason != cond.Reason || old.Message != cond.Message {
		typ := corev1.EventTypeNormal
		if cond.Status != metav1.ConditionTrue {
			typ = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(obj, nil, typ, cond.Reason, "Validate", "%s", cond.Message)
	}
	return ctrl.Result{}, nil
}

func equalStatus(a, b client.Object) bool {
	sa, sb := commonStatus(a), commonStatus(b)
	if sa.ObservedGeneration != sb.ObservedGeneration || len(sa.Conditions) != len(sb.Conditions) {
		return false
	}
	for i := range sa.Conditions {
		x, y := sa.Conditions[i], sb.Conditions[i]
		if x.Type != y.Type || x.Status != y.Status || x.Reason != y.Reason || x.Message != y.Message || x.ObservedGeneration != y.ObservedGeneration {
			return false
		}
	}
	if pa, ok := a.(*v1beta1.IPAddressPool); ok {
		pb := b.(*v1beta1.IPAddressPool)
		return pa.Status.Assigned == pb.Status.Assigned && pa.Status.Available == pb.Status.Available &&
			equalUsage(pa.Status.IPv4, pb.Status.IPv4) && equalUsage(pa.Status.IPv6, pb.Status.IPv6)
	}
	return true
}

func equalUsage(a, b *v1beta1.PoolUsage) bool {
	return (a == nil) == (b == nil) && (a == nil || *a == *b)
}

// readyCondition turns an object's problems into its Ready condition.
func readyCondition(problems []config.Problem, gen int64) metav1.Condition {
	c := metav1.Condition{Type: v1beta1.ConditionReady, ObservedGeneration: gen}
	if len(problems) == 0 {
		c.Status, c.Reason, c.Message = metav1.ConditionTrue, v1beta1.ReasonValid, "valid and in effect"
		return c
	}
	fatal := false
	msgs := make([]string, len(problems))
	for i, p := range problems {
		msgs[i] = p.Field + ": " + p.Message
		fatal = fatal || p.Fatal
	}
	c.Status, c.Reason = metav1.ConditionFalse, problems[0].Reason
	c.Message = strings.Join(msgs, "; ")
	if fatal {
		c.Message += " (the object is ignored until this is fixed)"
	} else {
		c.Message += " (the rest of the object is in effect)"
	}
	return c
}

// poolStatus fills usage and manages the deletion finalizer. done means
// the object was written (finalizer change) and this pass is over.
func (r *StatusReconciler) poolStatus(ctx context.Context, pool *v1beta1.IPAddressPool, cond *metav1.Condition) (bool, error) {
	usage, inUse, known := r.State.Usage(pool.Name)
	if pool.DeletionTimestamp != nil {
		if inUse == 0 {
			if controllerutil.RemoveFinalizer(pool, v1beta1.PoolFinalizer) {
				return true, client.IgnoreNotFound(r.Client.Update(ctx, pool))
			}
			return true, nil
		}
		cond.Status, cond.Reason = metav1.ConditionFalse, v1beta1.ReasonTerminating
		cond.Message = fmt.Sprintf("being deleted: %d addresses are still used by Services; deletion completes when they are released", inUse)
	} else if controllerutil.AddFinalizer(pool, v1beta1.PoolFinalizer) {
		return true, client.IgnoreNotFound(r.Client.Update(ctx, pool))
	}
	pool.Status.IPv4, pool.Status.IPv6 = nil, nil
	pool.Status.Assigned, pool.Status.Available = 0, 0
	if !known {
		return false, nil
	}
	for f, u := range usage {
		pu := &v1beta1.PoolUsage{Total: sat(u.Total), Assigned: sat(u.Assigned), Available: sat(u.Available)}
		pool.Status.Assigned = satAdd(pool.Status.Assigned, pu.Assigned)
		pool.Status.Available = satAdd(pool.Status.Available, pu.Available)
		if f == ipam.FamilyV4 {
			pool.Status.IPv4 = pu
		} else {
			pool.Status.IPv6 = pu
		}
		r.Metrics.PoolTotal.WithLabelValues(pool.Name, f.String()).Set(float64(u.Total))
		r.Metrics.PoolInUse.WithLabelValues(pool.Name, f.String()).Set(float64(u.Assigned))
	}
	return false, nil
}

func sat(v uint64) int64 {
	if v > math.MaxInt64 {
		return math.MaxInt64
	}
	return int64(v)
}

func satAdd(a, b int64) int64 {
	if a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}
