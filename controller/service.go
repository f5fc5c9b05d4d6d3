package controller

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/ipam"
)

// Event reasons on Services.
const (
	EventIPAllocated      = "IPAllocated"
	EventAllocationFailed = "AllocationFailed"
	EventOutsidePool      = "OutsidePool"
	EventIPReleased       = "IPReleased"
)

// Condition reasons of ironlb.io/IPAllocated.
const (
	ReasonAllocated       = "Allocated"
	ReasonPartial         = "PartiallyAllocated"
	ReasonNoAddress       = "NoFreeAddress"
	ReasonInvalidRequest  = "InvalidRequest"
	ReasonSharingConflict = "SharingConflict"
	ReasonRestoreConflict = "AddressConflict"
)

// ServiceReconciler assigns addresses to LoadBalancer Services.
type ServiceReconciler struct {
	Client   client.Client
	State    *State
	Filter   config.ClassFilter
	Recorder events.EventRecorder
	// Busy, if set, is told each time a reconcile starts (the Recorder
	// holds routine Events back meanwhile).
	Busy    func()
	Metrics *Metrics
	// Retry is told the Services to look at again when addresses free up.
	Retry Kicker
	// PoolsChanged is told the pools whose usage changed.
	PoolsChanged Kicker
}

// Reconcile brings one Service's addresses and status in line.
func (r *ServiceReconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	if r.Busy != nil {
		r.Busy()
	}
	if err := r.State.WaitPrimed(ctx); err != nil {
		return ctrl.Result{}, err
	}
	key := req.Namespace + "/" + req.Name
	var svc corev1.Service
	if err := r.Client.Get(ctx, req.NamespacedName, &svc); err != nil {
		if !apierrors.IsNotFound(err) {
			return ctrl.Result{}, err
		}
		r.release(ctx, key)
		return ctrl.Result{}, nil
	}
	if !r.Filter.Manages(&svc) {
		return ctrl.Result{}, r.leave(ctx, &svc, key)
	}
	if svc.DeletionTimestamp != nil {
		// Keep the address until the Service is really gone.
		return ctrl.Result{}, nil
	}
	before := r.State.Holdings(key)
	holdings, allocErr := r.allocate(ctx, &svc, key)
	if err := r.writeStatus(ctx, &svc, holdings, allocErr); err != nil {
		return ctrl.Result{}, err
	}
	if !sameHoldings(before, holdings) {
		r.poolsChanged(append(before, holdings...))
	}
	return ctrl.Result{}, nil
}

func (r *ServiceReconciler) allocate(ctx context.Context, svc *corev1.Service, key string) ([]ipam.Holding, error) {
	if err := r.State.Conflict(key); err != nil && len(r.State.Holdings(key)) == 0 && len(svc.Status.LoadBalancer.Ingress) > 0 {
		// The address in its status belongs to an older Service; say so
		// until the user acts, instead of silently renumbering it.
		r.State.MarkPending(key)
		return nil, fmt.Errorf("%w: %v", errConflict, err)
	}
	var ns corev1.Namespace
	nsLabels := labels.Set{}
	if err := r.Client.Get(ctx, types.NamespacedName{Name: svc.Namespace}, &ns); err == nil {
		nsLabels = ns.Labels
	}
	isvc, ireq, err := ServiceRequest(svc, nsLabels, r.State.Config())
	if err != nil {
		r.State.MarkPending(key)
		return r.State.Holdings(key), err
	}
	return r.State.Ensure(isvc, ireq)
}

var errConflict = errors.New("address conflict")

// release forgets a deleted Service and retries the waiting ones.
func (r *ServiceReconciler) release(ctx context.Context, key string) {
	before := r.State.Holdings(key)
	freed, retry := r.State.Release(key)
	if len(freed) > 0 {
		log.FromContext(ctx).V(1).Info("released", "service", key, "ips", freed)
	}
	r.poolsChanged(before)
	for _, k := range retry {
		r.Retry.Add(keyName(k))
	}
}

// leave handles a Service that is no longer ours (type or class changed):
// its addresses are freed and the status ironlb wrote is cleared, so no
// stale EXTERNAL-IP lingers.
func (r *ServiceReconciler) leave(ctx context.Context, svc *corev1.Service, key string) error {
	held := r.State.Holdings(key)
	_, hasCond := findCondition(svc.Status.Conditions, v1beta1.ServiceConditionIPAllocated)
	_, hasAnn := svc.Annotations[v1beta1.AnnotationAllocatedFrom]
	if len(held) == 0 && !hasCond && !hasAnn {
		return nil
	}
	// One status write clears ingress, our condition and our annotation
	// (metadata rides along in a Service status write).
	obj := svc.DeepCopy()
	if hasCond || len(held) > 0 {
		obj.Status.LoadBalancer.Ingress = nil
	}
	meta.RemoveStatusCondition(&obj.Status.Conditions, v1beta1.ServiceConditionIPAllocated)
	delete(obj.Annotations, v1beta1.AnnotationAllocatedFrom)
	if err := r.Client.Status().Update(ctx, obj); err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("clear status of service %s: %w", key, err)
	}
	if len(held) > 0 {
		r.Recorder.Eventf(svc, nil, corev1.EventTypeNormal, EventIPReleased, "Release", "Service is no longer of type LoadBalancer with class %s; released %s", v1beta1.LoadBalancerClass, ipsOf(held))
		r.release(ctx, key)
	}
	return nil
}

// writeStatus writes ingress, the IPAllocated condition and the pool
// annotation when they differ from what the Service shows, and emits an
// Event on each change of outcome.
func (r *ServiceReconciler) writeStatus(ctx context.Context, svc *corev1.Service, holdings []ipam.Holding, allocErr error) error {
	families := requestFamilies(svc)
	holdings = orderIngress(holdings, families)
	cond := metav1.Condition{Type: v1beta1.ServiceConditionIPAllocated, ObservedGeneration: svc.Generation}
	switch {
	case allocErr == nil && anyOrphan(holdings):
		cond.Status, cond.Reason = metav1.ConditionTrue, v1beta1.ReasonOutsidePool
		cond.Message = fmt.Sprintf("%s kept, but no longer inside any IPAddressPool; it stays reserved until the Service is changed or deleted", ipsOf(orphans(holdings)))
	case allocErr == nil:
		cond.Status, cond.Reason = metav1.ConditionTrue, ReasonAllocated
		cond.Message = fmt.Sprintf("%s from IPAddressPool %s", ipsOf(holdings), poolsOf(holdings))
	case isPartial(allocErr):
		cond.Status, cond.Reason = metav1.ConditionTrue, ReasonPartial
		cond.Message = fmt.Sprintf("%s from IPAddressPool %s; %v (retried when addresses free up)", ipsOf(holdings), poolsOf(holdings), allocErr)
	default:
		cond.Status, cond.Reason = metav1.ConditionFalse, failureReason(allocErr)
		cond.Message = allocErr.Error()
		if len(holdings) > 0 {
			cond.Status = metav1.ConditionTrue
			cond.Message = fmt.Sprintf("kept %s: %v", ipsOf(holdings), allocErr)
		}
	}
	var ingress []corev1.LoadBalancerIngress
	vip := corev1.LoadBalancerIPModeVIP
	for _, h := range holdings {
		ingress = append(ingress, corev1.LoadBalancerIngress{IP: h.IP.String(), IPMode: &vip})
	}
	old, _ := findCondition(svc.Status.Conditions, cond.Type)
	changedOutcome := old.Status != cond.Status || old.Reason != cond.Reason || old.Message != cond.Message
	conds := slices.Clone(svc.Status.Conditions)
	condChanged := meta.SetStatusCondition(&conds, cond)
	cond = *meta.FindStatusCondition(conds, cond.Type)
	pools := poolsOf(holdings)
	annChanged := svc.Annotations[v1beta1.AnnotationAllocatedFrom] != pools
	if !annChanged && !condChanged && slices.EqualFunc(svc.Status.LoadBalancer.Ingress, ingress, sameIngress) {
		return nil
	}
	if err := r.patchStatus(ctx, svc, ingress, cond, annChanged, pools); err != nil {
		return err
	}
	if changedOutcome {
		r.Metrics.observe(cond.Reason)
		switch {
		case cond.Reason == ReasonAllocated || cond.Reason == ReasonPartial:
			r.Recorder.Eventf(svc, nil, corev1.EventTypeNormal, EventIPAllocated, "Allocate", "%s", cond.Message)
		case cond.Reason == v1beta1.ReasonOutsidePool:
			r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, EventOutsidePool, "Allocate", "%s", cond.Message)
		default:
			r.Recorder.Eventf(svc, nil, corev1.EventTypeWarning, EventAllocationFailed, "Allocate", "%s", cond.Message)
		}
	}
	return nil
}

// patchStatus writes ingress, the IPAllocated condition and, when asked,
// the pool annotation in ONE update of the status subresource: the Service
// status strategy keeps metadata changes, so one write instead of two keeps
// ironlb close to the API server's own limit under load, and the
// controller needs no write access to Services themselves (TestAssigns...
// TestAssignsLowestFreeAndWritesStatus checks the annotation lands). It is
// an update (PUT) with the cached resourceVersion rather than a patch: the
// API server applies it without a read-modify-write of its own, and a
// concurrent writer (a speaker's condition) makes it fail with a conflict
// and retry instead of being overwritten.
func (r *ServiceReconciler) patchStatus(ctx context.Context, svc *corev1.Service, ingress []corev1.LoadBalancerIngress, cond metav1.Condition, annChanged bool, pools string) error {
	obj := svc.DeepCopy()
	obj.Status.LoadBalancer.Ingress = ingress
	meta.SetStatusCondition(&obj.Status.Conditions, cond)
	if annChanged {
		if pools == "" {
			delete(obj.Annotations, v1beta1.AnnotationAllocatedFrom)
		} else {
			if obj.Annotations == nil {
				obj.Annotations = map[string]string{}
			}
			obj.Annotations[v1beta1.AnnotationAllocatedFrom] = pools
		}
	}
	start := time.Now()
	if err := r.Client.Status().Update(ctx, obj); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("write status of service %s/%s: %w", svc.Namespace, svc.Name, err)
	}
	r.Metrics.StatusWrite.Observe(time.Since(start).Seconds())
	return nil
}

func (r *ServiceReconciler) poolsChanged(holdings []ipam.Holding) {
	seen := map[string]bool{}
	for _, h := range holdings {
		if h.Pool == "" || seen[h.Pool] {
			continue
		}
		seen[h.Pool] = true
		r.PoolsChanged.Add(types.NamespacedName{Name: h.Pool})
	}
}

func failureReason(err error) string {
	switch {
	case errors.Is(err, errRequest), errors.Is(err, ipam.ErrInvalidRequest), errors.Is(err, ipam.ErrNotInPool):
		return ReasonInvalidRequest
	case errors.Is(err, errConflict):
		return ReasonRestoreConflict
	case errors.Is(err, ipam.ErrConflict):
		return ReasonSharingConflict
	default:
		return ReasonNoAddress
	}
}

func findCondition(conds []metav1.Condition, t string) (metav1.Condition, bool) {
	if c := meta.FindStatusCondition(conds, t); c != nil {
		return *c, true
	}
	return metav1.Condition{}, false
}

func sameIngress(a, b corev1.LoadBalancerIngress) bool {
	return a.IP == b.IP && a.Hostname == b.Hostname && (a.IPMode == nil) == (b.IPMode == nil) && (a.IPMode == nil || *a.IPMode == *b.IPMode)
}

func sameHoldings(a, b []ipam.Holding) bool {
	return slices.EqualFunc(a, b, func(x, y ipam.Holding) bool { return x.IP == y.IP && x.Pool == y.Pool })
}

func anyOrphan(hs []ipam.Holding) bool { return len(orphans(hs)) > 0 }

func orphans(hs []ipam.Holding) []ipam.Holding {
	var out []ipam.Holding
	for _, h := range hs {
		if h.Orphan {
			out = append(out, h)
		}
	}
	return out
}

func ipsOf(hs []ipam.Holding) string {
	parts := make([]string, len(hs))
	for i, h := range hs {
		parts[i] = h.IP.String()
	}
	return strings.Join(parts, ",")
}

// poolsOf names the pools of the holdings, in order, without repeats.
func poolsOf(hs []ipam.Holding) string {
	var parts []string
	for _, h := range hs {
		if h.Pool != "" && !slices.Contains(parts, h.Pool) {
			parts = append(parts, h.Pool)
		}
	}
	return strings.Join(parts, ",")
}

func isPartial(err error) bool {
	var p *ipam.PartialError
	return errors.As(err, &p)
}
