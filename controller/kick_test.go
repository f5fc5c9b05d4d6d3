package controller

import (
	"context"
	"fmt"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"
)

// A kick never blocks its caller, before or after the target controller
// started (the channels it replaced blocked once 1,024 requests waited),
// and the queue folds repeats.
func TestKickNeverBlocks(t *testing.T) {
	for _, tc := range []struct {
		name          string
		before, after int // requests before and after Start
	}{
		{"before start", 5000, 0},
		{"after start", 0, 5000},
		{"both", 3000, 3000},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &kick{}
			q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
			defer q.ShutDown()
			done := make(chan struct{})
			go func() {
				defer close(done)
				for i := range tc.before {
					k.Add(types.NamespacedName{Namespace: "ns", Name: fmt.Sprint(i)})
					k.Add(types.NamespacedName{Namespace: "ns", Name: fmt.Sprint(i)}) // a repeat
				}
				if err := k.Start(context.Background(), q); err != nil {
					t.Error(err)
				}
				for i := range tc.after {
					k.Add(types.NamespacedName{Namespace: "ns", Name: fmt.Sprint(i)})
				}
			}()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("a kick blocked")
			}
			if want := max(tc.before, tc.after); q.Len() != want {
				t.Errorf("queue holds %d requests, want %d", q.Len(), want)
			}
		})
	}
}

// A delayed kick lands after its delay, once for many requests.
func TestKickDelay(t *testing.T) {
	k := &kick{delay: 200 * time.Millisecond}
	q := workqueue.NewTypedRateLimitingQueue(workqueue.DefaultTypedControllerRateLimiter[reconcile.Request]())
	defer q.ShutDown()
	if err := k.Start(context.Background(), q); err != nil {
		t.Fatal(err)
	}
	for range 100 {
		k.Add(types.NamespacedName{Name: "pool"})
	}
	if q.Len() != 0 {
		t.Fatalf("queue holds %d requests at once, want none before the delay", q.Len())
	}
	deadline := time.Now().Add(5 * time.Second)
	for q.Len() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if q.Len() != 1 {
		t.Errorf("queue holds %d requests after the delay, want 1", q.Len())
	}
}

func TestKeyName(t *testing.T) {
	for key, want := range map[string]types.NamespacedName{
		"ns/svc": {Namespace: "ns", Name: "svc"},
		"pool":   {Name: "pool"},
	} {
		if got := keyName(key); got != want {
			t.Errorf("keyName(%q) = %v, want %v", key, got, want)
		}
	}
}
