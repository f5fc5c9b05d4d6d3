package membership

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"
)

// Run sends heartbeats to every peer each Interval, receives theirs and
// declares dead the peers that go silent, until ctx is cancelled; it then
// sends the leaving message (unless Leave already did), closes the socket
// and returns nil. It returns an error if the socket fails or Run was
// already called. After Run returns, Alive keeps the last state it had.
func (m *Mesh) Run(ctx context.Context) error {
	if !m.running.CompareAndSwap(false, true) {
		return errors.New("membership: Run called twice")
	}
	defer m.Close()
	rx, err := newPoller(m.socks.rx)
	if err != nil {
		return fmt.Errorf("membership: %w", err)
	}
	if urgent := m.socks.urgent; urgent != nil {
		// Goodbyes only: this wakes once per leaving peer.
		go func() {
			buf := make([]byte, recvBufLen)
			for {
				n, _, err := urgent.ReadFromUDPAddrPort(buf)
				if errors.Is(err, net.ErrClosed) {
					return
				}
				if err != nil || m.faults.DropIn() {
					continue
				}
				m.receivePacket(buf[:n], time.Now())
			}
		}()
	}

	interval, timeout := m.Timing()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	// expiry fires when the first alive peer would time out, so that
	// detection does not wait for the next tick.
	expiry := time.NewTimer(timeout)
	defer expiry.Stop()
	go func() {
		// Peers not heard from one detection period after the peer list
		// arrived are dead for now: settle anyway.
		select {
		case <-ctx.Done():
			return
		case <-m.havePeers:
		}
		iv, to := m.Timing()
		t := time.NewTimer(iv + to)
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
			m.settle("detection period passed")
		}
	}()
	check := func() {
		if next := m.expire(time.Now()); !next.IsZero() {
			expiry.Reset(time.Until(next))
		} else {
			expiry.Stop()
		}
	}

	// Received packets are read when Run wakes anyway (each tick, each
	// expiry), not as they arrive: one wakeup per Interval instead of one
	// per packet (peers per Interval). On small virtual machines waking a
	// process costs far more than handling a packet, and per-packet
	// wakeups were most of an idle speaker's CPU. The kernel's arrival
	// timestamps keep the freshness and expiry arithmetic exact; what
	// would wait up to an Interval is the reaction to a packet: a peer's
	// leaving message (steered to the urgent socket instead) and each
	// step of a handshake (read every Interval/10 while one is under way,
	// see quick below).
	poll := func() error {
		if err := rx.drain(m.faults.DropIn, m.receivePacket); err != nil {
			// A closed-socket error if Close was called under Run.
			return fmt.Errorf("membership: receive: %w", err)
		}
		return nil
	}

	// While a handshake is under way (a peer heard from recently but not
	// alive yet, such as one that just restarted), the socket is read
	// every Interval/10 and each step answered at once, so that joining
	// takes a few round trips rather than a few Intervals. Peers that
	// stay silent don't keep it going.
	quick := time.NewTimer(time.Hour)
	quick.Stop()
	defer quick.Stop()
	handshakes := func() {
		if iv, _ := m.Timing(); m.handshaking(time.Now()) {
			quick.Reset(iv / 10)
		}
	}

	// wake reads what arrived and answers it: at a tick, with the round
	// of heartbeats to everyone; otherwise only the peers whose packets
	// want an answer. Then it re-arms the expiry and handshake timers.
	wake := func(tick bool) error {
		if err := poll(); err != nil {
			return err
		}
		if tick {
			m.answers() // the heartbeats to everyone answer them
			m.sendHeartbeats()
		} else {
			m.sendAll(msgHeartbeat, m.answers())
		}
		check()
		handshakes()
		return nil
	}

	m.sendHeartbeats()
	for {
		select {
		case <-ctx.Done():
			if !m.faults.SkipLeave() {
				m.Leave()
			}
			m.Close()
			return nil
		case <-ticker.C:
			if err := wake(true); err != nil {
				return err
			}
		case <-expiry.C:
			// A heartbeat may be waiting in the socket: wake reads it
			// before expiring anyone.
			if err := wake(false); err != nil {
				return err
			}
		case <-quick.C:
			if err := wake(false); err != nil {
				return err
			}
		case <-m.kick:
			// New peers; the interval may have stretched with them.
			if iv, _ := m.Timing(); iv != interval {
				interval = iv
				ticker.Reset(interval)
			}
			m.sendHeartbeats()
		}
	}
}

// receivePacket handles one datagram that arrived at the given time.
func (m *Mesh) receivePacket(b []byte, arrived time.Time) {
	result := m.handle(b, arrived)
	m.metrics.packet(result)
	if result != resultOK {
		m.log.V(1).Info("packet rejected", "result", result)
	}
}

// echo classifies a packet's echo of our sequence.
type echo int

const (
	// echoNone: the sender doesn't know our current incarnation yet.
	echoNone echo = iota
	// echoOld: it echoes a sequence of ours older than Timeout, so the
	// packet may have been made long ago (delayed, or replayed).
	echoOld
	// echoFresh: it echoes a sequence we sent less than Timeout ago, so
	// the sender was alive less than Timeout ago.
	echoFresh
)

func (m *Mesh) classifyEcho(msg *message, now time.Time) echo {
	if msg.echoInc != m.inc {
		return echoNone
	}
	nowSeq := uint64(max(now.Sub(m.start), 0))
	if msg.echoSeq > nowSeq || nowSeq-msg.echoSeq > uint64(m.timeout) {
		// A sequence from the future can't be ours: only a key holder
		// could have made it, but be safe.
		return echoOld
	}
	return echoFresh
}

// handle processes one received datagram that arrived at time now, and
// returns the result for the metrics. A heartbeat that moves a handshake
// on is flagged for an answer (peer.answer): Run sends our heartbeat back
// to the peer's configured address, never to the packet's source, at most
// once per packet, and only for authenticated packets that are not
// replays, so the mesh can't amplify or reflect.
func (m *Mesh) handle(b []byte, now time.Time) string {
	msg, err := decode(b)
	if err != nil {
		return resultMalformed
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if !m.recvMAC.verify(b) {
		return resultBadMAC
	}
	if msg.dest != m.self {
		return resultUnknownPeer
	}
	p := m.peers[msg.sender]
	if p == nil {
		return resultUnknownPeer
	}
	e := m.classifyEcho(&msg, now)
	prevInc, steady := p.inc, p.alive && p.confirmed
	if !p.accept(&msg, e == echoFresh) {
		// A replay, or another incarnation that can't prove itself yet
		// (most likely the peer restarted and doesn't know our sequence:
		// our heartbeat teaches it).
		if msg.typ == msgHeartbeat && msg.inc != p.inc && !p.isSuperseded(msg.inc) {
			p.heard, p.answer = now, true
		}
		return resultStale
	}
	if msg.typ == msgHeartbeat {
		p.heard = now
		p.answer = p.answer || !steady || prevInc != msg.inc
	}
	if msg.typ == msgLeaving {
		if p.alive {
			m.setAliveLocked(msg.sender, p, false, "left")
			m.publishLocked()
		}
		return resultOK
	}
	switch e {
	case echoFresh:
		if prevInc != 0 && prevInc != msg.inc {
			m.log.Info("peer restarted", "peer", msg.sender)
		}
		p.confirmed = true
		p.lastValid = now
		if !p.alive {
			m.setAliveLocked(msg.sender, p, true, "heartbeat")
			m.publishLocked()
		}
	case echoOld:
		return resultStale
	}
	return resultOK
}

// expire declares dead the peers silent for Timeout at now, and returns
// when the next alive peer would expire (zero if none is alive).
func (m *Mesh) expire(now time.Time) time.Time {
	m.mu.Lock()
	defer m.mu.Unlock()
	var next time.Time
	changed := false
	for name, p := range m.peers {
		if !p.alive {
			continue
		}
		deadline := p.lastValid.Add(m.timeout)
		if !now.Before(deadline) {
			m.setAliveLocked(name, p, false, "timeout")
			changed = true
			continue
		}
		if next.IsZero() || deadline.Before(next) {
			next = deadline
		}
	}
	if changed {
		m.publishLocked()
	}
	return next
}
