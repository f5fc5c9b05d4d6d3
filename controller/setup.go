package controller

import (
	"context"
	"fmt"
	"maps"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
)

// Options configure the controller.
type Options struct {
	Filter config.ClassFilter
	// Workers is the number of Services reconciled at once. Writes to the
	// API server are what takes time, so more workers keep more of them
	// in flight while allocation stays serialised.
	Workers int
	// Registry receives the metrics; nil registers none.
	Registry prometheus.Registerer
	// PoolStatusDelay batches pool usage updates: under a burst of
	// allocations a pool's status is written once per delay, not once per
	// Service.
	PoolStatusDelay time.Duration
	// NormalEventsPerSecond limits routine (Normal) Events such as
	// IPAllocated, which also wait until the Services' reconcilers are
	// idle; Warnings are never limited or held. Default 10/s, burst 50.
	NormalEventsPerSecond float64
}

// Setup adds the ironlb controllers to mgr and returns their shared State.
func Setup(mgr ctrl.Manager, opts Options) (*State, error) {
	if opts.Workers <= 0 {
		opts.Workers = 16
	}
	if opts.PoolStatusDelay <= 0 {
		opts.PoolStatusDelay = 500 * time.Millisecond
	}
	state := NewState()
	metrics := NewMetrics(opts.Registry)
	if opts.NormalEventsPerSecond <= 0 {
		opts.NormalEventsPerSecond = 10
	}
	recorder := newLimitedRecorder(mgr.GetEventRecorder("ironlb-controller"), opts.NormalEventsPerSecond, 50, opts.Registry)
	if err := mgr.Add(manager.RunnableFunc(recorder.Run)); err != nil {
		return nil, err
	}

	// Prime runs on the leader only (RunnableFunc needs leader election),
	// and every reconciler waits for it.
	if err := mgr.Add(manager.RunnableFunc(func(ctx context.Context) error {
		if err := state.Prime(ctx, mgr.GetAPIReader(), opts.Filter); err != nil {
			return fmt.Errorf("prime allocator from existing Services: %w", err)
		}
		ctrl.LoggerFrom(ctx).Info("allocator primed from existing Service statuses")
		<-ctx.Done()
		return nil
	})); err != nil {
		return nil, err
	}

	// The reconcilers wake one another through kicks, never blocking.
	retry := &kick{}
	poolsChanged := &kick{delay: opts.PoolStatusDelay}
	refresh := map[string]Kicker{}
	refreshOf := map[string]*kick{}
	for _, k := range config.Kinds() {
		refreshOf[k.Name] = &kick{}
		refresh[k.Name] = refreshOf[k.Name]
	}

	svcRec := &ServiceReconciler{
		Client: mgr.GetClient(), State: state, Filter: opts.Filter, Recorder: recorder, Busy: recorder.Busy, Metrics: metrics,
		Retry: retry, PoolsChanged: poolsChanged,
	}
	err := ctrl.NewControllerManagedBy(mgr).
		Named("service").
		For(&corev1.Service{}, builder.WithPredicates(loadBalancerish(opts.Filter))).
		WatchesRawSource(retry).
		Watches(&corev1.Namespace{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			var out []reconcile.Request
			for _, k := range state.PendingIn(o.GetName()) {
				out = append(out, reconcile.Request{NamespacedName: keyName(k)})
			}
			return out
		}), builder.WithPredicates(predicate.LabelChangedPredicate{})).
		WithOptions(controller.Options{
			MaxConcurrentReconciles: opts.Workers,
			// A failed reconcile is almost always a write conflict with a
			// cache a moment behind (a new leader's, right after the old
			// one's last writes); it succeeds once the watch catches up.
			// Per-Service backoff only, capped at 5 s: the default adds a
			// controller-wide 10/s bucket, and a new leader with hundreds
			// of such retries left the last Services without an address
			// for over 30 s (make chaos).
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](5*time.Millisecond, 5*time.Second),
		}).
		Complete(svcRec)
	if err != nil {
		return nil, fmt.Errorf("service controller: %w", err)
	}

	cfgRec := &ConfigReconciler{Reader: mgr.GetClient(), State: state, Retry: retry, Refresh: refresh}
	toConfig := handler.EnqueueRequestsFromMapFunc(func(context.Context, client.Object) []reconcile.Request {
		return []reconcile.Request{{NamespacedName: types.NamespacedName{Name: "config"}}}
	})
	b := ctrl.NewControllerManagedBy(mgr).Named("config")
	for _, k := range config.Kinds() {
		b = b.Watches(k.New(), toConfig, builder.WithPredicates(configChanged()))
	}
	if err := b.Complete(cfgRec); err != nil {
		return nil, fmt.Errorf("config controller: %w", err)
	}

	for _, k := range config.Kinds() {
		rec := &StatusReconciler{Client: mgr.GetClient(), State: state, Kind: k.Name, New: k.New, Recorder: recorder, Metrics: metrics}
		sb := ctrl.NewControllerManagedBy(mgr).
			Named(strings.ToLower(k.Name)+"-status").
			For(k.New(), builder.WithPredicates(configChanged())).
			WatchesRawSource(refreshOf[k.Name])
		if k.Name == config.KindPool {
			// The queue folds repeats of a pool, so a burst of usage
			// changes becomes one status write per delay.
			sb = sb.WatchesRawSource(poolsChanged)
		}
		if err := sb.Complete(rec); err != nil {
			return nil, fmt.Errorf("%s status controller: %w", k.Name, err)
		}
	}
	return state, nil
}

// loadBalancerish passes events of Services that are ironlb's or carry
// what ironlb wrote (so leaving ironlb's care is noticed). Other Services,
// ClusterIP or another class (the class is immutable), never cost a
// reconcile.
func loadBalancerish(filter config.ClassFilter) predicate.Predicate {
	relevant := func(o client.Object) bool {
		s, ok := o.(*corev1.Service)
		if !ok {
			return false
		}
		if filter.Manages(s) {
			return true
		}
		_, ann := s.Annotations[v1beta1.AnnotationAllocatedFrom]
		_, cond := findCondition(s.Status.Conditions, v1beta1.ServiceConditionIPAllocated)
		return ann || cond
	}
	return predicate.Funcs{
		CreateFunc:  func(e event.CreateEvent) bool { return relevant(e.Object) },
		UpdateFunc:  func(e event.UpdateEvent) bool { return relevant(e.ObjectOld) || relevant(e.ObjectNew) },
		DeleteFunc:  func(e event.DeleteEvent) bool { return relevant(e.Object) },
		GenericFunc: func(event.GenericEvent) bool { return true },
	}
}

// configChanged passes changes that can alter the parse: spec
// (generation), labels (pool selectors), deletion and finalizers; status
// writes, including our own, do not loop back.
func configChanged() predicate.Predicate {
	return predicate.Funcs{
		UpdateFunc: func(e event.UpdateEvent) bool {
			o, n := e.ObjectOld, e.ObjectNew
			return o.GetGeneration() != n.GetGeneration() ||
				!maps.Equal(o.GetLabels(), n.GetLabels()) ||
				(o.GetDeletionTimestamp() == nil) != (n.GetDeletionTimestamp() == nil) ||
				len(o.GetFinalizers()) != len(n.GetFinalizers())
		},
	}
}
