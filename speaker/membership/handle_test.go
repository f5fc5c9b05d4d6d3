package membership

import (
	"net/netip"
	"testing"
	"time"
)

// These tests drive the receive path directly, with crafted packets and a
// fake clock, so that the replay and liveness rules are checked exactly,
// independently of sockets and scheduling.

// peerMap gives each name a distinct unused address: the tests that use it
// never run the mesh, or don't care where its packets go.
func peerMap(names ...string) map[string]netip.AddrPort {
	m := make(map[string]netip.AddrPort, len(names))
	for i, n := range names {
		m[n] = netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(9+i))
	}
	return m
}

// handleHarness is a mesh "self" that knows peer "p", fed by hand.
type handleHarness struct {
	t   *testing.T
	m   *Mesh
	now time.Time
}

func newHarness(t *testing.T) *handleHarness {
	t.Helper()
	m, err := New(Config{Self: "self", Bind: loopback0, Key: testKey(), Metrics: NewMetrics(nil)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	m.SetPeers(peerMap("p"))
	return &handleHarness{t: t, m: m, now: m.start.Add(time.Hour)}
}

// ourSeq is the sequence self would have sent ago before h.now.
func (h *handleHarness) ourSeq(ago time.Duration) uint64 {
	return uint64(h.now.Add(-ago).Sub(h.m.start))
}

// pkt is a packet from p with incarnation inc and sequence seq, echoing a
// sequence of self's sent echoAgo before now (no echo if echoAgo < 0).
func (h *handleHarness) pkt(typ msgType, inc, seq uint64, echoAgo time.Duration) []byte {
	msg := message{typ: typ, sender: "p", dest: "self", inc: inc, seq: seq}
	if echoAgo >= 0 {
		msg.echoInc, msg.echoSeq = h.m.inc, h.ourSeq(echoAgo)
	}
	return sealed(testKey(), msg)
}

func TestHandleSequence(t *testing.T) {
	const (
		fresh = 10 * time.Millisecond
		old   = DefaultTimeout + time.Millisecond
		none  = -1
	)
	hb, lv := msgHeartbeat, msgLeaving
	// One scenario, step by step: each step is a packet from p, the result
	// it must get and whether p is alive afterwards.
	steps := []struct {
		name     string
		advance  time.Duration
		typ      msgType
		inc, seq uint64
		echoAgo  time.Duration
		result   string
		alive    bool
	}{
		{"first contact teaches the sequence only", 0, hb, 1, 100, none, resultOK, false},
		{"fresh echo proves p alive", 0, hb, 1, 101, fresh, resultOK, true},
		{"exact replay", 0, hb, 1, 101, fresh, resultStale, true},
		{"older sequence", 0, hb, 1, 99, fresh, resultStale, true},
		{"steady state", DefaultInterval, hb, 1, 102, fresh, resultOK, true},
		{"echo exactly Timeout old still counts", 0, hb, 1, 103, DefaultTimeout, resultOK, true},
		{"echo too old proves nothing", 0, hb, 1, 104, old, resultStale, true},
		{"no echo", 0, hb, 1, 105, none, resultOK, true},
		{"leaving of another incarnation", 0, lv, 2, 200, fresh, resultStale, true},
		{"leaving", 0, lv, 1, 106, none, resultOK, false},
		{"heartbeat overtaken by the leaving", 0, hb, 1, 105, fresh, resultStale, false},
		{"replayed leaving", 0, lv, 1, 106, none, resultStale, false},
		{"restart: new incarnation, fresh", time.Second, hb, 3, 5, fresh, resultOK, true},
		{"old incarnation is superseded", 0, hb, 1, 1000, fresh, resultStale, true},
		{"newer incarnation without fresh echo is refused", DefaultInterval / 4, hb, 4, 1, none, resultStale, true},
		{"newer incarnation with old echo", 0, hb, 4, 2, old, resultStale, true},
		{"replayed leaving of the old incarnation", 0, lv, 1, 2000, fresh, resultStale, true},
		{"current incarnation continues", DefaultInterval, hb, 3, 6, fresh, resultOK, true},
	}
	h := newHarness(t)
	for _, s := range steps {
		h.now = h.now.Add(s.advance)
		result := h.m.handle(h.pkt(s.typ, s.inc, s.seq, s.echoAgo), h.now)
		if result != s.result {
			t.Errorf("%s: result %q, want %q", s.name, result, s.result)
		}
		if got := h.m.IsAlive("p"); got != s.alive {
			t.Errorf("%s: alive %v, want %v", s.name, got, s.alive)
		}
	}
}

func TestHandleRejects(t *testing.T) {
	other := []byte("a different key, 16+ bytes")
	tests := []struct {
		name   string
		b      []byte
		result string
	}{
		{"garbage", []byte("GET / HTTP/1.1\r\n\r\n"), resultMalformed},
		{"wrong key", sealed(other, message{typ: msgHeartbeat, sender: "p", dest: "self", inc: 1, seq: 1}), resultBadMAC},
		{"flipped bit", func() []byte {
			b := sealed(testKey(), message{typ: msgHeartbeat, sender: "p", dest: "self", inc: 1, seq: 1})
			b[20] ^= 1
			return b
		}(), resultBadMAC},
		{"unknown sender", sealed(testKey(), message{typ: msgHeartbeat, sender: "q", dest: "self", inc: 1, seq: 1}), resultUnknownPeer},
		{"self as sender", sealed(testKey(), message{typ: msgHeartbeat, sender: "self", dest: "self", inc: 1, seq: 1}), resultUnknownPeer},
		{"addressed to another node", sealed(testKey(), message{typ: msgHeartbeat, sender: "p", dest: "q", inc: 1, seq: 1}), resultUnknownPeer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHarness(t)
			if result := h.m.handle(tt.b, h.now); result != tt.result {
				t.Errorf("got %q, want %q", result, tt.result)
			}
			if p := h.m.peers["p"]; p.inc != 0 || p.seq != 0 {
				t.Errorf("rejected packet changed the peer's state to %+v", *p)
			}
		})
	}
}

// An incarnation learnt from a packet that proved nothing (a replay of an
// old process's packet, say) must not lock the real one out.
func TestHandleUnconfirmedIncarnationIsReplaced(t *testing.T) {
	h := newHarness(t)
	if r := h.m.handle(h.pkt(msgHeartbeat, 7, 1000, -1), h.now); r != resultOK {
		t.Fatalf("first packet: %q", r)
	}
	if r := h.m.handle(h.pkt(msgHeartbeat, 8, 10, -1), h.now); r != resultOK {
		t.Fatalf("other incarnation replacing an unconfirmed one: %q", r)
	}
	if p := h.m.peers["p"]; p.inc != 8 || p.seq != 10 || p.confirmed {
		t.Fatalf("peer state %+v, want incarnation 8 at 10, unconfirmed", *p)
	}
	if r := h.m.handle(h.pkt(msgHeartbeat, 8, 11, 0), h.now); r != resultOK || !h.m.IsAlive("p") {
		t.Fatalf("fresh heartbeat: %q, alive %v", r, h.m.IsAlive("p"))
	}
}

func TestExpire(t *testing.T) {
	h := newHarness(t)
	h.m.handle(h.pkt(msgHeartbeat, 1, 1, 0), h.now)
	if !h.m.IsAlive("p") {
		t.Fatal("p not alive")
	}
	<-h.m.Changes()
	deadline := h.now.Add(DefaultTimeout)
	if next := h.m.expire(deadline.Add(-time.Nanosecond)); !next.Equal(deadline) || !h.m.IsAlive("p") {
		t.Fatalf("just before the deadline: next %v (want %v), alive %v", next, deadline, h.m.IsAlive("p"))
	}
	if next := h.m.expire(deadline); !next.IsZero() || h.m.IsAlive("p") {
		t.Fatalf("at the deadline: next %v, alive %v", next, h.m.IsAlive("p"))
	}
	select {
	case <-h.m.Changes():
	default:
		t.Error("no change notified")
	}
	if got := counterValue(h.m.metrics.Transitions.WithLabelValues("dead")); got != 1 {
		t.Errorf("dead transitions %v, want 1", got)
	}
}
