package membership

import (
	"errors"
	"net"
	"os"
	"time"
)

// answers returns the targets of the peers whose last packet wants an
// answer (see peer.answer), and clears their flags.
func (m *Mesh) answers() []target {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ts []target
	for name, p := range m.peers {
		if p.answer {
			p.answer = false
			ts = append(ts, p.target(name))
		}
	}
	return ts
}

// handshaking tells whether a peer was heard from less than Timeout
// before now but is not alive yet.
func (m *Mesh) handshaking(now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range m.peers {
		if !p.alive && !p.heard.IsZero() && now.Sub(p.heard) < m.timeout {
			return true
		}
	}
	return false
}

// targets returns one target per peer, with what to echo to each.
func (m *Mesh) targets() []target {
	m.mu.Lock()
	defer m.mu.Unlock()
	ts := make([]target, 0, len(m.peers))
	for name, p := range m.peers {
		ts = append(ts, p.target(name))
	}
	return ts
}

func (m *Mesh) sendHeartbeats() {
	m.sendAll(msgHeartbeat, m.targets())
}

// sendAll builds, signs and sends one packet per target, all in one
// system call where the platform allows (sendmmsg): a heartbeat round to
// every peer costs one kernel entry, not one per peer.
func (m *Mesh) sendAll(typ msgType, ts []target) {
	m.sendMu.Lock()
	defer m.sendMu.Unlock()
	// Checked under sendMu: Leave sets left before sending its first
	// leaving message, so no heartbeat can follow it with a newer
	// sequence and resurrect us at the peers.
	if typ == msgHeartbeat && m.left.Load() {
		return
	}
	for len(m.sendBufs) < len(ts) {
		m.sendBufs = append(m.sendBufs, make([]byte, 0, maxPacketLen))
	}
	msgs := m.sendMsgs[:0]
	for i, t := range ts {
		seq := uint64(max(time.Since(m.start), 0))
		if seq <= m.lastSeq {
			seq = m.lastSeq + 1
		}
		m.lastSeq = seq
		msg := message{
			typ:     typ,
			sender:  m.self,
			dest:    t.name,
			inc:     m.inc,
			seq:     seq,
			echoInc: t.echoInc,
			echoSeq: t.echoSeq,
		}
		m.sendBufs[i] = m.sendMAC.seal(msg.appendBody(m.sendBufs[i][:0]))
		msgs = append(msgs, datagram{b: m.sendBufs[i], to: t.addr})
	}
	m.sendMsgs = msgs
	if m.faults.DropOut() {
		return
	}
	if n, err := m.out.send(msgs); err != nil && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrClosed) {
		m.log.V(1).Info("send failed", "peers", len(msgs), "sent", n, "type", typ.String(), "error", err.Error())
	}
}
