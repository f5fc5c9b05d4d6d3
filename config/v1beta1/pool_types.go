package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// AddressRange is one block of addresses: a canonical CIDR ("198.18.0.0/24",
// "2001:db8::/120") or an inclusive range of one family
// ("198.18.0.10-198.18.0.20"). Checked at admission so a typo never reaches
// the allocator.
// +kubebuilder:validation:MinLength=3
// +kubebuilder:validation:MaxLength=100
// +kubebuilder:validation:XValidation:rule="self.contains('-') ? (self.split('-').size() == 2 && isIP(self.split('-')[0].trim()) && isIP(self.split('-')[1].trim()) && ip(self.split('-')[0].trim()).family() == ip(self.split('-')[1].trim()).family()) : isCIDR(self)",messageExpression="'address ' + self + ' is neither a CIDR (198.18.0.0/24) nor a range of one family (198.18.0.10-198.18.0.20)'"
// +kubebuilder:validation:XValidation:rule="self.contains('-') || !isCIDR(self) || cidr(self) == cidr(self).masked()",message="CIDR has host bits set: write the network address (198.18.0.0/24, not 198.18.0.1/24)"
type AddressRange string

// IPAddressPool is a set of addresses ironlb may assign to LoadBalancer
// Services.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=ippool;ippools,categories=ironlb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Addresses",type=string,JSONPath=`.spec.addresses`
// +kubebuilder:printcolumn:name="Auto-Assign",type=boolean,JSONPath=`.spec.autoAssign`
// +kubebuilder:printcolumn:name="Assigned",type=integer,JSONPath=`.status.assigned`
// +kubebuilder:printcolumn:name="Available",type=integer,JSONPath=`.status.available`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type IPAddressPool struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec IPAddressPoolSpec `json:"spec"`
	// +optional
	Status IPAddressPoolStatus `json:"status,omitempty"`
}

// IPAddressPoolSpec says which addresses, and to which Services.
type IPAddressPoolSpec struct {
	// Addresses are CIDRs or first-last ranges, IPv4 and/or IPv6. Pools
	// must not overlap each other.
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +listType=set
	Addresses []AddressRange `json:"addresses"`

	// AutoAssign lets the controller pick from this pool for Services that
	// name no pool and request no address. With false, the pool is only
	// used by name (annotation ironlb.io/address-pool) or requested IP.
	// +kubebuilder:default=true
	// +optional
	AutoAssign *bool `json:"autoAssign,omitempty"`

	// AvoidBuggyIPs skips IPv4 addresses ending in .0 and .255, which some
	// consumer equipment drops.
	// +optional
	AvoidBuggyIPs bool `json:"avoidBuggyIPs,omitempty"`

	// ServiceAllocation restricts the pool to some Services and orders it
	// against other pools.
	// +optional
	ServiceAllocation *ServiceAllocation `json:"serviceAllocation,omitempty"`
}

// ServiceAllocation restricts a pool to matching Services. A Service
// matches when its namespace is listed or matched by a namespace selector
// (or neither list is given) and its labels match a service selector (or
// none is given). A restricted pool admits no other Service, not even by
// name or requested IP: that is what makes per-tenant pools safe.
type ServiceAllocation struct {
	// Priority orders matching pools: lower numbers are tried first. Pools
	// with no serviceAllocation come after all matching restricted pools.
	// +kubebuilder:validation:Minimum=0
	// +optional
	Priority int32 `json:"priority,omitempty"`
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MaxLength=63
	// +kubebuilder:validation:items:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Namespaces []string `json:"namespaces,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	NamespaceSelectors []metav1.LabelSelector `json:"namespaceSelectors,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// IPAddressPoolStatus reports validity and usage. Counts saturate at the
// int64 maximum (an IPv6 /64 has 2^64 addresses).
type IPAddressPoolStatus struct {
	CommonStatus `json:",inline"`
	// Assigned is the number of addresses in use, both families.
	// +optional
	Assigned int64 `json:"assigned"`
	// Available is the number of free addresses, both families.
	// +optional
	Available int64 `json:"available"`
	// +optional
	IPv4 *PoolUsage `json:"ipv4,omitempty"`
	// +optional
	IPv6 *PoolUsage `json:"ipv6,omitempty"`
}

// PoolUsage counts one family's addresses.
type PoolUsage struct {
	Total     int64 `json:"total"`
	Assigned  int64 `json:"assigned"`
	Available int64 `json:"available"`
}

// IPAddressPoolList is a list of IPAddressPool.
// +kubebuilder:object:root=true
type IPAddressPoolList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []IPAddressPool `json:"items"`
}
