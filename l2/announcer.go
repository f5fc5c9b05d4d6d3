package l2

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/go-logr/logr"
	"github.com/mdlayher/ethernet"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vishvananda/netns"
	"golang.org/x/net/ipv6"
	"golang.org/x/sys/unix"
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
	// netns is the network namespace the sockets were opened in, when it
	// is not the process's own. NDP sends name the interface as a zone,
	// which the Go runtime resolves to an index in the calling thread's
	// namespace: a caller that opened the announcer inside another
	// namespace (labs, tests) would get another interface's index there,
	// so sends switch to this one first.
	netns netns.NsHandle
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
// the sockets stay bound to it whatever goroutine uses them later.
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
		netns:   foreignNetNS(),
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

// dropLocked stops answering for e. Requires a.mu.
func (a *Announcer) dropLocked(e *entry) {
	if a.entries[e.ip] == e {
		delete(a.entries, e.ip)
	}
	if e.yielding != nil {
		e.yielding.Stop()
	}
	if e.cancel != nil {
		e.cancel()
	}
	if e.phase == phaseAnnouncing {
		a.log.Info("released", "ip", e.ip.String())
	}
	if e.parked {
		if ip := a.unparkLocked(e); ip.Is6() {
			// Not under a.mu: leaving a group reads the closed flag.
			a.wg.Add(1)
			go func() {
				defer a.wg.Done()
				a.leaveGroupIfV6(ip)
			}()
		}
	}
}

// unparkLocked stops answering for a parked entry, and returns its IP,
// whose solicited-node group (if IPv6) the caller leaves (leaveGroupIfV6)
// once it no longer holds a.mu. Requires a.mu.
func (a *Announcer) unparkLocked(e *entry) netip.Addr {
	e.parked = false
	e.phase = phaseNone
	return e.ip
}

// leaveGroupIfV6 leaves ip's solicited-node group if it is IPv6, as the
// goroutine of an entry does when it ends.
func (a *Announcer) leaveGroupIfV6(ip netip.Addr) {
	if ip.Is6() && a.ndp != nil {
		a.leaveGroup(ip)
	}
}

// dropYielding ends a yield nobody took over in time.
func (a *Announcer) dropYielding(e *entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e.yielding != nil && a.entries[e.ip] == e {
		a.log.Info("no new owner announced in time; releasing anyway", "ip", e.ip.String())
		a.dropLocked(e)
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
	if a.netns.IsOpen() {
		_ = a.netns.Close()
	}
	if err != nil {
		return fmt.Errorf("interface %q: close: %w", a.ifi.Name, err)
	}
	return nil
}

func announceable(ip netip.Addr) bool {
	return ip.IsValid() && !ip.IsUnspecified() && !ip.IsLoopback() && !ip.IsMulticast() &&
		!ip.IsLinkLocalUnicast() && ip != netip.AddrFrom4([4]byte{255, 255, 255, 255})
}

// startLocked starts e's goroutine under the Run context. Requires a.mu.
func (a *Announcer) startLocked(e *entry) {
	ctx, cancel := context.WithCancel(a.runCtx)
	e.cancel = cancel
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.manage(ctx, e)
	}()
}

// phaseLocked is the phaseFunc of the read loops. Requires a.mu (read).
func (a *Announcer) phaseLocked(ip netip.Addr) phase {
	if e, ok := a.entries[ip]; ok {
		return e.phase
	}
	return phaseNone
}

func (a *Announcer) setPhase(e *entry, p phase) {
	a.mu.Lock()
	if !a.closed || p == phaseNone {
		e.phase = p
	}
	a.mu.Unlock()
}

// postClaimLocked hands a foreign claim to the IP's goroutine without ever
// blocking the read loop. Requires a.mu (read).
func (a *Announcer) postClaimLocked(ip netip.Addr, c claim) {
	if e, ok := a.entries[ip]; ok {
		select {
		case e.claims <- c:
		default:
		}
		if e.parked {
			go a.resume(e)
		}
	}
}

// resume gives a parked entry a goroutine again to handle its claims.
// Several may be started for one entry; the first one resumes it.
func (a *Announcer) resume(e *entry) {
	a.mu.Lock()
	if !e.parked || a.entries[e.ip] != e || a.runCtx == nil {
		a.mu.Unlock()
		return
	}
	e.parked = false
	ctx, cancel := context.WithCancel(a.runCtx)
	e.cancel = cancel
	a.wg.Add(1)
	a.mu.Unlock()
	defer a.wg.Done()
	if !a.hold(ctx, e, nil) {
		a.setPhase(e, phaseNone)
		a.leaveGroupIfV6(e.ip)
	}
}

// park ends e's goroutine while e is announced and quiet: it tells
// whether e is parked now (else the goroutine carries on). Its context
// is released: dropLocked and Run's end handle a parked entry.
func (a *Announcer) park(ctx context.Context, e *entry) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ctx.Err() != nil || len(e.claims) > 0 || a.entries[e.ip] != e || e.phase != phaseAnnouncing || a.closed {
		return false
	}
	e.parked = true
	if e.cancel != nil {
		e.cancel()
		e.cancel = nil
	}
	return true
}

// manage drives one IP: probe until no other host answers for it, then
// announce it until it is released (ctx canceled) or parked.
func (a *Announcer) manage(ctx context.Context, e *entry) {
	parked := false // then the entry keeps its phase and group
	defer func() {
		if !parked {
			a.setPhase(e, phaseNone)
		}
	}()
	if e.ip.Is6() {
		if a.ndp == nil {
			a.ipLog(e.ip).Error(a.ndpErr, "cannot announce IPv6 address on this interface")
			return
		}
		// Solicitations for the IP go to its solicited-node group; the
		// kernel only passes them up once somebody joined it.
		if err := a.joinGroup(e.ip); err != nil {
			a.ipLog(e.ip).Error(err, "cannot announce IPv6 address")
			return
		}
		defer func() {
			if !parked {
				a.leaveGroup(e.ip)
			}
		}()
	}

	backoff := minConflictRetry
	for {
		c, free := a.probe(ctx, e)
		if ctx.Err() != nil {
			return
		}
		if free {
			break
		}
		a.setPhase(e, phaseNone)
		if a.isPeer(c.mac) {
			// Another node of ours still answers: it computes the same
			// plan, and is yielding the address until the new owner
			// announces it (Moves.Yield), so waiting for it to go quiet
			// would only wait for its yield timeout. Not a conflict: take
			// the address over now; our announcement is what makes it
			// withdraw. Should its plan still differ, both defend until
			// the plans agree, as after a partition.
			a.ipLog(e.ip).V(1).Info("a peer still answers for the IP; taking it over", "peerMAC", c.mac.String())
			break
		}
		// Jitter (uniform in [backoff/2, 3*backoff/2)) so that two nodes
		// wrongly told to take the same IP at the same time do not keep
		// probing in lockstep and seeing each other's probes forever: the
		// first one to probe alone gets it, the other then sees a conflict.
		wait := backoff/2 + rand.N(backoff)
		a.reportConflict(e.ip, c, "probing", "retryIn", wait.Round(time.Millisecond).String())
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		backoff = min(2*backoff, maxConflictRetry)
	}
	parked = a.announce(ctx, e)
}

// probe asks whether another host holds e.ip: two probes, at the start and
// half-way through ProbeTimeout (one lost frame must not hide a conflict),
// and any foreign claim until ProbeTimeout ends the probe. free reports that
// nobody claimed the IP.
func (a *Announcer) probe(ctx context.Context, e *entry) (c claim, free bool) {
	a.setPhase(e, phaseProbing)
	// Claims posted before this probe are stale.
	select {
	case <-e.claims:
	default:
	}
	a.mu.Lock()
	skip := e.takeover
	e.takeover = false // a later probe (after a conflict) is a real one
	a.mu.Unlock()
	if a.opts.ProbeTimeout < 0 || skip {
		return claim{}, true
	}
	a.sendProbe(e.ip)
	again := time.NewTimer(a.opts.ProbeTimeout / 2)
	defer again.Stop()
	done := time.NewTimer(a.opts.ProbeTimeout)
	defer done.Stop()
	for {
		select {
		case <-ctx.Done():
			return claim{}, false
		case c := <-e.claims:
			return c, false
		case <-again.C:
			a.sendProbe(e.ip)
		case <-done.C:
			return claim{}, true
		}
	}
}

// announce answers for e.ip from now on, sends the gratuitous burst, and
// handles later claims (hold) until ctx is canceled or e is parked.
func (a *Announcer) announce(ctx context.Context, e *entry) (parked bool) {
	a.setPhase(e, phaseAnnouncing)
	a.ipLog(e.ip).Info("announcing")
	if a.opts.OnAnnounced != nil {
		a.opts.OnAnnounced(e.ip)
	}
	var burst *time.Ticker
	if n := a.opts.GratuitousCount; n > 0 {
		a.sendGratuitous(e.ip)
		if n > 1 {
			burst = time.NewTicker(a.opts.GratuitousInterval)
			defer burst.Stop()
		}
	}
	return a.hold(ctx, e, burst)
}

// hold handles the claims on announced e.ip, and sends the rest of the
// gratuitous burst if there is one, until ctx is canceled (false), the IP
// is handed over (false), or all is quiet and e is parked (true).
func (a *Announcer) hold(ctx context.Context, e *entry, burst *time.Ticker) (parked bool) {
	proto := protoARP
	if e.ip.Is6() {
		proto = protoNDP
	}
	var tick <-chan time.Time
	if burst != nil {
		tick = burst.C
	}
	sent := 1
	for {
		if tick == nil && a.park(ctx, e) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-tick:
			a.sendGratuitous(e.ip)
			if sent++; sent >= a.opts.GratuitousCount {
				tick = nil
			}
		case c := <-e.claims:
			a.mu.Lock()
			yield := a.leaving || e.yielding != nil
			if !yield && a.isPeer(c.mac) {
				e.peerClaimAt = time.Now()
			}
			if yield {
				// The new owner announced: withdraw, do not defend.
				if e.yielding != nil {
					e.yielding.Stop()
				}
				if a.entries[e.ip] == e {
					delete(a.entries, e.ip)
				}
			}
			a.mu.Unlock()
			if yield {
				a.opts.Metrics.handover(proto)
				a.ipLog(e.ip).Info("handed over", "newOwnerMAC", c.mac.String())
				return false
			}
			if !e.lastReport.IsZero() && time.Since(e.lastReport) < defendInterval {
				continue
			}
			e.lastReport = time.Now()
			if a.isPeer(c.mac) {
				// A peer with another view of the cluster (it has not
				// seen us yet, or a partition heals): defend, and let the
				// plans converge; nothing to report.
				a.ipLog(e.ip).Info("a peer claims the IP; defending", "peerMAC", c.mac.String())
			} else {
				a.reportConflict(e.ip, c, "announcing", "action", "keep announcing, defend")
			}
			a.sendGratuitous(e.ip)
		}
	}
}

// ipLog is the logger for lines about one address, made when a line is
// written: a logger kept per address for its goroutine's life would cost
// about 1 KiB each (zap's WithValues copies its encoder), which adds up
// on a node announcing thousands of addresses, for lines that are rare.
func (a *Announcer) ipLog(ip netip.Addr) logr.Logger {
	return a.log.WithValues("ip", ip.String())
}

func (a *Announcer) isPeer(mac net.HardwareAddr) bool {
	return mac != nil && a.opts.IsPeer != nil && a.opts.IsPeer(mac)
}

func (a *Announcer) reportConflict(ip netip.Addr, c claim, during string, kv ...any) {
	a.opts.Metrics.conflict(c.proto)
	a.log.Info("address conflict: another host claims the IP",
		append([]any{"ip", ip.String(), "foreignMAC", c.mac.String(), "during", during}, kv...)...)
	if a.opts.OnConflict != nil {
		a.opts.OnConflict(ip, c.mac)
	}
}

func (a *Announcer) sendProbe(ip netip.Addr) {
	var err error
	if ip.Is4() {
		var f []byte
		if f, err = arpProbe(a.mac, ip); err == nil {
			_, err = a.arp.WriteTo(f, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		}
	} else {
		var snm netip.Addr
		if snm, err = ndp.SolicitedNodeMulticast(ip); err == nil {
			err = a.writeNDP(ndpProbe(a.mac, ip), nil, snm)
		}
	}
	if err != nil {
		a.log.Error(err, "send probe", "ip", ip.String())
	}
}

func (a *Announcer) sendGratuitous(ip netip.Addr) {
	var err error
	proto := protoARP
	if ip.Is4() {
		var f []byte
		if f, err = arpAnnouncement(a.mac, ip); err == nil {
			_, err = a.arp.WriteTo(f, &packet.Addr{HardwareAddr: ethernet.Broadcast})
		}
	} else {
		proto = protoNDP
		err = a.writeNDP(ndpAnnouncement(a.mac, ip), nil, allNodes)
	}
	if err != nil {
		a.log.Error(err, "send gratuitous announcement", "ip", ip.String())
		return
	}
	a.opts.Metrics.gratuitous(proto)
}

// joinGroup joins the solicited-node group of ip. Several IPs can share a
// group (same low 24 bits), and the kernel refuses a second join and drops
// the membership on the first leave, hence the reference count.
func (a *Announcer) joinGroup(ip netip.Addr) error {
	g, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		return err
	}
	a.groupMu.Lock()
	defer a.groupMu.Unlock()
	if a.groups[g] == 0 {
		if err := a.ndp.JoinGroup(g); err != nil {
			return fmt.Errorf("interface %q: join group %s for %s: %w", a.ifi.Name, g, ip, err)
		}
	}
	a.groups[g]++
	return nil
}

func (a *Announcer) leaveGroup(ip netip.Addr) {
	g, err := ndp.SolicitedNodeMulticast(ip)
	if err != nil {
		return
	}
	a.groupMu.Lock()
	defer a.groupMu.Unlock()
	if a.groups[g]--; a.groups[g] > 0 {
		return
	}
	delete(a.groups, g)
	if err := a.ndp.LeaveGroup(g); err != nil && !a.isClosed() {
		a.log.Error(err, "leave solicited-node group", "group", g.String(), "ip", ip.String())
	}
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

// serveARP is the ARP read loop.
func (a *Announcer) serveARP(ctx context.Context) error {
	// ARP frames are 42 bytes (60 with padding); a longer frame is
	// truncated, which is harmless.
	buf := make([]byte, 256)
	for {
		n, _, err := a.arp.ReadFrom(buf)
		if err != nil {
			if stop, err := a.readError(ctx, protoARP, err); stop {
				return err
			}
			continue
		}
		a.handleARP(buf[:n])
	}
}

func (a *Announcer) handleARP(frame []byte) {
	a.mu.RLock()
	d := decideARP(frame, a.mac, a.phaseLocked)
	if d.conflict.IsValid() {
		a.postClaimLocked(d.conflict, claim{mac: slices.Clone(d.foreignMAC), proto: protoARP})
	}
	a.mu.RUnlock()

	if d.request {
		a.opts.Metrics.request(protoARP)
	}
	if d.reply == nil {
		return
	}
	if _, err := a.arp.WriteTo(d.reply, &packet.Addr{HardwareAddr: d.replyTo}); err != nil {
		a.log.Error(err, "send ARP reply", "to", d.replyTo.String())
		return
	}
	a.opts.Metrics.response(protoARP)
	a.log.V(1).Info("answered ARP request", "to", d.replyTo.String())
}

// serveNDP is the NDP read loop.
func (a *Announcer) serveNDP(ctx context.Context) error {
	buf := make([]byte, max(a.ifi.MTU, 1500))
	for {
		n, cm, src, err := a.ndp.ReadRaw(buf)
		if err != nil {
			if stop, err := a.readError(ctx, protoNDP, err); stop {
				return err
			}
			continue
		}
		hop := -1
		if a.hopLimitKnown && cm != nil {
			hop = cm.HopLimit
		}
		a.handleNDP(buf[:n], src, hop)
	}
}

func (a *Announcer) handleNDP(msg []byte, src netip.Addr, hopLimit int) {
	a.mu.RLock()
	d := decideNDP(msg, src, hopLimit, a.ndpAddr, a.mac, a.phaseLocked)
	if d.conflict.IsValid() {
		a.postClaimLocked(d.conflict, claim{mac: slices.Clone(d.foreignMAC), proto: protoNDP})
	}
	a.mu.RUnlock()

	if d.request {
		a.opts.Metrics.request(protoNDP)
	}
	if d.reply == nil {
		return
	}
	err := a.writeNDP(d.reply, nil, d.dst)
	if err != nil && d.dst != allNodes {
		// Typically no route to the solicitor's source (a global address
		// in a prefix this node has no address in). An unsolicited
		// advertisement to all-nodes completes its pending resolution too
		// (RFC 4861 section 7.2.5).
		a.log.V(1).Info("unicast neighbor advertisement failed, multicasting it", "to", d.dst.String(), "error", err.Error())
		na := *d.reply
		na.Solicited = false
		err = a.writeNDP(&na, nil, allNodes)
	}
	if err != nil {
		a.log.Error(err, "send neighbor advertisement", "to", d.dst.String())
		return
	}
	a.opts.Metrics.response(protoNDP)
	a.log.V(1).Info("answered neighbor solicitation", "to", d.dst.String())
}

// readError classifies a read error: stop reports whether the loop must end,
// err is what Run returns then (nil for a normal shutdown).
func (a *Announcer) readError(ctx context.Context, proto string, err error) (stop bool, _ error) {
	switch {
	case ctx.Err() != nil, a.isClosed(), errors.Is(err, net.ErrClosed):
		return true, nil
	case errors.Is(err, os.ErrDeadlineExceeded):
		return false, nil
	case errors.Is(err, unix.ENETDOWN), errors.Is(err, unix.ENOBUFS),
		errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
		// The interface went down, or the kernel was short of memory:
		// keep serving, things work again when it comes back.
		a.log.Info("transient read error", "protocol", proto, "error", err.Error())
		select {
		case <-ctx.Done():
		case <-time.After(transientErrorPause):
		}
		return false, nil
	default:
		return true, fmt.Errorf("interface %q: read %s: %w", a.ifi.Name, proto, err)
	}
}

// foreignNetNS returns the calling thread's network namespace if it is not
// the process's own (a caller opened the announcer from another namespace),
// else a closed handle: then sends need no namespace switch at all, which
// is the production case (host network, no switching).
func foreignNetNS() netns.NsHandle {
	cur, err := netns.Get()
	if err != nil {
		return netns.None()
	}
	own, err := netns.GetFromPid(os.Getpid())
	if err != nil {
		return cur
	}
	defer own.Close()
	if cur.Equal(own) {
		cur.Close()
		return netns.None()
	}
	return cur
}

// writeNDP sends an NDP message from the namespace the socket lives in.
func (a *Announcer) writeNDP(m ndp.Message, cm *ipv6.ControlMessage, dst netip.Addr) error {
	if !a.netns.IsOpen() {
		return a.ndp.WriteTo(m, cm, dst)
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	cur, err := netns.Get()
	if err != nil {
		return a.ndp.WriteTo(m, cm, dst)
	}
	defer cur.Close()
	if !cur.Equal(a.netns) {
		if err := netns.Set(a.netns); err != nil {
			return fmt.Errorf("enter the announcer's network namespace: %w", err)
		}
		defer func() { _ = netns.Set(cur) }()
	}
	return a.ndp.WriteTo(m, cm, dst)
}
