package ipam

import (
	"fmt"
	"net/netip"
	"slices"
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
