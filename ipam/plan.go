package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// checkRequest validates svc and req and returns the requested IP per family
// index (invalid Addr where none was requested).
func checkRequest(svc *Service, req *Request) ([numFamilies]netip.Addr, error) {
	var want [numFamilies]netip.Addr
	if svc.Key == "" {
		return want, errorf(ErrInvalidRequest, "service has an empty key")
	}
	if n := len(req.Families); n < 1 || n > numFamilies {
		return want, errorf(ErrInvalidRequest, "a request wants one or two address families, not %d", n)
	}
	for i, f := range req.Families {
		if !f.valid() {
			return want, errorf(ErrInvalidRequest, "unknown address family %v", f)
		}
		if slices.Contains(req.Families[:i], f) {
			return want, errorf(ErrInvalidRequest, "address family %s is listed twice", f)
		}
	}
	for _, ip := range req.IPs {
		if err := checkIP(ip); err != nil {
			return want, err
		}
		f := FamilyOf(ip)
		if !slices.Contains(req.Families, f) {
			return want, errorf(ErrInvalidRequest, "requested IP %s is %s, but the service's families are %s",
				ip, f, familyList(req.Families))
		}
		if prev := want[f.index()]; prev.IsValid() && prev != ip {
			return want, errorf(ErrInvalidRequest, "two %s addresses requested (%s and %s); at most one per family", f, prev, ip)
		}
		want[f.index()] = ip
	}
	return want, nil
}

// checkIP rejects addresses that cannot be compared reliably with pool
// ranges.
func checkIP(ip netip.Addr) error {
	switch {
	case !ip.IsValid():
		return errorf(ErrInvalidRequest, "invalid (zero) IP address")
	case ip.Zone() != "":
		return errorf(ErrInvalidRequest, "IP %s has a zone; load balancer IPs are global", ip)
	case ip.Is4In6():
		return errorf(ErrInvalidRequest, "IP %s is IPv4-mapped IPv6; write it as %s", ip, ip.Unmap())
	}
	return nil
}

func familyList(fs []Family) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = f.String()
	}
	return strings.Join(s, ", ")
}

// keepable returns, per family index, the current holdings of svc that still
// satisfy req.
func (a *Allocator) keepable(svc *Service, req *Request, want [numFamilies]netip.Addr) [numFamilies]Holding {
	var kept [numFamilies]Holding
	st := a.services[svc.Key]
	if st == nil {
		return kept
	}
	for _, h := range st.holdings {
		f := FamilyOf(h.IP)
		switch {
		case !slices.Contains(req.Families, f):
		case want[f.index()].IsValid() && want[f.index()] != h.IP:
		case req.Pool != "" && h.Pool != req.Pool:
		case a.conflictAt(h.IP, svc) != nil: // svc's ports or selector changed
		default:
			kept[f.index()] = h
		}
	}
	if req.RequireAll {
		// All IPs must come from one pool. If the kept ones disagree (the
		// request just became RequireAll), the first family's pool wins
		// and the others are re-planned from it.
		anchor := ""
		found := false
		for _, f := range req.Families {
			h := kept[f.index()]
			switch {
			case !h.IP.IsValid():
			case !found:
				anchor, found = h.Pool, true
			case h.Pool != anchor:
				kept[f.index()] = Holding{}
			}
		}
	}
	return kept
}

// planAll plans the missing families of a RequireAll request into got: all
// from the pool of the kept IPs if any, else from the first candidate pool
// that can provide every one of them.
func (a *Allocator) planAll(svc *Service, req *Request, want [numFamilies]netip.Addr, candidates []string, missing []Family, got *[numFamilies]Holding) error {
	if len(missing) == 0 {
		return nil
	}
	// anchor is the pool everything must come from, once known, and why.
	var anchor *Holding
	var anchorFamily Family
	for _, f := range req.Families {
		if h := &got[f.index()]; h.IP.IsValid() {
			anchor, anchorFamily = h, f
			break
		}
	}
	var auto []Family
	for _, f := range missing {
		ip := want[f.index()]
		if !ip.IsValid() {
			auto = append(auto, f)
			continue
		}
		h, err := a.planRequested(svc, ip, req.Pool)
		if err != nil {
			return err
		}
		if anchor != nil && h.Pool != anchor.Pool {
			return errorf(ErrDualStack, "RequireDualStack: %s is in pool %q, but the %s address %s is from pool %q",
				ip, h.Pool, anchorFamily, anchor.IP, anchor.Pool)
		}
		got[f.index()] = h
		if anchor == nil {
			anchor, anchorFamily = &got[f.index()], f
		}
	}
	if len(auto) == 0 {
		return nil
	}

	pools := candidates
	if anchor != nil {
		switch {
		case anchor.Orphan && a.pools[anchor.Pool] == nil:
			return errorf(ErrDualStack, "RequireDualStack: the %s address %s is not inside any pool, so no pool can pair it with an %s address",
				anchorFamily, anchor.IP, auto[0])
		case !slices.Contains(candidates, anchor.Pool):
			return errorf(ErrDualStack, "RequireDualStack: the %s address %s is from pool %q, which is not a candidate for auto allocation",
				anchorFamily, anchor.IP, anchor.Pool)
		}
		pools = []string{anchor.Pool}
	}
	if len(pools) == 0 {
		return errorf(ErrNoCandidates, "no pool may be used to allocate an %s address", auto[0])
	}

	var errs []error
	var plan [numFamilies]Holding
	for i, name := range pools {
		if slices.Contains(pools[:i], name) {
			continue
		}
		p := a.pools[name]
		if p == nil {
			errs = append(errs, errorf(ErrUnknownPool, "pool %q does not exist", name))
			continue
		}
		var err error
		for _, f := range auto {
			if plan[f.index()], err = a.pickFrom(svc, f, p); err != nil {
				break
			}
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		for _, f := range auto {
			got[f.index()] = plan[f.index()]
		}
		return nil
	}
	if len(errs) == 1 && anchor == nil && len(auto) == len(req.Families) {
		return &listError{msg: "RequireDualStack", errs: errs, sentinel: ErrDualStack, colon: true}
	}
	msg := fmt.Sprintf("RequireDualStack: no candidate pool can provide %s", familyList(req.Families))
	if anchor != nil {
		msg = fmt.Sprintf("RequireDualStack: the %s address %s is from pool %q, so %s must be too",
			anchorFamily, anchor.IP, anchor.Pool, familyList(auto))
	}
	return &listError{msg: msg, errs: errs, sentinel: ErrDualStack, colon: anchor != nil}
}

// planRequested checks that svc may have exactly ip, within the named pool
// if any.
func (a *Allocator) planRequested(svc *Service, ip netip.Addr, named string) (Holding, error) {
	p := a.poolOf(ip)
	switch {
	case p == nil:
		return Holding{}, errorf(ErrNotInPool, "%s is not inside any pool", ip)
	case named != "" && p.name != named:
		return Holding{}, errorf(ErrNotInPool, "%s is in pool %q, not in the requested pool %q", ip, p.name, named)
	case !p.allocatable(ip):
		return Holding{}, errorf(ErrNotInPool, "%s is excluded from pool %q by avoidBuggyIPs (no addresses ending in .0 or .255)", ip, p.name)
	}
	if err := a.conflictAt(ip, svc); err != nil {
		return Holding{}, err
	}
	return Holding{IP: ip, Pool: p.name}, nil
}

// planAuto picks an address of family f from the first candidate pool that
// has one.
func (a *Allocator) planAuto(svc *Service, f Family, candidates []string) (Holding, error) {
	if len(candidates) == 0 {
		return Holding{}, errorf(ErrNoCandidates, "no pool may be used to allocate an %s address", f)
	}
	var errs []error
	allFull := true
	for i, name := range candidates {
		if slices.Contains(candidates[:i], name) {
			continue
		}
		p := a.pools[name]
		if p == nil {
			errs = append(errs, errorf(ErrUnknownPool, "pool %q does not exist", name))
			allFull = false
			continue
		}
		h, err := a.pickFrom(svc, f, p)
		if err == nil {
			return h, nil
		}
		errs = append(errs, err)
	}
	if len(errs) == 1 {
		return Holding{}, errs[0]
	}
	msg := fmt.Sprintf("no pool has a free %s address", f)
	if allFull {
		var tried []string
		for i, name := range candidates {
			if !slices.Contains(candidates[:i], name) {
				tried = append(tried, fmt.Sprintf("%q", name))
			}
		}
		return Holding{}, &listError{msg: fmt.Sprintf("%s (tried %s)", msg, strings.Join(tried, ", ")), errs: errs, brief: true}
	}
	return Holding{}, &listError{msg: msg, errs: errs}
}

// pickFrom picks the address of family f that svc would get from p: the
// lowest IP of p already shared under svc's sharing key that svc is
// compatible with, else p's lowest free address. Sharing first keeps the
// number of IPs used by a group of sharing services minimal, which is why
// users set a sharing key.
func (a *Allocator) pickFrom(svc *Service, f Family, p *pool) (Holding, error) {
	if svc.SharingKey != "" {
		var best netip.Addr
		for ip := range a.sharing[svc.SharingKey] {
			if FamilyOf(ip) != f || (best.IsValid() && !ip.Less(best)) {
				continue
			}
			if st := a.ips[ip]; st.pool == p && p.allocatable(ip) && a.conflictAt(ip, svc) == nil {
				best = ip
			}
		}
		if best.IsValid() {
			return Holding{IP: best, Pool: p.name}, nil
		}
	}
	ip, ok := p.family(f).free.lowest()
	if !ok {
		return Holding{}, fmt.Errorf("pool %q: %w", p.name, noFreeError{f})
	}
	return Holding{IP: ip, Pool: p.name}, nil
}

// conflictAt returns a *ConflictError if ip is held by services that svc may
// not share it with; svc's own holding is ignored.
func (a *Allocator) conflictAt(ip netip.Addr, svc *Service) error {
	st := a.ips[ip]
	if st == nil {
		return nil
	}
	var ce *ConflictError
	for _, h := range st.holders {
		if h.svc.Key == svc.Key {
			continue
		}
		reason, which, ok := conflict(&h.svc, svc)
		if ok {
			continue
		}
		if ce == nil {
			ce = &ConflictError{IP: ip, Service: svc.Key, Reason: reason, which: which}
		}
		ce.Holders = append(ce.Holders, h.svc.Key)
	}
	if ce == nil {
		return nil
	}
	return ce
}
