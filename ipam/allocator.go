package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// Request is what a Service asks for.
type Request struct {
	// Families wanted, in order (one or two distinct entries). The order is
	// the order of the returned holdings, and with RequireAll the first
	// family's pool wins if kept IPs disagree.
	Families []Family
	// RequireAll (RequireDualStack): every family or nothing, all from one
	// pool, so both addresses route the same way.
	RequireAll bool
	// IPs are explicitly requested addresses, at most one per family. A
	// family with a requested IP gets exactly that IP; a family without one
	// is auto-allocated.
	IPs []netip.Addr
	// Pool names a pool as a hard constraint ("" = none): every IP must come
	// from it. Auto allocation then uses only this pool, whatever Candidates
	// says.
	Pool string
	// Candidates are the pools to auto-allocate from, in preference order.
	// The caller has already applied autoAssign, priorities and selectors.
	Candidates []string
}

// Allocator assigns IPs from pools to services.
//
// It is NOT safe for concurrent use: the controller serialises calls behind
// its own mutex, which it needs anyway to keep the allocator consistent with
// the Service statuses it writes. (The read-only methods Holdings, Usage,
// InUse, Services and Users may run concurrently with each other, so a
// sync.RWMutex works; everything else needs the write lock.)
type Allocator struct {
	pools map[string]*pool
	// index is every pool's ranges sorted by First, to find an IP's pool by
	// binary search.
	index    []poolRange
	ips      map[netip.Addr]*ipState
	services map[string]*svcState
	// sharing maps a sharing key to the IPs held by services with that key
	// (and how many such holders each has), so that auto allocation can find
	// an IP to share without scanning every holding.
	sharing map[string]map[netip.Addr]int
}

// ipState is a held IP. IPs nobody holds have no state: they are either in a
// pool's free set or nowhere.
type ipState struct {
	pool    *pool       // the pool whose ranges contain the IP; nil if none
	holders []*svcState // sorted by key; empty only transiently
}

// svcState is a service holding at least one IP.
type svcState struct {
	svc      Service
	holdings []Holding // at most one per family
}

// New returns an allocator with no pools and no holdings.
func New() *Allocator {
	return &Allocator{
		pools:    map[string]*pool{},
		ips:      map[netip.Addr]*ipState{},
		services: map[string]*svcState{},
		sharing:  map[string]map[netip.Addr]int{},
	}
}

// SetPools replaces the pool set. It is all-or-nothing: an invalid
// configuration (empty or duplicate name, bad range, overlapping ranges
// within or across pools) is rejected with ErrInvalidPools and changes
// nothing.
//
// Holdings are never dropped here, because that would pull working IPs from
// under running services: each held IP is attributed to the new pool that
// contains it, or becomes an orphan (keeping its old pool name so a
// named-pool request still accepts it) if none does.
func (a *Allocator) SetPools(pools []Pool) error {
	built, index, err := buildPools(pools)
	if err != nil {
		return err
	}
	a.pools, a.index = built, index
	for ip, st := range a.ips {
		st.pool = a.poolOf(ip)
		a.claim(ip, st)
	}
	for _, s := range a.services {
		for i := range s.holdings {
			h := &s.holdings[i]
			if p := a.ips[h.IP].pool; p != nil {
				h.Pool, h.Orphan = p.name, false
			} else {
				h.Orphan = true
			}
		}
	}
	return nil
}

// Ensure makes svc hold IPs satisfying req and returns its holdings in
// req.Families order.
//
// Held IPs that still satisfy the request are kept, so an IP never moves
// unless the service's own request changes. Missing families get the
// requested IP, or the lowest free address of the first candidate pool that
// has one (preferring an IP already shared under svc's sharing key).
//
// On success, held IPs that were not kept are released. On failure the
// allocator is unchanged, and svc keeps what it held: losing a working IP
// because a changed request cannot be met is worse than not meeting it. The
// one exception is partial success without req.RequireAll: the holdings
// obtained are committed and returned with a *PartialError naming the
// missing families.
//
// Errors do not repeat svc.Key; they name the pool, family, IP and
// conflicting service involved.
func (a *Allocator) Ensure(svc Service, req Request) ([]Holding, error) {
	want, err := checkRequest(&svc, &req)
	if err != nil {
		return nil, err
	}
	candidates := req.Candidates
	if req.Pool != "" {
		candidates = []string{req.Pool}
	}

	kept := a.keepable(&svc, &req, want)
	var got [numFamilies]Holding // kept or newly planned, by family index
	var missing []Family
	for _, f := range req.Families {
		if h := kept[f.index()]; h.IP.IsValid() {
			got[f.index()] = h
		} else {
			missing = append(missing, f)
		}
	}

	var partial *PartialError
	if req.RequireAll && len(req.Families) > 1 {
		if err := a.planAll(&svc, &req, want, candidates, missing, &got); err != nil {
			return nil, err
		}
	} else {
		var failed []FamilyError
		for _, f := range missing {
			var h Holding
			var err error
			if ip := want[f.index()]; ip.IsValid() {
				h, err = a.planRequested(&svc, ip, req.Pool)
			} else {
				h, err = a.planAuto(&svc, f, candidates)
			}
			if err != nil {
				failed = append(failed, FamilyError{Family: f, Err: err})
				continue
			}
			got[f.index()] = h
		}
		if len(failed) == len(req.Families) {
			if len(failed) == 1 {
				return nil, failed[0].Err
			}
			errs := make([]error, len(failed))
			for i, fe := range failed {
				errs[i] = fe
			}
			return nil, &listError{errs: errs}
		}
		if len(failed) > 0 {
			partial = &PartialError{Missing: failed}
		}
	}

	holdings := make([]Holding, 0, len(req.Families))
	for _, f := range req.Families {
		if h := got[f.index()]; h.IP.IsValid() {
			holdings = append(holdings, h)
		}
	}
	a.replace(svc, holdings)
	out := slices.Clone(holdings)
	if partial != nil {
		return out, partial
	}
	return out, nil
}

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

// Restore records that svc holds ips, replacing whatever it held. The
// controller calls it at start-up with the IPs found in Service statuses, so
// that running services keep their addresses even if the configuration has
// changed meanwhile: IPs outside every pool become orphans (Pool ""). Only
// sharing compatibility with other holders is checked; on conflict nothing
// changes. Restoring the same svc and ips twice is a no-op.
func (a *Allocator) Restore(svc Service, ips []netip.Addr) ([]Holding, error) {
	if svc.Key == "" {
		return nil, errorf(ErrInvalidRequest, "service has an empty key")
	}
	var prev []Holding
	if st := a.services[svc.Key]; st != nil {
		prev = st.holdings
	}
	var seen [numFamilies]netip.Addr
	holdings := make([]Holding, 0, len(ips))
	for _, ip := range ips {
		if err := checkIP(ip); err != nil {
			return nil, fmt.Errorf("restoring %s: %w", svc.Key, err)
		}
		f := FamilyOf(ip)
		if s := seen[f.index()]; s.IsValid() {
			if s == ip {
				continue
			}
			return nil, fmt.Errorf("restoring %s: %w", svc.Key,
				errorf(ErrInvalidRequest, "two %s addresses (%s and %s); a service holds at most one per family", f, s, ip))
		}
		seen[f.index()] = ip
		if err := a.conflictAt(ip, &svc); err != nil {
			return nil, fmt.Errorf("restoring %s: %w", svc.Key, err)
		}
		h := Holding{IP: ip}
		if p := a.poolOf(ip); p != nil {
			h.Pool = p.name
		} else {
			h.Orphan = true
			// Keep the pool name an orphan already had, for idempotence.
			if i := slices.IndexFunc(prev, func(o Holding) bool { return o.IP == ip }); i >= 0 {
				h.Pool = prev[i].Pool
			}
		}
		holdings = append(holdings, h)
	}
	a.replace(svc, holdings)
	return slices.Clone(holdings), nil
}

// Release drops all of key's holdings and returns the IPs nobody holds any
// more, in holding order.
func (a *Allocator) Release(key string) []netip.Addr {
	if a.services[key] == nil {
		return nil
	}
	return a.replace(Service{Key: key}, nil)
}

// Holdings returns what key holds, in the order of its last Ensure or
// Restore.
func (a *Allocator) Holdings(key string) []Holding {
	st := a.services[key]
	if st == nil {
		return nil
	}
	return slices.Clone(st.holdings)
}

// Usage returns the accounting of the named pool, per family that has
// ranges; ok is false if there is no such pool.
func (a *Allocator) Usage(pool string) (u map[Family]Usage, ok bool) {
	p := a.pools[pool]
	if p == nil {
		return nil, false
	}
	return p.usage(), true
}

// InUse returns the number of distinct held IPs inside the named pool's
// ranges (including .0/.255 addresses restored into an AvoidBuggyIPs pool;
// excluding orphans that merely remember the pool's name). A pool with IPs
// in use should not be deleted lightly.
func (a *Allocator) InUse(pool string) int {
	p := a.pools[pool]
	if p == nil {
		return 0
	}
	n := 0
	for i := range p.fam {
		n += p.fam[i].held
	}
	return n
}

// Services returns the keys of the services holding at least one IP, sorted.
func (a *Allocator) Services() []string {
	keys := make([]string, 0, len(a.services))
	for k := range a.services {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Users returns the keys of the services holding ip, sorted.
func (a *Allocator) Users(ip netip.Addr) []string {
	st := a.ips[ip]
	if st == nil {
		return nil
	}
	keys := make([]string, len(st.holders))
	for i, h := range st.holders {
		keys[i] = h.svc.Key
	}
	return keys
}

// poolOf returns the pool whose ranges contain ip, or nil.
func (a *Allocator) poolOf(ip netip.Addr) *pool {
	i, found := slices.BinarySearchFunc(a.index, ip, func(r poolRange, ip netip.Addr) int {
		return r.First.Compare(ip)
	})
	if found {
		return a.index[i].pool
	}
	if i > 0 && a.index[i-1].Contains(ip) {
		return a.index[i-1].pool
	}
	return nil
}

// replace makes holdings the complete set of svc's holdings, returning the
// IPs nobody holds any more. The caller has checked everything: this cannot
// fail. Dropping the old holdings before adding the new ones keeps the
// sharing index right when svc's sharing key changed; IPs are only returned
// to their free set at the end, so a kept IP is never freed and re-taken.
func (a *Allocator) replace(svc Service, holdings []Holding) []netip.Addr {
	st := a.services[svc.Key]
	var old []Holding
	if st != nil {
		old = st.holdings
		for _, h := range old {
			a.detach(h.IP, st)
		}
	} else {
		if len(holdings) == 0 {
			return nil
		}
		st = &svcState{}
		a.services[svc.Key] = st
	}
	svc.Ports = slices.Clone(svc.Ports) // the caller may reuse its slice
	st.svc = svc
	st.holdings = holdings
	for _, h := range holdings {
		a.attach(h.IP, st)
	}
	var freed []netip.Addr
	for _, h := range old {
		if ips := a.ips[h.IP]; len(ips.holders) == 0 {
			a.unclaim(h.IP, ips)
			freed = append(freed, h.IP)
		}
	}
	if len(holdings) == 0 {
		delete(a.services, svc.Key)
	}
	return freed
}

// attach adds st as a holder of ip, claiming ip from its pool if it was
// free.
func (a *Allocator) attach(ip netip.Addr, st *svcState) {
	is := a.ips[ip]
	if is == nil {
		is = &ipState{pool: a.poolOf(ip)}
		a.ips[ip] = is
		a.claim(ip, is)
	}
	i, _ := slices.BinarySearchFunc(is.holders, st.svc.Key, func(h *svcState, k string) int {
		return strings.Compare(h.svc.Key, k)
	})
	is.holders = slices.Insert(is.holders, i, st)
	if k := st.svc.SharingKey; k != "" {
		m := a.sharing[k]
		if m == nil {
			m = map[netip.Addr]int{}
			a.sharing[k] = m
		}
		m[ip]++
	}
}

// detach removes st as a holder of ip; the IP stays claimed until unclaim.
func (a *Allocator) detach(ip netip.Addr, st *svcState) {
	is := a.ips[ip]
	if i := slices.Index(is.holders, st); i >= 0 {
		is.holders = slices.Delete(is.holders, i, i+1)
	}
	if k := st.svc.SharingKey; k != "" {
		m := a.sharing[k]
		if m[ip]--; m[ip] <= 0 {
			delete(m, ip)
			if len(m) == 0 {
				delete(a.sharing, k)
			}
		}
	}
}

// claim accounts a newly held (or newly attributed) ip to its pool and takes
// it out of the free set.
func (a *Allocator) claim(ip netip.Addr, is *ipState) {
	p := is.pool
	if p == nil {
		return
	}
	pf := p.family(FamilyOf(ip))
	pf.held++
	if !p.allocatable(ip) {
		return
	}
	if !pf.free.take(ip) {
		// Plans only pick free addresses, and a held address is never
		// in a free set; reaching this means the state is corrupt and any
		// further allocation could hand out an IP twice.
		panic(fmt.Sprintf("ipam: claiming %s in pool %q, but it is not free", ip, p.name))
	}
	pf.assigned++
}

// unclaim forgets ip, which nobody holds any more, and returns it to its
// pool's free set.
func (a *Allocator) unclaim(ip netip.Addr, is *ipState) {
	delete(a.ips, ip)
	p := is.pool
	if p == nil {
		return
	}
	pf := p.family(FamilyOf(ip))
	pf.held--
	if p.allocatable(ip) {
		pf.free.put(ip)
		pf.assigned--
	}
}
