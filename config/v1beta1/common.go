package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// Condition types and reasons shared by every ironlb kind. They follow the
// Kubernetes API conventions: positive polarity, CamelCase reasons.
const (
	// ConditionReady is True when the object is valid against the whole
	// configuration and in use.
	ConditionReady = "Ready"

	ReasonValid        = "Valid"
	ReasonInvalid      = "Invalid"
	ReasonOverlap      = "Overlap"
	ReasonUnknownRef   = "UnknownReference"
	ReasonConflict     = "Conflict"
	ReasonTerminating  = "Terminating"
	ReasonOutsidePool  = "OutsidePool"
	ReasonInUse        = "InUse"
	ReasonDuplicateKey = "Duplicate"
)

// Service-facing names: annotations a user sets on a Service and the ones
// ironlb writes back.
const (
	// LoadBalancerClass is the spec.loadBalancerClass ironlb answers to.
	LoadBalancerClass = "ironlb.io/ironlb"

	AnnotationAddressPool     = "ironlb.io/address-pool"
	AnnotationLoadBalancerIPs = "ironlb.io/loadBalancerIPs"
	AnnotationAllowSharedIP   = "ironlb.io/allow-shared-ip"
	// AnnotationAllocatedFrom is written by the controller: the pool each
	// assigned address came from, so an admin sees it with kubectl.
	AnnotationAllocatedFrom = "ironlb.io/ip-allocated-from-pool"

	// ServiceConditionIPAllocated reports the controller's assignment.
	ServiceConditionIPAllocated = "ironlb.io/IPAllocated"
	// ServiceConditionAnnounced reports the speakers' announcement.
	ServiceConditionAnnounced = "ironlb.io/Announced"

	// PoolFinalizer holds a pool's deletion while services use its
	// addresses, so a delete never pulls an address out from under traffic.
	PoolFinalizer = "ironlb.io/pool-protection"
)

// CommonStatus is the status every configuration kind carries: whether the
// object is valid against the rest of the configuration.
type CommonStatus struct {
	// ObservedGeneration is the generation the conditions describe.
	// +optional
	ObservedGeneration int64 `json:"observedGeneration,omitempty"`
	// +optional
	// +listType=map
	// +listMapKey=type
	Conditions []metav1.Condition `json:"conditions,omitempty"`
}
