package bgp

import (
	"context"
	"log/slog"
	"sync"

	"github.com/go-logr/logr"
)

// quietHandler adapts GoBGP's slog logging to logr one level down: GoBGP
// logs every peer configuration step and FSM transition at Info, which is
// debugging detail for ironlb (V(1)); its warnings become Info lines
// (logr has no warning level) and errors stay errors. drop silences one
// message the speaker knows to be expected.
type quietHandler struct {
	next slog.Handler
	mu   *sync.Mutex
	skip map[string]bool
}

func newQuietHandler(log logr.Logger) *quietHandler {
	return &quietHandler{next: logr.ToSlogHandler(log), mu: &sync.Mutex{}, skip: map[string]bool{}}
}

// level maps GoBGP's slog level to the one handed to logr (whose slog
// bridge turns level -n into V(n)).
func level(l slog.Level) slog.Level {
	switch {
	case l >= slog.LevelError:
		return l
	case l >= slog.LevelWarn:
		return slog.LevelInfo
	case l >= slog.LevelInfo:
		return slog.LevelInfo - 1
	default:
		return l - 1
	}
}

func (h *quietHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.next.Enabled(ctx, level(l))
}

func (h *quietHandler) Handle(ctx context.Context, r slog.Record) error {
	h.mu.Lock()
	skip := h.skip[r.Message]
	h.mu.Unlock()
	if skip {
		return nil
	}
	r2 := slog.NewRecord(r.Time, level(r.Level), r.Message, r.PC)
	r.Attrs(func(a slog.Attr) bool { r2.AddAttrs(a); return true })
	return h.next.Handle(ctx, r2)
}

func (h *quietHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return &quietHandler{next: h.next.WithAttrs(attrs), mu: h.mu, skip: h.skip}
}

func (h *quietHandler) WithGroup(name string) slog.Handler {
	return &quietHandler{next: h.next.WithGroup(name), mu: h.mu, skip: h.skip}
}

func (h *quietHandler) drop(msg string) {
	h.mu.Lock()
	h.skip[msg] = true
	h.mu.Unlock()
}
