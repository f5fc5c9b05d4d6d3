package ipam

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

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
