package membership

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
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

func (noFaults) DropIn() bool { return false }

func (noFaults) DropOut() bool { return false }

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
