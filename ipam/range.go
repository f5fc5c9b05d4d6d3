package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
)

// Range is an inclusive range of addresses of one family. Pools are made of
// ranges rather than prefixes because operators often own odd-sized blocks
// ("10.0.0.10-10.0.0.20") inside a shared subnet.
type Range struct {
	First, Last netip.Addr
}

// ParseRange parses a CIDR prefix ("10.0.0.0/24", "2001:db8::/64") or an
// inclusive range "first-last" (spaces around '-' allowed).
//
// A prefix with host bits set is rejected rather than silently masked: the
// operator probably typed the wrong thing, and guessing which range they meant
// would hand out addresses they may not own.
func ParseRange(s string) (Range, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return Range{}, errors.New("empty address range")
	}
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return Range{}, fmt.Errorf("invalid CIDR %q: %w", s, err)
		}
		if m := p.Masked(); m != p {
			return Range{}, fmt.Errorf("%s has host bits set; did you mean %s", s, m)
		}
		r := prefixRange(p)
		if err := r.check(); err != nil {
			return Range{}, fmt.Errorf("invalid CIDR %q: %w", s, err)
		}
		return r, nil
	}
	from, to, ok := strings.Cut(s, "-")
	if !ok {
		if ip, err := netip.ParseAddr(s); err == nil {
			return Range{}, fmt.Errorf("%q is a single address, not a range; write %s or %s-%s",
				s, netip.PrefixFrom(ip, ip.BitLen()), ip, ip)
		}
		return Range{}, fmt.Errorf("invalid address range %q: want a CIDR such as 10.0.0.0/24 or a range such as 10.0.0.10-10.0.0.20", s)
	}
	first, err := netip.ParseAddr(strings.TrimSpace(from))
	if err != nil {
		return Range{}, fmt.Errorf("invalid address range %q: first address: %w", s, err)
	}
	last, err := netip.ParseAddr(strings.TrimSpace(to))
	if err != nil {
		return Range{}, fmt.Errorf("invalid address range %q: last address: %w", s, err)
	}
	r := Range{First: first, Last: last}
	if err := r.check(); err != nil {
		return Range{}, fmt.Errorf("invalid address range %q: %w", s, err)
	}
	return r, nil
}

// MustParseRange is ParseRange for tests and constants; it panics on error.
func MustParseRange(s string) Range {
	r, err := ParseRange(s)
	if err != nil {
		panic(err)
	}
	return r
}

// check validates r. It is used both for parsed ranges and for Ranges built
// by callers directly, which SetPools must not trust.
func (r Range) check() error {
	if !r.First.IsValid() || !r.Last.IsValid() {
		return errors.New("missing first or last address")
	}
	for _, ip := range []netip.Addr{r.First, r.Last} {
		if ip.Zone() != "" {
			return fmt.Errorf("address %s has a zone; pools hold global addresses", ip)
		}
		if ip.Is4In6() {
			return fmt.Errorf("address %s is IPv4-mapped IPv6; write it as IPv4 (%s)", ip, ip.Unmap())
		}
	}
	if FamilyOf(r.First) != FamilyOf(r.Last) {
		return fmt.Errorf("mixes %s (%s) and %s (%s)", FamilyOf(r.First), r.First, FamilyOf(r.Last), r.Last)
	}
	if r.Last.Less(r.First) {
		return fmt.Errorf("first address %s is after last address %s", r.First, r.Last)
	}
	return nil
}

// Family returns the family of the range's addresses.
func (r Range) Family() Family { return FamilyOf(r.First) }

// Contains reports whether ip is inside r.
func (r Range) Contains(ip netip.Addr) bool {
	return FamilyOf(ip) == r.Family() && !ip.Less(r.First) && !r.Last.Less(ip)
}

// String returns the range as a CIDR when it is exactly one prefix, and as
// "first-last" otherwise, matching what ParseRange accepts.
func (r Range) String() string {
	if !r.First.IsValid() || !r.Last.IsValid() {
		return fmt.Sprintf("%s-%s", r.First, r.Last)
	}
	if FamilyOf(r.First) == FamilyOf(r.Last) {
		for bits := r.First.BitLen(); bits >= 0; bits-- {
			p := netip.PrefixFrom(r.First, bits)
			if p.Masked() != p {
				break // fewer bits would clear host bits of First
			}
			if prefixRange(p).Last == r.Last {
				return p.String()
			}
		}
	}
	return fmt.Sprintf("%s-%s", r.First, r.Last)
}

// prefixRange returns the addresses covered by the masked prefix p.
func prefixRange(p netip.Prefix) Range {
	first := p.Addr()
	host := uint(first.BitLen() - p.Bits())
	v := addrU128(first)
	switch {
	case host >= 128:
		v = u128Max
	case host >= 64:
		v = u128{hi: v.hi | (1<<(host-64) - 1), lo: ^uint64(0)}
	default:
		v.lo |= 1<<host - 1
	}
	return Range{First: first, Last: u128Addr(v, FamilyOf(first))}
}
