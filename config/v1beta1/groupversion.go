// Package v1beta1 holds the ironlb.io/v1beta1 API: the CRDs a cluster admin
// writes to tell ironlb which addresses it may hand out and how to announce
// them. Everything that can be checked on one object alone is checked at
// admission by the OpenAPI schema and CEL rules generated from the markers
// here, so there is no webhook that could fail; checks that need the whole
// set of objects live in package config and surface as status conditions.
//
// +kubebuilder:object:generate=true
// +groupName=ironlb.io
package v1beta1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// GroupVersion is the API group and version of every ironlb kind.
var GroupVersion = schema.GroupVersion{Group: "ironlb.io", Version: "v1beta1"}

// AddToScheme registers the ironlb kinds with a scheme.
func AddToScheme(s *runtime.Scheme) error {
	s.AddKnownTypes(GroupVersion,
		&IPAddressPool{}, &IPAddressPoolList{},
		&L2Advertisement{}, &L2AdvertisementList{},
		&BGPPeer{}, &BGPPeerList{},
		&BGPAdvertisement{}, &BGPAdvertisementList{},
		&BFDProfile{}, &BFDProfileList{},
		&Community{}, &CommunityList{},
		&BGPNodeStatus{}, &BGPNodeStatusList{},
	)
	metav1.AddToGroupVersion(s, GroupVersion)
	return nil
}
