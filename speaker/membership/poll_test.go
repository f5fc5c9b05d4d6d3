package membership

import (
	"net"
	"testing"
	"time"
)

// TestPollerArrivalTime: a packet read late keeps the time it arrived,
// which is what freshness and expiry are computed from.
func TestPollerArrivalTime(t *testing.T) {
	rxc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback0))
	if err != nil {
		t.Fatal(err)
	}
	defer rxc.Close()
	p, err := newPoller(rxc)
	if err != nil {
		t.Fatal(err)
	}
	if !p.stamps {
		t.Fatal("no kernel receive timestamps")
	}
	// The kernel turns receive timestamps on a moment after the first
	// socket asks (a deferred static key); until then it stamps packets
	// when they are read. A speaker's first moments don't matter; this
	// test's do.
	time.Sleep(100 * time.Millisecond)
	txc, err := net.DialUDP("udp", nil, rxc.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer txc.Close()
	var sent []time.Time
	for _, msg := range []string{"one", "two"} {
		sent = append(sent, time.Now())
		if _, err := txc.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(30 * time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	var got []string
	var at []time.Time
	if err := p.drain(func() bool { return false }, func(b []byte, arrived time.Time) {
		got = append(got, string(b))
		at = append(at, arrived)
	}); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0] != "one" || got[1] != "two" {
		t.Fatalf("read %q, want [one two]", got)
	}
	for i := range at {
		if d := at[i].Sub(sent[i]); d < 0 || d > 25*time.Millisecond {
			t.Errorf("packet %d: arrival %v after sending, want within 25ms, not when read (%v later)", i, d, time.Since(at[i]).Round(time.Millisecond))
		}
	}
	// Nothing left: drain returns at once.
	start := time.Now()
	if err := p.drain(func() bool { return false }, func([]byte, time.Time) { t.Error("phantom packet") }); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 50*time.Millisecond {
		t.Errorf("empty drain took %v", d)
	}
	// A closed socket is an error, not a hang.
	rxc.Close()
	if err := p.drain(func() bool { return false }, func([]byte, time.Time) {}); err == nil {
		t.Error("drain on a closed socket: no error")
	}
}
