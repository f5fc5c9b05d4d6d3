package config

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// Kind names used in Problems, as kubectl spells them.
const (
	KindPool      = "IPAddressPool"
	KindL2Adv     = "L2Advertisement"
	KindBGPPeer   = "BGPPeer"
	KindBGPAdv    = "BGPAdvertisement"
	KindBFD       = "BFDProfile"
	KindCommunity = "Community"
)

// Object is any ironlb configuration object.
type Object interface {
	metav1.Object
	runtime.Object
}

// ObjectList is a list of one kind, as the API server returns it.
type ObjectList interface {
	metav1.ListInterface
	runtime.Object
}

// Kind is one kind of configuration object. Kinds is the one table that
// reading, watching and reporting go through, so a new kind is its type in
// v1beta1, its field in Objects with its row in Kinds, and its parse
// function: three places.
type Kind struct {
	// Name is the kind as kubectl spells it, Resource its plural.
	Name, Resource string
	New            func() Object
	NewList        func() ObjectList
	// Store puts the items of a list made by NewList into objs.
	Store func(objs *Objects, list ObjectList)
	// Append adds one object of this kind (a copy of it) to objs.
	Append func(objs *Objects, o Object)
	each   func(objs *Objects, fn func(Object))
}

// Kinds lists every kind of configuration object.
func Kinds() []Kind {
	return []Kind{
		kind(KindPool, "ipaddresspools", func(o *Objects) *[]v1beta1.IPAddressPool { return &o.Pools },
			func(l *v1beta1.IPAddressPoolList) []v1beta1.IPAddressPool { return l.Items }),
		kind(KindL2Adv, "l2advertisements", func(o *Objects) *[]v1beta1.L2Advertisement { return &o.L2Advertisements },
			func(l *v1beta1.L2AdvertisementList) []v1beta1.L2Advertisement { return l.Items }),
		kind(KindBGPPeer, "bgppeers", func(o *Objects) *[]v1beta1.BGPPeer { return &o.BGPPeers },
			func(l *v1beta1.BGPPeerList) []v1beta1.BGPPeer { return l.Items }),
		kind(KindBGPAdv, "bgpadvertisements", func(o *Objects) *[]v1beta1.BGPAdvertisement { return &o.BGPAdvertisements },
			func(l *v1beta1.BGPAdvertisementList) []v1beta1.BGPAdvertisement { return l.Items }),
		kind(KindBFD, "bfdprofiles", func(o *Objects) *[]v1beta1.BFDProfile { return &o.BFDProfiles },
			func(l *v1beta1.BFDProfileList) []v1beta1.BFDProfile { return l.Items }),
		kind(KindCommunity, "communities", func(o *Objects) *[]v1beta1.Community { return &o.Communities },
			func(l *v1beta1.CommunityList) []v1beta1.Community { return l.Items }),
	}
}

func kind[T any, PT interface {
	*T
	Object
}, L any, PL interface {
	*L
	ObjectList
}](name, resource string, field func(*Objects) *[]T, items func(*L) []T) Kind {
	return Kind{
		Name: name, Resource: resource,
		New:     func() Object { return PT(new(T)) },
		NewList: func() ObjectList { return PL(new(L)) },
		Store:   func(o *Objects, l ObjectList) { *field(o) = items(l.(PL)) },
		Append:  func(o *Objects, obj Object) { *field(o) = append(*field(o), *obj.(PT)) },
		each: func(o *Objects, fn func(Object)) {
			s := *field(o)
			for i := range s {
				fn(PT(&s[i]))
			}
		},
	}
}

// Each calls fn with every object and its kind.
func (o *Objects) Each(fn func(kind string, obj Object)) {
	for _, k := range Kinds() {
		k.each(o, func(obj Object) { fn(k.Name, obj) })
	}
}
