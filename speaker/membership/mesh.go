package membership

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/go-logr/logr"
)

const (
	// DefaultInterval is the default heartbeat period.
	DefaultInterval = 100 * time.Millisecond
	// DefaultTimeout is the default time without a valid heartbeat after
	// which a peer is dead: four heartbeats, so that up to three lost
	// packets in a row are tolerated, and a crash is detected in 300 to
	// 400 ms, leaving the rest of the 1 s failover budget to the new owner.
	DefaultTimeout = 400 * time.Millisecond
	// DefaultMaxRate is the default packet budget: heartbeats a speaker
	// sends per second. Up to 25 peers it allows DefaultInterval.
	DefaultMaxRate = 250
	// MinKeyLen is the shortest accepted shared secret.
	MinKeyLen = 16

	// leaveRepeats copies of the leaving message are sent leaveGap apart:
	// the handover is only fast if one arrives, and UDP may drop a burst.
	leaveRepeats = 3
	leaveGap     = 5 * time.Millisecond

	// recvBufLen is larger than any valid packet, so that an oversized
	// datagram is seen whole enough to be rejected as malformed.
	recvBufLen = 2048
)

// Config configures a Mesh.
type Config struct {
	// Self is this node's name, as in its Node object: it is what the
	// peers know us by and what they address their packets to.
	Self string
	// Bind is the local UDP address to listen on, normally the node IP
	// and a fixed port, so that the peers can compute it from the Node
	// objects. Port 0 picks a free port (tests; see Mesh.Addr).
	Bind netip.AddrPort
	// Key is the shared secret, at least MinKeyLen bytes, from a
	// Kubernetes Secret. Every packet is authenticated with an HMAC, so
	// that nothing but a speaker can make a node look alive (which would
	// black-hole its addresses) or gone. All speakers need the same key:
	// a speaker with another key sees, and is seen as, dead.
	Key []byte
	// Interval is the heartbeat period, DefaultInterval if zero.
	Interval time.Duration
	// Timeout is how long a peer may go without a valid heartbeat before
	// it is declared dead, DefaultTimeout if zero. It must exceed
	// Interval, and should be several Intervals to tolerate loss.
	//
	// Detection: a peer is declared dead Timeout after its last valid
	// heartbeat arrived (on a timer, not on the next tick), and its last
	// heartbeat left at most one Interval before it crashed, so a crash is
	// detected between Timeout−Interval and Timeout after it happens, plus
	// scheduling delay: always within Timeout+Interval. A graceful stop
	// (Leave) is detected in one network trip.
	Timeout time.Duration
	// MaxRate caps the heartbeats this speaker sends per second,
	// DefaultMaxRate if zero. With more peers than MaxRate×Interval, the
	// interval and the timeout both stretch by the same factor: every
	// speaker sends and receives one heartbeat per peer per interval, so
	// a fixed interval costs each node O(peers) packets per second and
	// the cluster O(peers²), and on big clusters that cost (CPU for every
	// packet, on every node, all the time) buys less than the second of
	// failover it would save. Detection time then grows linearly with the
	// cluster: 49 peers, 196 ms interval and 784 ms timeout; 99 peers,
	// 396 ms and 1.58 s.
	MaxRate int
	// Logger receives peer transitions at Info and packet-level detail at
	// V(1). The zero Logger discards.
	Logger logr.Logger
	// Metrics is optional.
	Metrics *Metrics
	// Faults, if set, is asked before each packet goes in or out and
	// before the leaving message: how tests make a crash or a partition
	// without one. Nil: none.
	Faults Faults
}

// Faults lets a test drop packets or the leaving message.
type Faults interface {
	// DropIn drops incoming packets, DropOut outgoing ones.
	DropIn() bool
	DropOut() bool
	// SkipLeave makes Run return without the leaving message, like a
	// crash.
	SkipLeave() bool
}

// noFaults is the Faults of a real mesh.
type noFaults struct{}

func (noFaults) DropIn() bool    { return false }
func (noFaults) DropOut() bool   { return false }
func (noFaults) SkipLeave() bool { return false }

// Mesh is one speaker's member of the heartbeat mesh: it tells which
// peers are alive. Create it with New, give it peers with SetPeers and
// start it with Run. All methods are safe for concurrent use.
type Mesh struct {
	self string
	// baseInterval and baseTimeout are the configured timing, maxRate the
	// packet budget; interval and timeout (guarded by mu) the timing in
	// effect for the current number of peers (see Config.MaxRate).
	baseInterval time.Duration
	baseTimeout  time.Duration
	maxRate      int
	interval     time.Duration
	timeout      time.Duration
	log          logr.Logger
	metrics      *Metrics

	// socks are the mesh's sockets (see sockets): heartbeats are read
	// from rx at ticks and everything is sent from it (through out);
	// leaving messages are read from urgent at once (nil if the kernel
	// can't steer them).
	socks *sockets
	addr  netip.AddrPort

	// inc is this process's incarnation. start is the origin of the
	// sequence numbers: a sequence is the monotonic time it was sent at,
	// in nanoseconds since start, so that when a peer echoes it back we
	// know how old the echo is without a table or a synchronised clock.
	inc   uint64
	start time.Time

	// sendMu guards the sending side: its MAC, buffer and sequence, and
	// orders the leaving message after every heartbeat.
	sendMu  sync.Mutex
	sendMAC *macer
	// out sends many datagrams in one call; sendBufs and sendMsgs are
	// its reused buffers.
	out      *sender
	sendBufs [][]byte
	sendMsgs []datagram
	lastSeq  uint64

	// mu guards the peers and the receiving MAC.
	mu      sync.Mutex
	recvMAC *macer
	peers   map[string]*peer

	// alive is an immutable snapshot (self included), replaced on every
	// change, so that Alive and IsAlive never take a lock.
	alive   atomic.Pointer[map[string]bool]
	changes chan struct{}
	// kick asks Run to send heartbeats now (new peers).
	kick chan struct{}

	// settled is closed once the mesh has had a peer list and has heard
	// from every peer on it, or waited one detection period (see Settled);
	// havePeers is closed by the first SetPeers, peersAt is when (under mu).
	settled    chan struct{}
	settleOnce sync.Once
	havePeers  chan struct{}
	peersOnce  sync.Once

	left      atomic.Bool
	running   atomic.Bool
	closeOnce sync.Once

	faults Faults
}

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

// New validates cfg and binds the UDP socket, so that Addr is known before
// Run. The socket is closed when Run returns, or by Close.
func New(cfg Config) (*Mesh, error) {
	if !validName(cfg.Self) {
		return nil, fmt.Errorf("membership: Self must be 1 to %d bytes, got %d", maxNameLen, len(cfg.Self))
	}
	if len(cfg.Key) < MinKeyLen {
		return nil, fmt.Errorf("membership: Key must be at least %d bytes, got %d", MinKeyLen, len(cfg.Key))
	}
	if !cfg.Bind.IsValid() {
		return nil, errors.New("membership: Bind is not a valid address")
	}
	if cfg.Interval == 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.Interval < 0 || cfg.Timeout <= cfg.Interval {
		return nil, fmt.Errorf("membership: need 0 < Interval < Timeout, got Interval %v, Timeout %v", cfg.Interval, cfg.Timeout)
	}
	if cfg.MaxRate == 0 {
		cfg.MaxRate = DefaultMaxRate
	}
	if cfg.MaxRate < 0 {
		return nil, fmt.Errorf("membership: MaxRate must be positive, got %d", cfg.MaxRate)
	}
	var b [8]byte
	var inc uint64
	for inc == 0 {
		if _, err := rand.Read(b[:]); err != nil {
			return nil, fmt.Errorf("membership: incarnation: %w", err)
		}
		inc = binary.BigEndian.Uint64(b[:])
	}
	bind := netip.AddrPortFrom(cfg.Bind.Addr().Unmap(), cfg.Bind.Port())
	socks, err := listenGroup(bind)
	if err != nil {
		return nil, fmt.Errorf("membership: listen on %v: %w", bind, err)
	}
	local := socks.local
	macKey := deriveKey(cfg.Key)
	m := &Mesh{
		self:         cfg.Self,
		baseInterval: cfg.Interval,
		baseTimeout:  cfg.Timeout,
		maxRate:      cfg.MaxRate,
		interval:     cfg.Interval,
		timeout:      cfg.Timeout,
		settled:      make(chan struct{}),
		havePeers:    make(chan struct{}),
		log:          cfg.Logger,
		metrics:      cfg.Metrics,
		socks:        socks,
		out:          newSender(socks.rx, bind.Addr()),
		addr:         netip.AddrPortFrom(local.Addr().Unmap(), local.Port()),
		inc:          inc,
		start:        time.Now(),
		sendMAC:      newMacer(macKey),
		recvMAC:      newMacer(macKey),
		peers:        make(map[string]*peer),
		changes:      make(chan struct{}, 1),
		kick:         make(chan struct{}, 1),
		faults:       cfg.Faults,
	}
	if m.faults == nil {
		m.faults = noFaults{}
	}
	m.alive.Store(&map[string]bool{m.self: true})
	m.metrics.peersAlive(0)
	return m, nil
}

// Addr returns the bound address, with the actual port if Bind had port 0.
func (m *Mesh) Addr() netip.AddrPort { return m.addr }

// Alive returns the nodes currently alive, self included. It is a copy the
// caller may keep and modify; it costs one small map allocation and no
// lock. IsAlive is cheaper for a single node.
func (m *Mesh) Alive() map[string]bool {
	snap := *m.alive.Load()
	out := make(map[string]bool, len(snap))
	for k := range snap {
		out[k] = true
	}
	return out
}

// IsAlive tells whether node is alive (true for self), without allocating
// or locking.
func (m *Mesh) IsAlive(node string) bool {
	return (*m.alive.Load())[node]
}

// Timing returns the heartbeat interval and the timeout in effect: the
// configured ones, stretched when there are more peers than the packet
// budget allows (Config.MaxRate).
func (m *Mesh) Timing() (interval, timeout time.Duration) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.interval, m.timeout
}

// scaleLocked sets the timing for n peers.
func (m *Mesh) scaleLocked(n int) {
	iv := m.baseInterval
	if min := time.Duration(n) * time.Second / time.Duration(m.maxRate); min > iv {
		iv = min
	}
	m.interval = iv
	m.timeout = time.Duration(float64(m.baseTimeout) * float64(iv) / float64(m.baseInterval))
}

// Settled tells whether the mesh has had a peer list (SetPeers) and has
// since heard from every peer on it, or waited one detection period
// (Timeout+Interval) for those it has not. Until then every peer not yet
// heard from looks dead, and a speaker acting on that view would claim
// their addresses only to hand them back a moment later; a consumer
// should not act on deaths before it. Changes is notified when it
// becomes true. Once true it stays true.
func (m *Mesh) Settled() bool {
	select {
	case <-m.settled:
		return true
	default:
		return false
	}
}

// settle marks the mesh settled and notifies Changes.
func (m *Mesh) settle(why string) {
	m.settleOnce.Do(func() {
		close(m.settled)
		m.log.Info("mesh settled", "reason", why, "peersAlive", len(*m.alive.Load())-1)
		select {
		case m.changes <- struct{}{}:
		default:
		}
	})
}

// Changes returns a channel that receives a value after Alive changes.
// Notifications are coalesced (buffer 1) and never block the mesh: a
// consumer that is busy misses none of the state, only intermediate
// notifications, so it should read Alive after each receive.
func (m *Mesh) Changes() <-chan struct{} { return m.changes }

// SetPeers replaces the peer list: node name to heartbeat address, from
// the Node objects. Self is ignored if present, as are entries with an
// invalid name or address. Known peers keep their state across calls (an
// address change is not a restart); removed peers drop out of Alive at
// once; new peers start dead and get a heartbeat right away.
func (m *Mesh) SetPeers(peers map[string]netip.AddrPort) {
	want := make(map[string]netip.AddrPort, len(peers))
	for name, addr := range peers {
		if name == m.self {
			continue
		}
		if !validName(name) || !addr.IsValid() || addr.Port() == 0 {
			m.log.Info("ignoring invalid peer", "peer", name, "addr", addr.String())
			continue
		}
		want[name] = netip.AddrPortFrom(addr.Addr().Unmap(), addr.Port())
	}

	m.mu.Lock()
	changed, added := false, false
	for name, p := range m.peers {
		if _, ok := want[name]; !ok {
			delete(m.peers, name)
			changed = changed || p.alive
			m.log.V(1).Info("peer removed", "peer", name)
		}
	}
	for name, addr := range want {
		if p, ok := m.peers[name]; ok {
			p.addr = addr
			continue
		}
		m.peers[name] = &peer{addr: addr}
		added = true
		m.log.V(1).Info("peer added", "peer", name, "addr", addr.String())
	}
	oldInterval := m.interval
	m.scaleLocked(len(m.peers))
	added = added || m.interval != oldInterval // Run resets its ticker
	if changed {
		m.publishLocked()
	}
	all := m.allAliveLocked()
	m.mu.Unlock()
	m.peersOnce.Do(func() { close(m.havePeers) })
	if all {
		m.settle("every peer alive")
	}

	if added {
		select {
		case m.kick <- struct{}{}:
		default:
		}
	}
}

// Leave announces that this node is going away: every peer gets the
// leaving message (a few times, in case one is lost) and marks us dead at
// once instead of waiting for Timeout, which is what makes a graceful
// handover fast. Call it once this node has stopped announcing, before
// cancelling Run's context (Run calls it otherwise). It is final: no
// heartbeat is sent afterwards, though Run keeps tracking the peers until
// its context is cancelled. It blocks for about 10 ms.
func (m *Mesh) Leave() {
	if !m.left.CompareAndSwap(false, true) {
		return
	}
	for i := range leaveRepeats {
		if i > 0 {
			time.Sleep(leaveGap)
		}
		m.sendAll(msgLeaving, m.targets())
	}
	m.log.Info("left the mesh")
}

// Close releases the socket if Run was never called; Run closes it itself.
// Idempotent.
func (m *Mesh) Close() error {
	var err error
	m.closeOnce.Do(func() {
		err = m.socks.Close()
	})
	return err
}

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

func (m *Mesh) setAliveLocked(name string, p *peer, alive bool, reason string) {
	p.alive = alive
	if !alive {
		p.lastValid = time.Time{}
	}
	m.metrics.transition(alive)
	state := "dead"
	if alive {
		state = "alive"
	}
	m.log.Info("peer "+state, "peer", name, "reason", reason)
}

// allAliveLocked tells whether every peer is alive.
func (m *Mesh) allAliveLocked() bool {
	for _, p := range m.peers {
		if !p.alive {
			return false
		}
	}
	return true
}

// publishLocked replaces the Alive snapshot and notifies Changes.
func (m *Mesh) publishLocked() {
	snap := map[string]bool{m.self: true}
	for name, p := range m.peers {
		if p.alive {
			snap[name] = true
		}
	}
	m.alive.Store(&snap)
	m.metrics.peersAlive(len(snap) - 1)
	select {
	case m.changes <- struct{}{}:
	default:
	}
	select {
	case <-m.havePeers:
		if m.allAliveLocked() {
			m.settle("every peer alive")
		}
	default:
	}
}

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
