package l2

import (
	"context"
	"math/rand/v2"
	"net"
	"net/netip"
	"time"

	"github.com/go-logr/logr"
)

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

// dropYielding ends a yield nobody took over in time.
func (a *Announcer) dropYielding(e *entry) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if e.yielding != nil && a.entries[e.ip] == e {
		a.log.Info("no new owner announced in time; releasing anyway", "ip", e.ip.String())
		a.dropLocked(e)
	}
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
