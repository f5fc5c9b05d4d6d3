package controller

import (
	"context"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// kick is how one reconciler asks another to look at an object again. It
// never blocks the asker: a Reconcile that waited on a full channel (as
// the first design did, three times) stalls its worker behind the very
// controller it is trying to wake. Requests go straight into the target
// controller's workqueue, which folds repeats of a key; the few made
// before that controller has started wait in a set and go in when it
// starts.
type kick struct {
	// delay, if set, holds each request back that long, so a burst of
	// requests for one key becomes one reconcile.
	delay time.Duration

	mu    sync.Mutex
	queue workqueue.TypedRateLimitingInterface[reconcile.Request]
	early map[types.NamespacedName]bool
}

// Start is the source.Source side: the controller hands over its queue.
func (k *kick) Start(_ context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.queue = q
	for nn := range k.early {
		k.add(nn)
	}
	k.early = nil
	return nil
}

func (k *kick) String() string { return "kick" }

// Add asks for a reconcile of nn.
func (k *kick) Add(nn types.NamespacedName) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.queue == nil {
		if k.early == nil {
			k.early = map[types.NamespacedName]bool{}
		}
		k.early[nn] = true
		return
	}
	k.add(nn)
}

func (k *kick) add(nn types.NamespacedName) {
	if k.delay > 0 {
		k.queue.AddAfter(reconcile.Request{NamespacedName: nn}, k.delay)
		return
	}
	k.queue.Add(reconcile.Request{NamespacedName: nn})
}

// Kicker asks a controller to reconcile an object again, without waiting.
type Kicker interface {
	Add(types.NamespacedName)
}

// keyName splits a "namespace/name" key as the State keeps them.
func keyName(key string) types.NamespacedName {
	if ns, name, ok := strings.Cut(key, "/"); ok {
		return types.NamespacedName{Namespace: ns, Name: name}
	}
	return types.NamespacedName{Name: key}
}
