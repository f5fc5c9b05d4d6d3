package controller

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

// recorded is an events.EventRecorder that keeps the reasons it was given
// (the hold logic under test sits in front of the real recorder, whose
// writes the harness tests check against the API server).
type recorded struct {
	mu      sync.Mutex
	reasons []string
}

func (r *recorded) Eventf(_, _ runtime.Object, _, reason, _, _ string, _ ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reasons = append(r.reasons, reason)
}

func (r *recorded) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.reasons...)
}

// TestNormalEventsWaitForQuiet: a Warning is written at once; a Normal
// event waits while the reconcilers keep starting work, and is written
// once they have been idle for the quiet period; what overflows the
// buffer is counted, not blocked on.
func TestNormalEventsWaitForQuiet(t *testing.T) {
	rec := &recorded{}
	l := newLimitedRecorder(rec, 1000, 1000, nil)
	l.quiet = 50 * time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = l.Run(ctx) }()
	svc := &corev1.Service{}

	l.Busy()
	l.Eventf(svc, nil, corev1.EventTypeNormal, "IPAllocated", "Allocate", "x")
	l.Eventf(svc, nil, corev1.EventTypeWarning, "AllocationFailed", "Allocate", "y")
	time.Sleep(10 * time.Millisecond)
	if got := rec.got(); len(got) != 1 || got[0] != "AllocationFailed" {
		t.Fatalf("right away: %v, want only the Warning", got)
	}
	var last time.Time
	for busyUntil := time.Now().Add(200 * time.Millisecond); time.Now().Before(busyUntil); {
		l.Busy()
		last = time.Now()
		time.Sleep(10 * time.Millisecond)
	}
	if got := rec.got(); len(got) != 1 {
		t.Fatalf("while busy: %v, want the Normal event held", got)
	}
	deadline := time.Now().Add(time.Second)
	for len(rec.got()) < 2 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if got := rec.got(); len(got) != 2 || got[1] != "IPAllocated" {
		t.Fatalf("after the quiet period: %v, want the Normal event written", got)
	}
	if idle := time.Since(last); idle < l.quiet {
		t.Fatalf("written %s after the last work, want at least %s", idle, l.quiet)
	}

	full := newLimitedRecorder(rec, 1, 1, nil) // not running: nothing drains
	for range cap(full.pending) + 3 {
		full.Eventf(svc, nil, corev1.EventTypeNormal, "IPAllocated", "Allocate", "x")
	}
	if d := testutil.ToFloat64(full.dropped); d != 3 {
		t.Fatalf("dropped %v, want the 3 beyond the buffer", d)
	}
}
