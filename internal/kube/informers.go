package kube

import (
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/cache"
)

// Informer watches the objects of one resource of rc's group that match
// sel (nil: all), in namespace or ("") in all, into a store, each object
// passed through transform first (nil: kept whole). An object that stops
// matching sel leaves the store as if deleted. It never resyncs: nothing
// the speaker does is repaired by replaying unchanged objects.
func Informer(rc cache.Getter, resource, namespace string, sel fields.Selector, obj runtime.Object, transform cache.TransformFunc) (cache.SharedIndexInformer, error) {
	if sel == nil {
		sel = fields.Everything()
	}
	lw := cache.NewListWatchFromClient(rc, resource, namespace, sel)
	inf := cache.NewSharedIndexInformer(lw, obj, 0, cache.Indexers{})
	if transform != nil {
		if err := inf.SetTransform(transform); err != nil {
			return nil, err
		}
	}
	return inf, nil
}
