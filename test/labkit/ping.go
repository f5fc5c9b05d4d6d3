package labkit

import (
	"math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"time"

	"golang.org/x/net/icmp"
	"golang.org/x/net/ipv4"

	"github.com/ironlb/ironlb/test/netlab"
)

// Pinger sends an ICMP echo request to one IPv4 address every interval
// from a host, like `ping -i 0.01`, and records which ones were answered:
// the client's view of an outage.
type Pinger struct {
	conn     *icmp.PacketConn
	dst      netip.Addr
	every    time.Duration
	id       int
	mu       sync.Mutex
	sent     int
	answered map[int]bool
	stopped  chan struct{}
	done     sync.WaitGroup
}

// StartPing starts pinging dst from host every interval.
func StartPing(from *netlab.Host, dst netip.Addr, every time.Duration) (*Pinger, error) {
	conn, err := netlab.InNS(from.Name, func() (*icmp.PacketConn, error) { return icmp.ListenPacket("ip4:icmp", "0.0.0.0") })
	if err != nil {
		return nil, err
	}
	// A random echo ID tells pingers apart, so two pinging from one
	// host at once do not count each other's replies.
	id := rand.IntN(0x10000)
	p := &Pinger{conn: conn, dst: dst, every: every, id: id, answered: map[int]bool{}, stopped: make(chan struct{})}
	p.done.Add(2)
	go p.receive()
	go p.send()
	return p, nil
}

func (p *Pinger) receive() {
	defer p.done.Done()
	buf := make([]byte, 1500)
	for {
		n, _, err := p.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := icmp.ParseMessage(1, buf[:n])
		if err != nil || m.Type != ipv4.ICMPTypeEchoReply {
			continue
		}
		if e, ok := m.Body.(*icmp.Echo); ok && e.ID == p.id {
			p.mu.Lock()
			p.answered[e.Seq] = true
			p.mu.Unlock()
		}
	}
}

func (p *Pinger) send() {
	defer p.done.Done()
	t := time.NewTicker(p.every)
	defer t.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-p.stopped:
			return
		case <-t.C:
		}
		b, _ := (&icmp.Message{Type: ipv4.ICMPTypeEcho, Body: &icmp.Echo{ID: p.id, Seq: seq & 0xffff, Data: []byte("ironlb")}}).Marshal(nil)
		_, _ = p.conn.WriteTo(b, &net.IPAddr{IP: p.dst.AsSlice()})
		p.mu.Lock()
		p.sent = seq + 1
		p.mu.Unlock()
	}
}

// Stop ends the pings (waiting for late replies) and returns how many were
// sent and lost, and the longest run of consecutive losses as time.
func (p *Pinger) Stop() (sent, lost int, window time.Duration) {
	close(p.stopped)
	time.Sleep(200 * time.Millisecond)
	_ = p.conn.Close()
	p.done.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	run, longest := 0, 0
	for seq := range p.sent {
		if p.answered[seq&0xffff] {
			run = 0
			continue
		}
		lost++
		run++
		longest = max(longest, run)
	}
	return p.sent, lost, time.Duration(longest) * p.every
}
