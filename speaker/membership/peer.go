package membership

import (
	"net/netip"
	"time"
)

// peer is what we know about one peer. Guarded by Mesh.mu.
type peer struct {
	addr netip.AddrPort

	// inc and seq are the peer's current incarnation and the newest
	// sequence accepted from it (0, 0 before the first packet). They
	// reject replays, and are echoed back in our packets to the peer.
	inc uint64
	seq uint64
	// confirmed: inc has sent a fresh heartbeat (one echoing a recent
	// sequence of ours), so it is a live process and can only be
	// replaced by another incarnation that proves the same.
	confirmed bool
	// superseded lists recent incarnations replaced by a confirmed newer
	// one: their packets are old by definition.
	superseded [4]uint64
	supNext    int

	alive     bool
	lastValid time.Time // arrival of the last fresh heartbeat
	// heard is the arrival of the last authenticated heartbeat that was
	// not a replay; answer says it moved a handshake on (a new
	// incarnation, or a peer not yet alive) and wants our heartbeat back
	// before the next tick (see Run).
	heard  time.Time
	answer bool
}

func (p *peer) isSuperseded(inc uint64) bool {
	for _, s := range p.superseded {
		if s == inc {
			return true
		}
	}
	return false
}

// accept applies the replay rules to an authenticated packet from p and, if
// it passes, records its incarnation and sequence. fresh says whether it
// echoes one of our recent sequences.
func (p *peer) accept(msg *message, fresh bool) bool {
	if p.inc != 0 && msg.inc == p.inc {
		if msg.seq <= p.seq {
			return false // replayed, or overtaken by a newer packet
		}
		p.seq = msg.seq
		return true
	}
	// Another incarnation. A leaving message only counts from the
	// current one: anything else is an old process's goodbye.
	if msg.typ != msgHeartbeat || p.isSuperseded(msg.inc) {
		return false
	}
	// A confirmed incarnation is replaced only by one proven alive now,
	// so a replay of an older process's packets can't displace the
	// running one. An unconfirmed one (we just started, or the peer did)
	// is replaced by anything: it's how the handshake starts.
	if p.confirmed && !fresh {
		return false
	}
	if p.confirmed {
		p.superseded[p.supNext] = p.inc
		p.supNext = (p.supNext + 1) % len(p.superseded)
	}
	p.inc, p.seq, p.confirmed = msg.inc, msg.seq, false
	return true
}

// target is one packet to send: where, and what to echo.
type target struct {
	name    string
	addr    netip.AddrPort
	echoInc uint64
	echoSeq uint64
}

func (p *peer) target(name string) target {
	return target{name: name, addr: p.addr, echoInc: p.inc, echoSeq: p.seq}
}
