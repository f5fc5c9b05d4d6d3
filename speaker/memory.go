package speaker

import (
	"context"
	"runtime/debug"
	"runtime/metrics"
	"sync"
	"time"
)

// Trimmer hands the speaker's garbage back to the OS while it is idle.
//
// Why: the speaker runs on every node and its memory is paid once per
// node. A burst of passes (start-up, when every Service is decoded; a
// rollout; a failover) leaves a heap about twice what stays live, and an
// idle speaker allocates so little (tens of kB/s: watch bookmarks,
// status checks, scrapes) that the runtime's pacer would take many
// minutes to collect it, meanwhile keeping it resident. A forced
// collection of a heap of ~10 MB costs a few milliseconds of CPU; once
// every half minute or so that is far below the idle budget.
type Trimmer struct {
	// Quiet is how long passes and watch events must have stopped (a
	// storm of status updates from other speakers wakes no pass but is
	// still decoded: trimming amid it only makes the heap grow again);
	// MinGarbage how much must have been allocated since the last trim
	// for another to be worth it.
	Quiet      time.Duration
	MinGarbage uint64

	now    func() time.Time
	allocs func() uint64 // bytes allocated since start
	free   func()

	mu         sync.Mutex
	lastPass   time.Time
	lastAllocs uint64
}

// NewTrimmer trims through the Go runtime.
func NewTrimmer() *Trimmer {
	return &Trimmer{Quiet: 10 * time.Second, MinGarbage: 2 << 20, now: time.Now, allocs: heapAllocs, free: debug.FreeOSMemory}
}

func heapAllocs() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	if s[0].Value.Kind() != metrics.KindUint64 {
		return 0
	}
	return s[0].Value.Uint64()
}

// Active records a pass or a watch event.
func (t *Trimmer) Active() {
	t.mu.Lock()
	t.lastPass = t.now()
	t.mu.Unlock()
}

// check trims when the passes have been quiet long enough and enough
// garbage may have piled up; it reports whether it did.
func (t *Trimmer) check() bool {
	t.mu.Lock()
	quiet := t.now().Sub(t.lastPass) >= t.Quiet
	a := t.allocs()
	due := quiet && a-t.lastAllocs >= t.MinGarbage
	if due {
		t.lastAllocs = a
	}
	t.mu.Unlock()
	if due {
		t.free()
	}
	return due
}

// Run checks every period until ctx ends.
func (t *Trimmer) Run(ctx context.Context, period time.Duration) {
	every(ctx, period, func() { t.check() })
}

// every calls f every period (not at once) until ctx ends.
func every(ctx context.Context, period time.Duration, f func()) {
	tk := time.NewTicker(period)
	defer tk.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tk.C:
			f()
		}
	}
}
