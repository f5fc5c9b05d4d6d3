package l2

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"golang.org/x/net/ipv6"
)

// Options configure an Announcer. The zero value gives the defaults.
type Options struct {
	// Logger receives takeovers, releases, conflicts and send errors;
	// V(1) adds one line per answered request. The zero Logger discards.
	Logger logr.Logger

	// GratuitousCount is how many gratuitous ARPs / unsolicited Neighbor
	// Advertisements are sent when an IP is taken over. More than one,
	// because a single frame can be lost and a neighbour that misses it
	// keeps sending to the previous owner until its cache entry expires.
	// 0 means 3; negative sends none.
	GratuitousCount int

	// GratuitousInterval spaces them (the first goes out at once). 0 means
	// 200ms.
	GratuitousInterval time.Duration

	// ProbeTimeout is how long to wait for an answer to the probe (RFC 5227
	// ARP probe, or a Neighbor Solicitation for IPv6) before announcing an
	// IP: announcing an IP another host holds would steal its traffic.
	// This delay is the bulk of the takeover time; a graceful move should
	// release the IP on the old node first, else the old node's answer is
	// taken for a conflict and the new node backs off (see OnConflict).
	// 0 means 200ms; negative skips probing.
	ProbeTimeout time.Duration

	// OnConflict is called when another host claims an IP we probe or
	// announce, with that host's MAC (nil if the packet does not carry one,
	// e.g. an IPv6 DAD probe). A conflict found by the probe keeps the IP
	// unannounced and it is probed again after a backoff (1s doubling up to
	// 30s, ±50% jitter), with another call if the conflict persists. A conflict on an IP
	// already announced does not stop the announcement: the conflict could
	// be a stale peer, and silently dropping the IP would turn it into an
	// outage; instead the IP is defended with one gratuitous announcement
	// (RFC 5227 section 2.4 (b)), and the call is made at most once per IP
	// per 10s. Deciding who should own the IP is the caller's business.
	//
	// It runs on the announcer's goroutines: it must return quickly. It may
	// call Set.
	OnConflict func(ip netip.Addr, foreignMAC net.HardwareAddr)
	// OnAnnounced is called when an IP starts being answered: after its
	// probe, at once on a takeover, or after a conflict ended. So a caller
	// can report what is on the wire rather than what it asked for. Same
	// rules as OnConflict.
	OnAnnounced func(ip netip.Addr)

	// IsPeer tells whether a MAC belongs to another node running a
	// speaker. Its claims are ownership changes in flight, not conflicts:
	// a probe that hears one retries after about 200 ms instead of backing
	// off, and nothing is reported. Nil treats every MAC as foreign.
	IsPeer func(mac net.HardwareAddr) bool

	// YieldTimeout bounds a yield (Moves.Yield): an IP nobody took over
	// by then is released anyway. Default 2s.
	YieldTimeout time.Duration

	// Metrics, if not nil, count requests, responses, gratuitous
	// announcements and conflicts.
	Metrics *Metrics
}

const (
	defaultGratuitousCount    = 3
	defaultGratuitousInterval = 200 * time.Millisecond
	defaultProbeTimeout       = 200 * time.Millisecond
	defaultYieldTimeout       = 2 * time.Second
	// recentPeerClaim: a peer's claim this recent, when the plan moves
	// the address away, was the new owner's announcement arriving before
	// this node's own view changed.
	recentPeerClaim = time.Second

	// defendInterval is RFC 5227's DEFEND_INTERVAL: while announcing, at
	// most one conflict report and defensive announcement per IP per this
	// interval, so that two hosts claiming an IP do not ping-pong.
	defendInterval = 10 * time.Second
	// minConflictRetry and maxConflictRetry bound the backoff between
	// probes of an IP that another host answered for (before jitter). The
	// first retry is quick because the most common conflict is the
	// previous owner that has not processed its release yet.
	minConflictRetry = time.Second
	maxConflictRetry = 30 * time.Second
	// transientErrorPause keeps a read loop from spinning on an error that
	// repeats (e.g. the interface flapping).
	transientErrorPause = 50 * time.Millisecond
)

func (o Options) withDefaults() Options {
	if o.GratuitousCount == 0 {
		o.GratuitousCount = defaultGratuitousCount
	}
	if o.GratuitousInterval <= 0 {
		o.GratuitousInterval = defaultGratuitousInterval
	}
	if o.YieldTimeout <= 0 {
		o.YieldTimeout = defaultYieldTimeout
	}
	if o.ProbeTimeout == 0 {
		o.ProbeTimeout = defaultProbeTimeout
	}
	return o
}

// Announcer announces a set of IPs on one interface: it answers ARP (IPv4)
// and NDP (IPv6) for them, announces them on takeover and detects conflicts.
// Its methods are safe for concurrent use.
type Announcer struct {
	ifi  *net.Interface
	mac  net.HardwareAddr
	opts Options
	log  logr.Logger

	arp *packet.Conn
	// ndp is nil when the interface has no usable IPv6 link-local address;
	// ndpErr then says why, and IPv6 IPs are not announced.
	ndp     *ndp.Conn
	ndpAddr netip.Addr
	ndpErr  error
	// hopLimitKnown: the kernel delivers the hop limit of received NDP
	// messages, so off-link forgeries (hop limit < 255) can be dropped.
	hopLimitKnown bool

	mu      sync.RWMutex
	entries map[netip.Addr]*entry // the desired set; guarded by mu
	runCtx  context.Context       // non-nil while Run serves; guarded by mu
	ran     bool                  // guarded by mu
	closed  bool                  // guarded by mu
	leaving bool                  // guarded by mu; see Handover
	wg      sync.WaitGroup        // one per running entry goroutine

	groupMu sync.Mutex
	groups  map[netip.Addr]int // solicited-node group -> number of IPs needing it
}

// entry is one desired IP. Its goroutine (manage) drives it through probing
// and announcing; the read loops only read its phase and post claims.
//
// Once announced and its gratuitous burst sent, an entry is parked: its
// goroutine ends, and a claim starts a new one (resume). A node answers
// for thousands of addresses in a small cluster, and a goroutine waiting
// on each cost 4-8 KiB of stack apiece for nothing but the rare claim.
type entry struct {
	ip    netip.Addr
	phase phase // guarded by Announcer.mu
	// takeover skips the first probe: the IP was announced by a peer that
	// is known to be gone, so nobody should answer, and waiting for the
	// probe would only lengthen the failover.
	takeover bool
	cancel   context.CancelFunc // set when its goroutine starts
	// yielding, when set, is the deadline of a yield (see Moves.Yield):
	// the IP is still answered but withdrawn on the first foreign claim.
	// Guarded by Announcer.mu.
	yielding *time.Timer
	// claims carries foreign claims from the read loops to manage. One
	// slot: while manage is busy, further claims are redundant.
	claims chan claim
	// parked: announcing, with no goroutine (see entry). Guarded by
	// Announcer.mu.
	parked bool
	// peerClaimAt is when a peer (IsPeer) last claimed the IP while it
	// was announced here. Guarded by Announcer.mu.
	peerClaimAt time.Time
	// lastReport is when a claim while announcing was last reported and
	// defended (defendInterval). Only the entry's goroutine uses it, and
	// an entry has one at a time.
	lastReport time.Time
}

// claim is a foreign host claiming one of our IPs.
type claim struct {
	mac   net.HardwareAddr
	proto string
}

// NewAnnouncer opens the ARP (AF_PACKET) and NDP (raw ICMPv6) sockets on the
// interface. It must be called in the network namespace of the interface;
// the sockets stay bound to it whatever goroutine or namespace uses them
// later.
//
// The interface must be up, not loopback, not NOARP and not a bond slave
// (errors wrap ErrUnusableInterface). IPv6 needs a non-tentative link-local
// address to send from; without one the Announcer still works for IPv4, logs
// why IPv6 is disabled and does not announce IPv6 IPs, so that a node with
// IPv6 turned off still gets its IPv4 announcements. Create a new Announcer
// once the link-local address exists.
//
// The ARP socket is a plain packet socket rather than an arp.Client because
// arp.Dial insists on an IPv4 address on the interface, which an
// announcer does not need, and because the read loop must see the raw
// frame to survive garbage.
func NewAnnouncer(ifname string, opts Options) (*Announcer, error) {
	ifi, err := usableInterface(ifname)
	if err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	a := &Announcer{
		ifi:     ifi,
		mac:     ifi.HardwareAddr,
		opts:    opts,
		log:     opts.Logger.WithValues("interface", ifname),
		entries: make(map[netip.Addr]*entry),
		groups:  make(map[netip.Addr]int),
	}
	a.arp, err = packet.Listen(ifi, packet.Raw, int(ethernet.EtherTypeARP), nil)
	if err != nil {
		return nil, fmt.Errorf("interface %q: open ARP packet socket: %w", ifname, err)
	}
	if err := a.openNDP(); err != nil {
		a.ndpErr = err
		a.log.Info("IPv6 announcements disabled on this interface", "reason", err.Error())
	}
	return a, nil
}

func (a *Announcer) openNDP() error {
	c, ll, err := ndp.Listen(a.ifi, ndp.LinkLocal)
	if err != nil {
		return fmt.Errorf("interface %q: open NDP socket (needs a non-tentative IPv6 link-local address): %w", a.ifi.Name, err)
	}
	if err := c.SetICMPFilter(ndpFilter()); err != nil {
		_ = c.Close()
		return fmt.Errorf("interface %q: set ICMPv6 filter: %w", a.ifi.Name, err)
	}
	a.hopLimitKnown = c.SetControlMessage(ipv6.FlagHopLimit, true) == nil
	a.ndp, a.ndpAddr = c, ll
	return nil
}

// Run serves until ctx is done or Close is called, then returns nil; it
// returns an error if a socket fails for good. Set may be called before and
// while Run serves; IPs set before Run are probed when it starts, because
// a probe's answer can only be seen while reading. Run may be called once.
// When it returns nothing is answered any more.
func (a *Announcer) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	a.mu.Lock()
	switch {
	case a.closed:
		a.mu.Unlock()
		return fmt.Errorf("interface %q: announcer closed: %w", a.ifi.Name, net.ErrClosed)
	case a.ran:
		a.mu.Unlock()
		return fmt.Errorf("interface %q: announcer Run called twice", a.ifi.Name)
	}
	a.ran = true
	a.runCtx = ctx
	for _, e := range a.entries {
		a.startLocked(e)
	}
	a.mu.Unlock()

	// Unblock the readers when done: a deadline in the past makes a
	// pending read return at once.
	stop := context.AfterFunc(ctx, func() {
		past := time.Unix(1, 0)
		_ = a.arp.SetReadDeadline(past)
		if a.ndp != nil {
			_ = a.ndp.SetReadDeadline(past)
		}
	})
	defer stop()

	errc := make(chan error, 2)
	readers := 1
	go func() { errc <- a.serveARP(ctx) }()
	if a.ndp != nil {
		readers++
		go func() { errc <- a.serveNDP(ctx) }()
	}
	var errs []error
	for range readers {
		if err := <-errc; err != nil {
			errs = append(errs, err)
		}
		cancel() // one reader gone (error or Close): stop everything
	}

	a.mu.Lock()
	a.runCtx = nil
	var parked []netip.Addr
	for _, e := range a.entries {
		if e.parked {
			parked = append(parked, a.unparkLocked(e))
		}
	}
	a.mu.Unlock()
	a.wg.Wait()
	for _, ip := range parked {
		a.leaveGroupIfV6(ip)
	}
	return errors.Join(errs...)
}

// Set replaces the set of IPs this node should announce. New IPs are probed
// and then announced; IPs no longer in the set stop being answered before
// Set returns (a request being processed at that very moment may still get
// its answer). IPv4-mapped IPv6 addresses count as IPv4; unspecified,
// loopback, multicast and link-local addresses are ignored with a log line.
func (a *Announcer) Set(ips []netip.Addr) { a.Update(ips, Moves{}) }

// Moves tells an announcer how addresses enter and leave its set, when the
// caller knows more than "wanted" or "not wanted".
type Moves struct {
	// Takeover reports new IPs to announce at once, without the probe:
	// their previous owner is a peer that is gone or hands them over, so
	// the probe could only cost time (or, worse, hear the yielding peer
	// and back off). Should that be wrong, the conflict is still seen and
	// reported while announcing (OnConflict).
	Takeover func(netip.Addr) bool
	// Yield reports IPs leaving the set that another live node takes
	// over: they keep being answered until that node announces them (a
	// foreign claim) or YieldTimeout passes, and are then withdrawn, so a
	// move between two live nodes leaves no moment without an answer.
	Yield func(netip.Addr) bool
}

// Update is Set with Moves.
func (a *Announcer) Update(ips []netip.Addr, m Moves) {
	want := make(map[netip.Addr]struct{}, len(ips))
	for _, ip := range ips {
		ip = ip.Unmap().WithZone("")
		if !announceable(ip) {
			a.log.Info("ignoring address that cannot be announced", "ip", ip.String())
			continue
		}
		want[ip] = struct{}{}
	}

	a.mu.Lock()
	defer a.mu.Unlock()
	for ip, e := range a.entries {
		if _, ok := want[ip]; ok {
			if e.yielding != nil {
				// Wanted back before the new owner showed up.
				e.yielding.Stop()
				e.yielding = nil
			}
			continue
		}
		if e.yielding != nil {
			continue
		}
		if e.phase == phaseAnnouncing && m.Yield != nil && m.Yield(ip) {
			if time.Since(e.peerClaimAt) < recentPeerClaim {
				// The new owner announced just before this node's own
				// view moved the address (its claim was defended): it
				// will not announce again soon, and a yield would keep
				// answering for YieldTimeout an address it no longer
				// wants.
				a.log.Info("the new owner announced already; released", "ip", ip.String())
				a.dropLocked(e)
				continue
			}
			a.log.Info("yielding to the new owner", "ip", ip.String())
			e.yielding = time.AfterFunc(a.opts.YieldTimeout, func() { a.dropYielding(e) })
			continue
		}
		a.dropLocked(e)
	}
	for ip := range want {
		if _, ok := a.entries[ip]; ok {
			continue
		}
		e := &entry{ip: ip, claims: make(chan claim, 1), takeover: m.Takeover != nil && m.Takeover(ip)}
		a.entries[ip] = e
		if a.runCtx != nil {
			a.startLocked(e)
		}
	}
}

// Reassert sends one gratuitous announcement for every IP announced (and
// not being yielded). After a partition heals, the other side may still
// answer for some of them while yielding: this is the claim that makes it
// withdraw at once rather than after YieldTimeout.
func (a *Announcer) Reassert() {
	a.mu.RLock()
	var ips []netip.Addr
	for ip, e := range a.entries {
		if e.phase == phaseAnnouncing && e.yielding == nil {
			ips = append(ips, ip)
		}
	}
	a.mu.RUnlock()
	for _, ip := range ips {
		a.sendGratuitous(ip)
	}
}

// Announcing returns the IPs currently answered, sorted. An IP that is
// still being probed or that is in conflict is not among them.
func (a *Announcer) Announcing() []netip.Addr {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var out []netip.Addr
	for ip, e := range a.entries {
		if e.phase == phaseAnnouncing {
			out = append(out, ip)
		}
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// Close stops answering and closes the sockets. A running Run returns nil.
// Close is idempotent.
func (a *Announcer) Close() error {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return nil
	}
	a.closed = true
	for _, e := range a.entries {
		e.phase = phaseNone
		if e.cancel != nil {
			e.cancel()
		}
	}
	a.mu.Unlock()

	err := a.arp.Close()
	if a.ndp != nil {
		err = errors.Join(err, a.ndp.Close())
	}
	if err != nil {
		return fmt.Errorf("interface %q: close: %w", a.ifi.Name, err)
	}
	return nil
}

// Handover prepares a graceful stop: every announced IP keeps being
// answered until another host announces it (the new owner, told by the
// liveness mesh that this node is leaving), and is then withdrawn at once
// instead of defended. So clients are never left without an answer and
// never pulled back to the leaving node. It returns when no IP is left or
// ctx ends, with the number of IPs still held.
func (a *Announcer) Handover(ctx context.Context) int {
	a.BeginHandover()
	t := time.NewTicker(5 * time.Millisecond)
	defer t.Stop()
	for {
		a.mu.RLock()
		n := len(a.entries)
		a.mu.RUnlock()
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-t.C:
		}
	}
}

// BeginHandover switches to leaving without waiting: call it before
// telling the peers, so that the new owner's first announcement already
// finds this node yielding rather than defending.
func (a *Announcer) BeginHandover() {
	a.mu.Lock()
	a.leaving = true
	a.mu.Unlock()
}

func (a *Announcer) isClosed() bool {
	a.mu.RLock()
	defer a.mu.RUnlock()
	return a.closed
}
