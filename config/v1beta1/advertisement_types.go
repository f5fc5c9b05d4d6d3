package v1beta1

import metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

// PoolName names an IPAddressPool.
// +kubebuilder:validation:MinLength=1
// +kubebuilder:validation:MaxLength=253
// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$`
type PoolName string

// L2Advertisement announces the addresses of the selected pools on the
// local network with ARP (IPv4) and NDP (IPv6), one node per address.
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=l2adv,categories=ironlb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Interfaces",type=string,JSONPath=`.spec.interfaces`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type L2Advertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec L2AdvertisementSpec `json:"spec,omitempty"`
	// +optional
	Status CommonStatus `json:"status,omitempty"`
}

// L2AdvertisementSpec selects what is announced, from where. Empty pool
// lists select every pool; empty node selectors select every node.
type L2AdvertisementSpec struct {
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	IPAddressPools []PoolName `json:"ipAddressPools,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	// Interfaces restricts announcements to these node interfaces
	// (names); empty means every suitable interface.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	// +kubebuilder:validation:items:MaxLength=15
	// +kubebuilder:validation:items:Pattern=`^[^\s/]+$`
	Interfaces []string `json:"interfaces,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
}

// L2AdvertisementList is a list of L2Advertisement.
// +kubebuilder:object:root=true
type L2AdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []L2Advertisement `json:"items"`
}

// CommunityValue is a BGP community: standard "65000:100", large
// "large:65000:1:2", or the name of an alias defined in a Community object.
// +kubebuilder:validation:MaxLength=63
// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]+:[0-9]+$') ? self.split(':').all(p, int(p) <= 65535) : (self.matches('^large:[0-9]+:[0-9]+:[0-9]+$') ? self.split(':').slice(1, 4).all(p, int(p) <= 4294967295) : self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'))",messageExpression="'community ' + self + ' is not a standard community (65000:100, each part at most 65535), a large community (large:65000:1:2, each part at most 4294967295), or an alias name'"
type CommunityValue string

// BGPAdvertisement announces the addresses of the selected pools as BGP
// routes from every eligible node (ECMP at the router).
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,shortName=bgpadv,categories=ironlb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Pools",type=string,JSONPath=`.spec.ipAddressPools`
// +kubebuilder:printcolumn:name="Peers",type=string,JSONPath=`.spec.peers`
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type BGPAdvertisement struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	// +optional
	Spec BGPAdvertisementSpec `json:"spec,omitempty"`
	// +optional
	Status CommonStatus `json:"status,omitempty"`
}

// BGPAdvertisementSpec selects what is announced, to whom, and how.
type BGPAdvertisementSpec struct {
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	IPAddressPools []PoolName `json:"ipAddressPools,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	IPAddressPoolSelectors []metav1.LabelSelector `json:"ipAddressPoolSelectors,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	ServiceSelectors []metav1.LabelSelector `json:"serviceSelectors,omitempty"`
	// +optional
	// +kubebuilder:validation:MaxItems=32
	NodeSelectors []metav1.LabelSelector `json:"nodeSelectors,omitempty"`
	// Peers limits the routes to these BGPPeer names; empty means all.
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=256
	Peers []PoolName `json:"peers,omitempty"`
	// AggregationLength is the IPv4 prefix length announced for each
	// address (32 = the address alone).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=32
	// +kubebuilder:default=32
	// +optional
	AggregationLength *int32 `json:"aggregationLength,omitempty"`
	// AggregationLengthV6 is the IPv6 prefix length (128 = the address).
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=128
	// +kubebuilder:default=128
	// +optional
	AggregationLengthV6 *int32 `json:"aggregationLengthV6,omitempty"`
	// LocalPref is sent to iBGP peers only.
	// +kubebuilder:validation:Minimum=0
	// +kubebuilder:validation:Maximum=4294967295
	// +optional
	LocalPref *int64 `json:"localPref,omitempty"`
	// +optional
	// +listType=set
	// +kubebuilder:validation:MaxItems=64
	Communities []CommunityValue `json:"communities,omitempty"`
}

// BGPAdvertisementList is a list of BGPAdvertisement.
// +kubebuilder:object:root=true
type BGPAdvertisementList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []BGPAdvertisement `json:"items"`
}

// Community defines names for community values, so advertisements can say
// "no-export-upstream" instead of repeating "65000:666".
// +kubebuilder:object:root=true
// +kubebuilder:resource:scope=Cluster,categories=ironlb
// +kubebuilder:subresource:status
// +kubebuilder:printcolumn:name="Ready",type=string,JSONPath=`.status.conditions[?(@.type=="Ready")].status`
// +kubebuilder:printcolumn:name="Age",type=date,JSONPath=`.metadata.creationTimestamp`
type Community struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec CommunitySpec `json:"spec"`
	// +optional
	Status CommonStatus `json:"status,omitempty"`
}

// CommunitySpec lists aliases.
type CommunitySpec struct {
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=256
	// +listType=map
	// +listMapKey=name
	Communities []CommunityAlias `json:"communities"`
}

// CommunityAlias names one community value.
type CommunityAlias struct {
	// +kubebuilder:validation:MaxLength=63
	// +kubebuilder:validation:Pattern=`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`
	// Value is a standard or large community; an alias of an alias is not
	// allowed.
	// +kubebuilder:validation:XValidation:rule="self.matches('^[0-9]+:[0-9]+$') || self.matches('^large:[0-9]+:[0-9]+:[0-9]+$')",messageExpression="'alias value ' + self + ' must be a standard (65000:100) or large (large:65000:1:2) community'"
	Value CommunityValue `json:"value"`
}

// CommunityList is a list of Community.
// +kubebuilder:object:root=true
type CommunityList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Community `json:"items"`
}
