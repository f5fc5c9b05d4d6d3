package membership

import (
	"maps"
	"math/rand/v2"
	"net"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWrongKey(t *testing.T) {
	t.Parallel()
	a, b := newNode(t, "a", testKey()), newNode(t, "b", testKey())
	c := newNode(t, "c", []byte("not the cluster's key, but long"))
	nodes := []*node{a, b, c}
	connect(nodes...)
	for _, n := range nodes {
		n.start(t)
	}
	waitAlive(t, a, "b", true, time.Second)
	waitAlive(t, b, "a", true, time.Second)
	time.Sleep(5 * DefaultInterval)
	for _, n := range nodes {
		if got := n.packets(resultBadMAC); got == 0 {
			t.Errorf("%s: no bad_mac packets counted", n.name)
		}
	}
	for _, pair := range [][2]*node{{a, c}, {b, c}, {c, a}, {c, b}} {
		if pair[0].m.IsAlive(pair[1].name) {
			t.Errorf("%s sees %s alive", pair[0].name, pair[1].name)
		}
	}
	// Never alive, not even for a moment.
	for _, n := range nodes {
		want := 1.0
		if n == c {
			want = 0
		}
		if got := n.transitions("alive"); got != want {
			t.Errorf("%s: %v transitions to alive, want %v", n.name, got, want)
		}
	}
}

// proxy sits between a sender and a receiver and can replay what it saw:
// the attacker on the path.
type proxy struct {
	conn     *net.UDPConn
	to       netip.AddrPort
	withhold atomic.Bool

	mu        sync.Mutex
	delivered [][]byte
	withheld  [][]byte
}

func newProxy(t *testing.T, to netip.AddrPort) *proxy {
	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback0))
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{conn: conn, to: to}
	done := make(chan struct{})
	t.Cleanup(func() { conn.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, recvBufLen)
		for {
			n, _, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			pkt := slices.Clone(buf[:n])
			p.mu.Lock()
			if p.withhold.Load() {
				p.withheld = append(p.withheld, pkt)
			} else {
				p.delivered = append(p.delivered, pkt)
				conn.WriteToUDPAddrPort(pkt, to)
			}
			p.mu.Unlock()
		}
	}()
	return p
}

func (p *proxy) addr() netip.AddrPort {
	return p.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// replay sends the packets again, paced like heartbeats would be.
func (p *proxy) replay(pkts [][]byte) {
	for _, pkt := range pkts {
		p.conn.WriteToUDPAddrPort(pkt, p.to)
		time.Sleep(2 * time.Millisecond)
	}
}

func TestReplay(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// withhold is how long before the crash the proxy stops
		// forwarding (0: never).
		withhold time.Duration
		// wait is how long after b sees a dead the replay starts.
		wait time.Duration
		// pick chooses the packets to replay.
		pick func(p *proxy) [][]byte
		// resurrect: whether the replay may bring a back (for at most a
		// Timeout), as documented for packets delayed less than Timeout.
		resurrect bool
	}{
		{
			name: "packets already delivered",
			pick: func(p *proxy) [][]byte { return p.delivered },
		},
		{
			name:     "withheld packets, replayed after Timeout",
			withhold: 250 * time.Millisecond,
			wait:     DefaultTimeout,
			pick:     func(p *proxy) [][]byte { return p.withheld },
		},
		{
			name:      "withheld packets, replayed at once",
			withhold:  150 * time.Millisecond,
			pick:      func(p *proxy) [][]byte { return p.withheld },
			resurrect: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b := newNode(t, "a", testKey()), newNode(t, "b", testKey())
			px := newProxy(t, b.m.Addr())
			a.m.SetPeers(map[string]netip.AddrPort{"b": px.addr()})
			b.m.SetPeers(map[string]netip.AddrPort{"a": a.m.Addr()})
			a.start(t)
			b.start(t)
			waitAlive(t, b, "a", true, time.Second)
			time.Sleep(2 * DefaultInterval)
			if tt.withhold > 0 {
				px.withhold.Store(true)
				time.Sleep(tt.withhold)
			}
			a.crash(t)
			waitAlive(t, b, "a", false, time.Second)
			time.Sleep(tt.wait)

			px.mu.Lock()
			pkts := slices.Clone(tt.pick(px))
			px.mu.Unlock()
			if len(pkts) == 0 {
				t.Fatal("nothing captured")
			}
			stale := b.packets(resultStale)
			replayed := time.Now()
			px.replay(pkts)
			time.Sleep(DefaultInterval)

			if !tt.resurrect {
				if got := b.transitions("alive"); got != 1 || b.m.IsAlive("a") {
					t.Errorf("replay of %d packets resurrected a (alive %v, %v transitions to alive)", len(pkts), b.m.IsAlive("a"), got)
				}
				if got := b.packets(resultStale) - stale; got != float64(len(pkts)) {
					t.Errorf("%v of %d replayed packets counted stale", got, len(pkts))
				}
				return
			}
			// A replay fresher than Timeout may prove a alive again, but
			// only for one Timeout: none of its packets can be replayed
			// twice, and they all age.
			if b.transitions("alive") > 1 {
				at, _ := waitAlive(t, b, "a", false, time.Second)
				if d := at.Sub(replayed); d > DefaultTimeout+DefaultInterval+time.Duration(len(pkts))*2*time.Millisecond {
					t.Errorf("resurrected by the replay for %v", d)
				}
				t.Logf("resurrected by the replay until %v after it", at.Sub(replayed))
			}
			px.replay(pkts)
			time.Sleep(DefaultInterval)
			if b.m.IsAlive("a") {
				t.Error("second replay resurrected a")
			}
		})
	}
}

func TestUnknownPeer(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		// cPeers is c's peer list given the addresses of a and b.
		cPeers func(a, b netip.AddrPort) map[string]netip.AddrPort
		// aKnowsC: whether a has c in its peer list.
		aKnowsC bool
	}{
		{
			name:   "sender not in the peer list",
			cPeers: func(a, b netip.AddrPort) map[string]netip.AddrPort { return map[string]netip.AddrPort{"a": a, "b": b} },
		},
		{
			name:    "packet addressed to another node",
			cPeers:  func(a, b netip.AddrPort) map[string]netip.AddrPort { return map[string]netip.AddrPort{"b": a} },
			aKnowsC: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			a, b, c := newNode(t, "a", testKey()), newNode(t, "b", testKey()), newNode(t, "c", testKey())
			connect(a, b)
			if tt.aKnowsC {
				a.m.SetPeers(map[string]netip.AddrPort{"b": b.m.Addr(), "c": c.m.Addr()})
			}
			c.m.SetPeers(tt.cPeers(a.m.Addr(), b.m.Addr()))
			for _, n := range []*node{a, b, c} {
				n.start(t)
			}
			waitAlive(t, a, "b", true, time.Second)
			time.Sleep(3 * DefaultInterval)
			if a.m.IsAlive("c") || a.transitions("alive") != 1 {
				t.Errorf("a sees c (alive %v, %v transitions to alive)", a.m.IsAlive("c"), a.transitions("alive"))
			}
			if got := a.packets(resultUnknownPeer); got == 0 {
				t.Error("a counted no unknown_peer packets")
			}
			if got := a.m.Alive(); !maps.Equal(got, map[string]bool{"a": true, "b": true}) {
				t.Errorf("a: Alive() = %v", got)
			}
		})
	}
}

func TestGarbage(t *testing.T) {
	t.Parallel()
	nodes := cluster(t, "a", "b")
	a := nodes[0]
	waitAllAlive(t, nodes, time.Second)

	conn, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(loopback0))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	valid := sealed(testKey(), message{typ: msgHeartbeat, sender: "b", dest: "a", inc: 1, seq: 1})
	rng := rand.New(rand.NewPCG(1, 2))
	random := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return b
	}
	tests := []struct {
		name   string
		gen    func() []byte
		result string
	}{
		{"empty", func() []byte { return nil }, resultMalformed},
		{"random", func() []byte { return random(1 + rng.IntN(600)) }, resultMalformed},
		{"random with our version and type", func() []byte {
			b := random(minPacketLen + rng.IntN(maxPacketLen-minPacketLen))
			b[0], b[1] = wireVersion, byte(msgHeartbeat)
			return b
		}, resultMalformed},
		{"oversized", func() []byte { return random(recvBufLen + 1000) }, resultMalformed},
		{"truncated", func() []byte { return valid[:rng.IntN(len(valid))] }, resultMalformed},
		{"corrupted MAC", func() []byte {
			b := slices.Clone(valid)
			b[len(b)-1-rng.IntN(macLen)] ^= byte(1 + rng.IntN(255))
			return b
		}, resultBadMAC},
	}
	const each = 20
	for _, tt := range tests {
		before := a.packets(tt.result)
		for range each {
			if _, err := conn.WriteToUDPAddrPort(tt.gen(), a.m.Addr()); err != nil {
				t.Fatal(err)
			}
			time.Sleep(time.Millisecond)
		}
		// Loopback doesn't lose packets at this rate, but allow it.
		deadline := time.Now().Add(time.Second)
		for a.packets(tt.result)-before < each && time.Now().Before(deadline) {
			time.Sleep(5 * time.Millisecond)
		}
		if got := a.packets(tt.result) - before; got < each/2 {
			t.Errorf("%s: %v of %d datagrams counted %s", tt.name, got, each, tt.result)
		}
	}
	// Undisturbed: b never left.
	if !a.m.IsAlive("b") || a.transitions("dead") != 0 || a.transitions("alive") != 1 {
		t.Errorf("garbage disturbed the mesh: b alive %v, transitions dead %v alive %v",
			a.m.IsAlive("b"), a.transitions("dead"), a.transitions("alive"))
	}
}
