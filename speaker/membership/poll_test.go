package membership

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPollerArrivalTime: a packet read late keeps the time it arrived,
// which is what freshness and expiry are computed from.
func TestPollerArrivalTime(t *testing.T) {
	rxc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback0))
	if err != nil {
		t.Fatal(err)
	}
	defer rxc.Close()
	rc, err := rxc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	p, err := newPoller(rc)
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

// TestSocketGroup: on one address and port, heartbeats reach only the
// socket read at ticks, which Go's network poller never sees (it is
// blocking), leaving messages reach only the urgent socket, and the
// sending socket receives nothing, over both IPv4 and IPv6.
func TestSocketGroup(t *testing.T) {
	for _, bind := range []netip.AddrPort{loopback0, netip.MustParseAddrPort("[::1]:0")} {
		t.Run(bind.Addr().String(), func(t *testing.T) {
			s, err := listenGroup(bind)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if s.urgent == nil || s.local.Port() == 0 || s.local.Addr() != bind.Addr() {
				t.Fatalf("no steered group on %v (local %v, urgent %v)", bind, s.local, s.urgent)
			}
			if err := s.rx.Control(func(fd uintptr) {
				fl, err := unix.FcntlInt(fd, unix.F_GETFL, 0)
				if err != nil || fl&unix.O_NONBLOCK != 0 {
					t.Errorf("rx socket flags %#x (%v): want blocking, outside the poller", fl, err)
				}
			}); err != nil {
				t.Fatal(err)
			}
			c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(s.local))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			const beats = 150 // more than one recvmmsg batch
			pkt := func(typ msgType, i int) []byte { return []byte{0, byte(typ), byte(i)} }
			for i := range beats {
				c.Write(pkt(msgHeartbeat, i))
			}
			c.Write(pkt(msgLeaving, 0))
			time.Sleep(50 * time.Millisecond)

			buf := make([]byte, 64)
			s.urgent.SetReadDeadline(time.Now().Add(time.Second))
			n, _, err := s.urgent.ReadFromUDPAddrPort(buf)
			if err != nil || n != 3 || msgType(buf[typeOffset]) != msgLeaving {
				t.Errorf("urgent socket read %v (%v), want the leaving message", buf[:n], err)
			}
			p, err := newPoller(s.rx)
			if err != nil {
				t.Fatal(err)
			}
			got := 0
			if err := p.drain(func() bool { return false }, func(b []byte, _ time.Time) {
				if msgType(b[typeOffset]) != msgHeartbeat {
					t.Errorf("rx read type %d", b[typeOffset])
				}
				got++
			}); err != nil {
				t.Fatal(err)
			}
			if got != beats {
				t.Errorf("rx read %d heartbeats, want %d", got, beats)
			}
		})
	}
}

// TestSender: one call sends a batch; a destination the kernel refuses
// (port 0) or that the socket can't address (IPv6 from an IPv4 socket)
// is skipped and the rest still go out, from the mesh's own port.
func TestSender(t *testing.T) {
	// An IPv6 socket reaches IPv4 addresses too (v4-mapped), so its
	// unreachable destination is a second refused one.
	for _, tc := range []struct{ bind, other string }{{"127.0.0.1", "[::1]:9"}, {"::1", "[::1]:0"}} {
		t.Run(tc.bind, func(t *testing.T) {
			bind := netip.AddrPortFrom(netip.MustParseAddr(tc.bind), 0)
			s, err := listenGroup(bind)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			r, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(bind))
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			to := r.LocalAddr().(*net.UDPAddr).AddrPort()
			out := newSender(s.rx, bind.Addr())
			n, err := out.send([]datagram{
				{b: []byte("a"), to: to},
				{b: []byte("refused"), to: netip.AddrPortFrom(bind.Addr(), 0)},
				{b: []byte("b"), to: to},
				{b: []byte("other family"), to: netip.MustParseAddrPort(tc.other)},
				{b: []byte("c"), to: to},
			})
			if n != 3 || err == nil {
				t.Errorf("send = %d, %v; want 3 sent and the refusal reported", n, err)
			}
			var got []string
			buf := make([]byte, 64)
			r.SetReadDeadline(time.Now().Add(time.Second))
			for len(got) < 3 {
				k, from, err := r.ReadFromUDPAddrPort(buf)
				if err != nil {
					break
				}
				if from.Port() != s.local.Port() {
					t.Errorf("sent from port %d, want the mesh's %d", from.Port(), s.local.Port())
				}
				got = append(got, string(buf[:k]))
			}
			if strings.Join(got, ",") != "a,b,c" {
				t.Errorf("received %q, want a, b, c", got)
			}
		})
	}
}
