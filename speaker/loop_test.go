package speaker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/go-logr/logr"
)

// TestLoop: the first pass runs at once, a trigger runs one at once, a
// failed pass is retried after a doubling backoff, a requested retry
// runs after its delay, and nothing runs after ctx ends.
func TestLoop(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	trigger := make(chan struct{}, 1)
	calls := make(chan time.Duration, 16)
	start := time.Now()
	n := 0
	pass := func(context.Context) (time.Duration, error) {
		n++
		calls <- time.Since(start)
		switch n {
		case 1, 2: // fail twice: retried after retryMin, then 2*retryMin
			return 0, errors.New("boom")
		case 3: // asks for a retry in 50 ms
			return 50 * time.Millisecond, nil
		default:
			return 0, nil
		}
	}
	done := make(chan struct{})
	go func() { loop(ctx, logr.Discard(), trigger, pass); close(done) }()
	next := func() time.Duration {
		select {
		case at := <-calls:
			return at
		case <-time.After(5 * time.Second):
			t.Fatal("no pass")
			return 0
		}
	}
	c1, c2, c3, c4 := next(), next(), next(), next()
	// Lower bounds are exact; upper bounds leave room for a loaded CI
	// machine.
	const slack = time.Second
	if c1 > slack {
		t.Errorf("first pass at %v, want at once", c1)
	}
	if d := c2 - c1; d < retryMin || d > retryMin+slack {
		t.Errorf("first retry after %v, want %v", d, retryMin)
	}
	if d := c3 - c2; d < 2*retryMin || d > 2*retryMin+slack {
		t.Errorf("second retry after %v, want %v", d, 2*retryMin)
	}
	if d := c4 - c3; d < 50*time.Millisecond || d > 50*time.Millisecond+slack {
		t.Errorf("requested retry after %v, want 50ms", d)
	}
	// Nothing more without news; a trigger runs a pass at once.
	select {
	case at := <-calls:
		t.Fatalf("unrequested pass at %v", at)
	case <-time.After(300 * time.Millisecond):
	}
	sent := time.Since(start)
	trigger <- struct{}{}
	if d := next() - sent; d > slack {
		t.Errorf("triggered pass after %v, want at once", d)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("loop did not stop with its context")
	}
}
