// Package config turns the whole set of ironlb objects into one immutable,
// validated Config. It is pure: no client, no clock, no I/O, so every rule
// that needs more than one object (overlapping pools, dangling references,
// conflicting advertisements) is decided here and unit-tested here; the
// controller only reports the Problems as conditions and Events.
package config

import (
	"fmt"
	"math"
	"net/netip"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/ipam"
)

// Kind names used in Problems, as kubectl spells them.
const (
	KindPool      = "IPAddressPool"
	KindL2Adv     = "L2Advertisement"
	KindBGPPeer   = "BGPPeer"
	KindBGPAdv    = "BGPAdvertisement"
	KindBFD       = "BFDProfile"
	KindCommunity = "Community"
)

// Objects is everything the parser looks at, as read from the API server.
type Objects struct {
	Pools             []v1beta1.IPAddressPool
	L2Advertisements  []v1beta1.L2Advertisement
	BGPPeers          []v1beta1.BGPPeer
	BGPAdvertisements []v1beta1.BGPAdvertisement
	BFDProfiles       []v1beta1.BFDProfile
	Communities       []v1beta1.Community
	// Established names the objects ("Kind/name") that were valid in the
	// previous parse. They win conflicts against newcomers regardless of
	// age: what works keeps working. (Creation timestamps have one-second
	// resolution, so age alone often ties.)
	Established map[string]bool
}

// Problem is one thing wrong with one object. Fatal problems keep the object
// out of the Config; the others are reported but the object still works,
// because tearing down a working announcement over, say, a reference to a
// pool that does not exist yet would turn a typo into an outage.
type Problem struct {
	Kind, Name string
	// Field is the JSON path inside the object, e.g. "spec.addresses[1]".
	Field   string
	Reason  string
	Message string
	Fatal   bool
}

func (p Problem) Error() string {
	return fmt.Sprintf("%s %q: %s: %s", p.Kind, p.Name, p.Field, p.Message)
}

// Pool is a validated IPAddressPool.
type Pool struct {
	Name          string
	Labels        labels.Set
	Ranges        []ipam.Range
	AutoAssign    bool
	AvoidBuggyIPs bool
	// Terminating pools keep the addresses they lent but lend no more.
	Terminating bool
	// Restricted pools only admit Services matched by serviceAllocation.
	Restricted         bool
	Priority           int32
	Namespaces         []string
	NamespaceSelectors []labels.Selector
	ServiceSelectors   []labels.Selector
}

// Admits tells whether the pool may give addresses to a Service in
// namespace ns (with labels nsLabels) carrying labels svcLabels.
func (p *Pool) Admits(ns string, nsLabels, svcLabels labels.Set) bool {
	if !p.Restricted {
		return true
	}
	nsOK := len(p.Namespaces) == 0 && len(p.NamespaceSelectors) == 0
	if slices.Contains(p.Namespaces, ns) || MatchesAny(p.NamespaceSelectors, nsLabels) {
		nsOK = true
	}
	svcOK := len(p.ServiceSelectors) == 0 || MatchesAny(p.ServiceSelectors, svcLabels)
	return nsOK && svcOK
}

// Contains tells whether ip is one of the pool's addresses.
func (p *Pool) Contains(ip netip.Addr) bool {
	for _, r := range p.Ranges {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// MatchesAny tells whether set matches at least one of sels.
func MatchesAny(sels []labels.Selector, set labels.Set) bool {
	for _, s := range sels {
		if s.Matches(set) {
			return true
		}
	}
	return false
}

// L2Advertisement is a validated L2Advertisement.
type L2Advertisement struct {
	Name             string
	Pools            map[string]bool // resolved from names and selectors; nil = every pool
	NodeSelectors    []labels.Selector
	Interfaces       []string
	ServiceSelectors []labels.Selector
}

// BGPPeer is a validated BGPPeer with defaults filled in.
type BGPPeer struct {
	Name            string
	MyASN, PeerASN  uint32
	Address         netip.Addr
	Port            uint16
	SourceAddress   netip.Addr // invalid = kernel's choice
	RouterID        netip.Addr // invalid = node's IPv4
	HoldTime        time.Duration
	KeepaliveTime   time.Duration
	ConnectTime     time.Duration
	EBGPMultiHop    bool
	NodeSelectors   []labels.Selector
	PasswordSecret  *v1beta1.SecretKeyRef
	BFD             *BFDProfile // nil = no BFD
	GracefulRestart bool
}

// BGPAdvertisement is a validated BGPAdvertisement.
type BGPAdvertisement struct {
	Name                string
	Pools               map[string]bool // nil = every pool
	ServiceSelectors    []labels.Selector
	NodeSelectors       []labels.Selector
	Peers               map[string]bool // nil = every peer
	AggregationLength   int
	AggregationLengthV6 int
	LocalPref           *uint32
	// Communities are resolved: "a:b" standard or "large:a:b:c".
	Communities []string
}

// BFDProfile is a validated BFDProfile with defaults filled in.
type BFDProfile struct {
	Name                              string
	ReceiveInterval, TransmitInterval time.Duration
	DetectMultiplier                  int
	PassiveMode                       bool
	MinimumTTL                        int
}

// Config is the validated configuration. It is never modified after Parse
// returns, so readers share it without locks.
type Config struct {
	Pools             map[string]*Pool
	L2Advertisements  []*L2Advertisement
	BGPPeers          map[string]*BGPPeer
	BGPAdvertisements []*BGPAdvertisement
	BFDProfiles       map[string]*BFDProfile
	// Valid names every object ("Kind/name") without a fatal problem; pass
	// it as the next parse's Objects.Established.
	Valid map[string]bool
}

// IPAMPools lists the pools in the allocator's terms, terminating pools
// included: their addresses stay accounted for until released.
func (c *Config) IPAMPools() []ipam.Pool {
	out := make([]ipam.Pool, 0, len(c.Pools))
	for _, name := range c.PoolNames() {
		p := c.Pools[name]
		out = append(out, ipam.Pool{Name: p.Name, Ranges: p.Ranges, AvoidBuggyIPs: p.AvoidBuggyIPs})
	}
	return out
}

// PoolNames returns the valid pools' names, sorted.
func (c *Config) PoolNames() []string {
	names := make([]string, 0, len(c.Pools))
	for n := range c.Pools {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// PoolOf returns the pool containing ip, or nil.
func (c *Config) PoolOf(ip netip.Addr) *Pool {
	for _, n := range c.PoolNames() {
		if c.Pools[n].Contains(ip) {
			return c.Pools[n]
		}
	}
	return nil
}

// Candidates lists, in the order to try them, the pools that may
// auto-assign to a Service: restricted pools admitting it by priority, then
// unrestricted pools, each group by name. Pools with autoAssign false and
// terminating pools are left out.
func (c *Config) Candidates(ns string, nsLabels, svcLabels labels.Set) []string {
	var restricted, open []*Pool
	for _, n := range c.PoolNames() {
		p := c.Pools[n]
		if !p.AutoAssign || p.Terminating || !p.Admits(ns, nsLabels, svcLabels) {
			continue
		}
		if p.Restricted {
			restricted = append(restricted, p)
		} else {
			open = append(open, p)
		}
	}
	sort.SliceStable(restricted, func(i, j int) bool { return restricted[i].Priority < restricted[j].Priority })
	out := make([]string, 0, len(restricted)+len(open))
	for _, p := range append(restricted, open...) {
		out = append(out, p.Name)
	}
	return out
}

// problems collects Problems for one Parse call.
type problems []Problem

func (ps *problems) add(fatal bool, kind, name, field, reason, format string, args ...any) {
	*ps = append(*ps, Problem{Kind: kind, Name: name, Field: field, Reason: reason, Message: fmt.Sprintf(format, args...), Fatal: fatal})
}

// Parse validates objs as a whole. It returns the Config made of every
// object without a fatal problem, and every problem found. It never fails
// as a whole: one bad object must not take the others down.
func Parse(objs Objects) (*Config, []Problem) {
	var ps problems
	cfg := &Config{
		Pools:       map[string]*Pool{},
		BGPPeers:    map[string]*BGPPeer{},
		BFDProfiles: map[string]*BFDProfile{},
	}
	parsePools(objs.Pools, objs.Established, cfg, &ps)
	parseBFD(objs.BFDProfiles, cfg, &ps)
	aliases := parseCommunities(objs.Communities, objs.Established, &ps)
	poolLabels := map[string]labels.Set{}
	for n, p := range cfg.Pools {
		poolLabels[n] = p.Labels
	}
	parseL2(objs.L2Advertisements, objs.Established, cfg, poolLabels, &ps)
	parsePeers(objs.BGPPeers, objs.Established, cfg, &ps)
	parseBGPAdvs(objs.BGPAdvertisements, objs.Established, cfg, poolLabels, aliases, &ps)
	fatal := map[string]bool{}
	for _, p := range ps {
		if p.Fatal {
			fatal[p.Kind+"/"+p.Name] = true
		}
	}
	cfg.Valid = map[string]bool{}
	objs.Each(func(kind string, o Object) {
		if k := kind + "/" + o.GetName(); !fatal[k] {
			cfg.Valid[k] = true
		}
	})
	return cfg, ps
}

// Object is any ironlb configuration object.
type Object interface {
	metav1.Object
	runtime.Object
}

// Each calls fn with every object and its kind.
func (o *Objects) Each(fn func(kind string, obj Object)) {
	for i := range o.Pools {
		fn(KindPool, &o.Pools[i])
	}
	for i := range o.L2Advertisements {
		fn(KindL2Adv, &o.L2Advertisements[i])
	}
	for i := range o.BGPPeers {
		fn(KindBGPPeer, &o.BGPPeers[i])
	}
	for i := range o.BGPAdvertisements {
		fn(KindBGPAdv, &o.BGPAdvertisements[i])
	}
	for i := range o.BFDProfiles {
		fn(KindBFD, &o.BFDProfiles[i])
	}
	for i := range o.Communities {
		fn(KindCommunity, &o.Communities[i])
	}
}

// byAge sorts objects established first, then oldest first (name breaks
// ties), so that when two objects conflict the one that was there first
// keeps working.
func byAge[T any](items []T, kind string, established map[string]bool, meta func(*T) *metav1.ObjectMeta) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	sort.SliceStable(out, func(i, j int) bool {
		a, b := meta(out[i]), meta(out[j])
		if ea, eb := established[kind+"/"+a.Name], established[kind+"/"+b.Name]; ea != eb {
			return ea
		}
		if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
			return a.CreationTimestamp.Before(&b.CreationTimestamp)
		}
		return a.Name < b.Name
	})
	return out
}

func selectors(kind, name, field string, in []metav1.LabelSelector, ps *problems) ([]labels.Selector, bool) {
	out := make([]labels.Selector, 0, len(in))
	ok := true
	for i := range in {
		s, err := metav1.LabelSelectorAsSelector(&in[i])
		if err != nil {
			ps.add(true, kind, name, fmt.Sprintf("%s[%d]", field, i), v1beta1.ReasonInvalid, "invalid label selector: %v", err)
			ok = false
			continue
		}
		out = append(out, s)
	}
	return out, ok
}

func parsePools(items []v1beta1.IPAddressPool, est map[string]bool, cfg *Config, ps *problems) {
	type accepted struct {
		name   string
		ranges []ipam.Range
	}
	var taken []accepted
	for _, obj := range byAge(items, KindPool, est, func(p *v1beta1.IPAddressPool) *metav1.ObjectMeta { return &p.ObjectMeta }) {
		name := obj.Name
		ok := true
		if len(obj.Spec.Addresses) == 0 {
			// Admission refuses this too; an empty pool must not look usable.
			ps.add(true, KindPool, name, "spec.addresses", v1beta1.ReasonInvalid, "a pool needs at least one address range")
			ok = false
		}
		var ranges []ipam.Range
		for i, a := range obj.Spec.Addresses {
			field := fmt.Sprintf("spec.addresses[%d]", i)
			r, err := ipam.ParseRange(string(a))
			if err != nil {
				ps.add(true, KindPool, name, field, v1beta1.ReasonInvalid, "%v", err)
				ok = false
				continue
			}
			for j, prev := range ranges {
				if overlaps(r, prev) {
					ps.add(true, KindPool, name, field, v1beta1.ReasonOverlap, "%s overlaps %s (spec.addresses[%d]) of the same pool", r, prev, j)
					ok = false
				}
			}
			for _, other := range taken {
				for _, or := range other.ranges {
					if overlaps(r, or) {
						ps.add(true, KindPool, name, field, v1beta1.ReasonOverlap, "%s overlaps %s of IPAddressPool %q", r, or, other.name)
						ok = false
					}
				}
			}
			ranges = append(ranges, r)
		}
		p := &Pool{
			Name:          name,
			Labels:        labels.Set(obj.Labels),
			Ranges:        ranges,
			AutoAssign:    obj.Spec.AutoAssign == nil || *obj.Spec.AutoAssign,
			AvoidBuggyIPs: obj.Spec.AvoidBuggyIPs,
			Terminating:   obj.DeletionTimestamp != nil,
		}
		if sa := obj.Spec.ServiceAllocation; sa != nil {
			p.Restricted = true
			p.Priority = sa.Priority
			p.Namespaces = slices.Clone(sa.Namespaces)
			var ok1, ok2 bool
			p.NamespaceSelectors, ok1 = selectors(KindPool, name, "spec.serviceAllocation.namespaceSelectors", sa.NamespaceSelectors, ps)
			p.ServiceSelectors, ok2 = selectors(KindPool, name, "spec.serviceAllocation.serviceSelectors", sa.ServiceSelectors, ps)
			ok = ok && ok1 && ok2
		}
		if !ok {
			continue
		}
		taken = append(taken, accepted{name, ranges})
		cfg.Pools[name] = p
	}
}

func parseBFD(items []v1beta1.BFDProfile, cfg *Config, ps *problems) {
	for i := range items {
		obj := &items[i]
		p := &BFDProfile{
			Name:             obj.Name,
			ReceiveInterval:  time.Duration(deref(obj.Spec.ReceiveInterval, 300)) * time.Millisecond,
			TransmitInterval: time.Duration(deref(obj.Spec.TransmitInterval, 300)) * time.Millisecond,
			DetectMultiplier: int(deref(obj.Spec.DetectMultiplier, 3)),
			PassiveMode:      obj.Spec.PassiveMode,
			MinimumTTL:       int(deref(obj.Spec.MinimumTTL, 254)),
		}
		ok := true
		check := func(field string, v, lo, hi int64) {
			if v < lo || v > hi {
				ps.add(true, KindBFD, obj.Name, field, v1beta1.ReasonInvalid, "%d is outside %d..%d", v, lo, hi)
				ok = false
			}
		}
		check("spec.receiveInterval", p.ReceiveInterval.Milliseconds(), 10, 60000)
		check("spec.transmitInterval", p.TransmitInterval.Milliseconds(), 10, 60000)
		check("spec.detectMultiplier", int64(p.DetectMultiplier), 2, 255)
		check("spec.minimumTtl", int64(p.MinimumTTL), 1, 254)
		if ok {
			cfg.BFDProfiles[obj.Name] = p
		}
	}
}

func deref[T any](p *T, def T) T {
	if p == nil {
		return def
	}
	return *p
}

// parseCommunities returns alias → resolved value.
func parseCommunities(items []v1beta1.Community, est map[string]bool, ps *problems) map[string]string {
	out := map[string]string{}
	owner := map[string]string{}
	for _, obj := range byAge(items, KindCommunity, est, func(c *v1beta1.Community) *metav1.ObjectMeta { return &c.ObjectMeta }) {
		for i, a := range obj.Spec.Communities {
			field := fmt.Sprintf("spec.communities[%d]", i)
			v, err := ParseCommunity(string(a.Value))
			if err != nil {
				ps.add(true, KindCommunity, obj.Name, field+".value", v1beta1.ReasonInvalid, "%v", err)
				continue
			}
			if prev, dup := owner[a.Name]; dup {
				ps.add(true, KindCommunity, obj.Name, field+".name", v1beta1.ReasonDuplicateKey, "alias %q is already defined by Community %q", a.Name, prev)
				continue
			}
			owner[a.Name] = obj.Name
			out[a.Name] = v
		}
	}
	return out
}

// ParseCommunity checks a literal community ("a:b" with 16-bit parts, or
// "large:a:b:c" with 32-bit parts) and returns it in canonical form.
func ParseCommunity(s string) (string, error) {
	parts := strings.Split(s, ":")
	bits := 16
	if parts[0] == "large" {
		parts, bits = parts[1:], 32
		if len(parts) != 3 {
			return "", fmt.Errorf("large community %q must be large:A:B:C", s)
		}
	} else if len(parts) != 2 {
		return "", fmt.Errorf("community %q must be A:B (or large:A:B:C)", s)
	}
	for i, p := range parts {
		v, err := strconv.ParseUint(p, 10, bits)
		if err != nil {
			return "", fmt.Errorf("community %q: part %q is not a number of at most %d bits", s, p, bits)
		}
		parts[i] = strconv.FormatUint(v, 10)
	}
	if bits == 32 {
		return "large:" + strings.Join(parts, ":"), nil
	}
	return strings.Join(parts, ":"), nil
}

// resolvePools turns names and selectors into a set of pool names. An empty
// selection means every pool (nil). Unknown names are reported, not fatal:
// the pool may be created later.
func resolvePools(kind, name string, names []v1beta1.PoolName, sels []metav1.LabelSelector, cfg *Config, poolLabels map[string]labels.Set, ps *problems) (map[string]bool, bool) {
	if len(names) == 0 && len(sels) == 0 {
		return nil, true
	}
	out := map[string]bool{}
	for i, n := range names {
		if _, ok := cfg.Pools[string(n)]; !ok {
			ps.add(false, kind, name, fmt.Sprintf("spec.ipAddressPools[%d]", i), v1beta1.ReasonUnknownRef, "IPAddressPool %q does not exist or is invalid", n)
		}
		out[string(n)] = true
	}
	parsed, ok := selectors(kind, name, "spec.ipAddressPoolSelectors", sels, ps)
	for pool, l := range poolLabels {
		if MatchesAny(parsed, l) {
			out[pool] = true
		}
	}
	return out, ok
}

func parseL2(items []v1beta1.L2Advertisement, est map[string]bool, cfg *Config, poolLabels map[string]labels.Set, ps *problems) {
	for _, obj := range byAge(items, KindL2Adv, est, func(a *v1beta1.L2Advertisement) *metav1.ObjectMeta { return &a.ObjectMeta }) {
		pools, ok1 := resolvePools(KindL2Adv, obj.Name, obj.Spec.IPAddressPools, obj.Spec.IPAddressPoolSelectors, cfg, poolLabels, ps)
		nodes, ok2 := selectors(KindL2Adv, obj.Name, "spec.nodeSelectors", obj.Spec.NodeSelectors, ps)
		svcs, ok3 := selectors(KindL2Adv, obj.Name, "spec.serviceSelectors", obj.Spec.ServiceSelectors, ps)
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		cfg.L2Advertisements = append(cfg.L2Advertisements, &L2Advertisement{
			Name: obj.Name, Pools: pools, NodeSelectors: nodes, Interfaces: slices.Clone(obj.Spec.Interfaces), ServiceSelectors: svcs,
		})
	}
}

func parsePeers(items []v1beta1.BGPPeer, est map[string]bool, cfg *Config, ps *problems) {
	type endpoint struct {
		addr netip.Addr
		port uint16
	}
	seen := map[endpoint]string{}
	for _, obj := range byAge(items, KindBGPPeer, est, func(p *v1beta1.BGPPeer) *metav1.ObjectMeta { return &p.ObjectMeta }) {
		name, s := obj.Name, &obj.Spec
		ok := true
		bad := func(field, format string, args ...any) {
			ps.add(true, KindBGPPeer, name, field, v1beta1.ReasonInvalid, format, args...)
			ok = false
		}
		p := &BGPPeer{
			Name: name, MyASN: uint32(s.MyASN), PeerASN: uint32(s.PeerASN), Port: uint16(deref(s.PeerPort, 179)),
			HoldTime: 90 * time.Second, ConnectTime: 10 * time.Second,
			EBGPMultiHop: s.EBGPMultiHop, PasswordSecret: s.PasswordSecret, GracefulRestart: s.GracefulRestart,
		}
		if s.MyASN < 1 || s.MyASN > math.MaxUint32 {
			bad("spec.myASN", "%d is outside 1..4294967295", s.MyASN)
		}
		if s.PeerASN < 1 || s.PeerASN > math.MaxUint32 {
			bad("spec.peerASN", "%d is outside 1..4294967295", s.PeerASN)
		}
		if pp := deref(s.PeerPort, 179); pp < 1 || pp > 65535 {
			bad("spec.peerPort", "%d is outside 1..65535", pp)
		}
		var err error
		if p.Address, err = netip.ParseAddr(string(s.PeerAddress)); err != nil {
			bad("spec.peerAddress", "%q is not an IP address", s.PeerAddress)
		}
		if s.SourceAddress != "" {
			if p.SourceAddress, err = netip.ParseAddr(string(s.SourceAddress)); err != nil {
				bad("spec.sourceAddress", "%q is not an IP address", s.SourceAddress)
			} else if p.Address.IsValid() && p.SourceAddress.Is4() != p.Address.Is4() {
				bad("spec.sourceAddress", "%s and peerAddress %s are of different IP families", p.SourceAddress, p.Address)
			}
		}
		if s.RouterID != "" {
			if p.RouterID, err = netip.ParseAddr(s.RouterID); err != nil || !p.RouterID.Is4() {
				bad("spec.routerID", "%q is not an IPv4 address", s.RouterID)
			}
		}
		if s.HoldTime != nil {
			p.HoldTime = s.HoldTime.Duration
			if p.HoldTime != 0 && (p.HoldTime < 3*time.Second || p.HoldTime > 65535*time.Second) {
				bad("spec.holdTime", "%s must be 0 or between 3s and 65535s", p.HoldTime)
			}
		}
		p.KeepaliveTime = p.HoldTime / 3
		if s.KeepaliveTime != nil {
			p.KeepaliveTime = s.KeepaliveTime.Duration
			if p.KeepaliveTime < time.Second || (p.HoldTime != 0 && p.KeepaliveTime >= p.HoldTime) {
				bad("spec.keepaliveTime", "%s must be at least 1s and shorter than holdTime %s", p.KeepaliveTime, p.HoldTime)
			}
		}
		if s.ConnectTime != nil {
			p.ConnectTime = s.ConnectTime.Duration
			if p.ConnectTime < time.Second || p.ConnectTime > 65535*time.Second {
				bad("spec.connectTime", "%s must be between 1s and 65535s", p.ConnectTime)
			}
		}
		if s.BFDProfile != "" {
			if b, found := cfg.BFDProfiles[string(s.BFDProfile)]; found {
				p.BFD = b
			} else {
				ps.add(false, KindBGPPeer, name, "spec.bfdProfile", v1beta1.ReasonUnknownRef, "BFDProfile %q does not exist or is invalid; the session runs without BFD", s.BFDProfile)
			}
		}
		var selOK bool
		p.NodeSelectors, selOK = selectors(KindBGPPeer, name, "spec.nodeSelectors", s.NodeSelectors, ps)
		ok = ok && selOK
		if ok {
			key := endpoint{p.Address, p.Port}
			if prev, dup := seen[key]; dup {
				ps.add(true, KindBGPPeer, name, "spec.peerAddress", v1beta1.ReasonConflict, "BGPPeer %q already peers with %s port %d", prev, p.Address, p.Port)
				continue
			}
			seen[key] = name
			cfg.BGPPeers[name] = p
		}
	}
}

func parseBGPAdvs(items []v1beta1.BGPAdvertisement, est map[string]bool, cfg *Config, poolLabels map[string]labels.Set, aliases map[string]string, ps *problems) {
	// Per pool, the first advertisement that set localPref / aggregation
	// wins; a later one that disagrees is the conflict.
	type claim struct {
		by    string
		value string
	}
	claims := map[string]claim{}
	for _, obj := range byAge(items, KindBGPAdv, est, func(a *v1beta1.BGPAdvertisement) *metav1.ObjectMeta { return &a.ObjectMeta }) {
		name, s := obj.Name, &obj.Spec
		pools, ok := resolvePools(KindBGPAdv, name, s.IPAddressPools, s.IPAddressPoolSelectors, cfg, poolLabels, ps)
		a := &BGPAdvertisement{
			Name: name, Pools: pools,
			AggregationLength:   int(deref(s.AggregationLength, 32)),
			AggregationLengthV6: int(deref(s.AggregationLengthV6, 128)),
		}
		bad := func(field, reason, format string, args ...any) {
			ps.add(true, KindBGPAdv, name, field, reason, format, args...)
			ok = false
		}
		if lp := s.LocalPref; lp != nil {
			if *lp < 0 || *lp > math.MaxUint32 {
				bad("spec.localPref", v1beta1.ReasonInvalid, "%d is outside 0..4294967295", *lp)
			} else {
				v := uint32(*lp)
				a.LocalPref = &v
			}
		}
		if a.AggregationLength < 0 || a.AggregationLength > 32 {
			bad("spec.aggregationLength", v1beta1.ReasonInvalid, "%d is outside 0..32", a.AggregationLength)
		}
		if a.AggregationLengthV6 < 0 || a.AggregationLengthV6 > 128 {
			bad("spec.aggregationLengthV6", v1beta1.ReasonInvalid, "%d is outside 0..128", a.AggregationLengthV6)
		}
		var selOK1, selOK2 bool
		a.ServiceSelectors, selOK1 = selectors(KindBGPAdv, name, "spec.serviceSelectors", s.ServiceSelectors, ps)
		a.NodeSelectors, selOK2 = selectors(KindBGPAdv, name, "spec.nodeSelectors", s.NodeSelectors, ps)
		ok = ok && selOK1 && selOK2
		if len(s.Peers) > 0 {
			a.Peers = map[string]bool{}
			for i, p := range s.Peers {
				if _, found := cfg.BGPPeers[string(p)]; !found {
					ps.add(false, KindBGPAdv, name, fmt.Sprintf("spec.peers[%d]", i), v1beta1.ReasonUnknownRef, "BGPPeer %q does not exist or is invalid", p)
				}
				a.Peers[string(p)] = true
			}
		}
		for i, c := range s.Communities {
			field := fmt.Sprintf("spec.communities[%d]", i)
			if v, alias := aliases[string(c)]; alias {
				a.Communities = append(a.Communities, v)
				continue
			}
			if !strings.Contains(string(c), ":") {
				bad(field, v1beta1.ReasonUnknownRef, "community alias %q is not defined by any Community object", c)
				continue
			}
			v, err := ParseCommunity(string(c))
			if err != nil {
				bad(field, v1beta1.ReasonInvalid, "%v", err)
				continue
			}
			a.Communities = append(a.Communities, v)
		}
		if !ok {
			continue
		}
		// Aggregation must not announce addresses outside the pool, and
		// advertisements of one pool must agree on it and on localPref.
		lp := "none"
		if a.LocalPref != nil {
			lp = strconv.FormatUint(uint64(*a.LocalPref), 10)
		}
		want := fmt.Sprintf("aggregationLength %d, aggregationLengthV6 %d, localPref %s", a.AggregationLength, a.AggregationLengthV6, lp)
		for _, pn := range sortedPools(a.Pools, cfg) {
			pool := cfg.Pools[pn]
			for _, r := range pool.Ranges {
				l := a.AggregationLength
				if r.First.Is6() {
					l = a.AggregationLengthV6
				}
				if !alignedTo(r, l) {
					bad("spec.aggregationLength", v1beta1.ReasonInvalid, "aggregation /%d of %s of IPAddressPool %q would announce addresses outside the pool", l, r, pn)
				}
			}
			if prev, found := claims[pn]; found && prev.value != want {
				bad("spec", v1beta1.ReasonConflict, "IPAddressPool %q is advertised by BGPAdvertisement %q with %s; this one asks %s", pn, prev.by, prev.value, want)
			}
		}
		if !ok {
			continue
		}
		for _, pn := range sortedPools(a.Pools, cfg) {
			if _, found := claims[pn]; !found {
				claims[pn] = claim{name, want}
			}
		}
		cfg.BGPAdvertisements = append(cfg.BGPAdvertisements, a)
	}
}

// sortedPools lists the existing pools of a selection (nil = all), sorted.
func sortedPools(sel map[string]bool, cfg *Config) []string {
	var out []string
	for _, n := range cfg.PoolNames() {
		if sel == nil || sel[n] {
			out = append(out, n)
		}
	}
	return out
}

func overlaps(a, b ipam.Range) bool {
	return a.First.Is4() == b.First.Is4() && a.First.Compare(b.Last) <= 0 && b.First.Compare(a.Last) <= 0
}

// alignedTo tells whether r is made of whole /bits blocks, so that
// announcing each address aggregated to /bits covers nothing outside r.
func alignedTo(r ipam.Range, bits int) bool {
	start, err := r.First.Prefix(bits)
	if err != nil || start.Addr() != r.First {
		return false
	}
	next := r.Last.Next()
	if !next.IsValid() {
		return true
	}
	end, err := next.Prefix(bits)
	return err == nil && end.Addr() == next
}
