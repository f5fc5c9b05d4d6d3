package speaker

import (
	"sync"
	"time"
)

// republishDelay coalesces the announcers' reports (an address on the
// wire, a conflict) into one condition update: a speaker taking over
// dozens of addresses reports each.
const republishDelay = 100 * time.Millisecond

// conditionWriter runs condition writes in the background, so a pass (and
// with it a failover) never waits on the API server. Only the newest
// write waits: one handed over while another runs replaces any that
// waited, since it reports a newer state of the same Services.
type conditionWriter struct {
	mu       sync.Mutex
	pending  func()
	running  bool
	deferred bool // a schedule()d write is due
}

// publish runs write in the background, after the one running (if any).
func (w *conditionWriter) publish(write func()) {
	w.mu.Lock()
	w.pending = write
	if w.running {
		w.mu.Unlock()
		return
	}
	w.running = true
	w.mu.Unlock()
	go func() {
		for {
			w.mu.Lock()
			next := w.pending
			w.pending = nil
			if next == nil {
				w.running = false
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
			next()
		}
	}()
}

// schedule calls fn in republishDelay, unless a call is scheduled already.
func (w *conditionWriter) schedule(fn func()) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.deferred {
		return
	}
	w.deferred = true
	time.AfterFunc(republishDelay, func() {
		w.mu.Lock()
		w.deferred = false
		w.mu.Unlock()
		fn()
	})
}
