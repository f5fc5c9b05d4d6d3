package ipam

import (
	"encoding/binary"
	"math"
	"net/netip"
)

// u128 is an unsigned 128-bit integer. Address arithmetic on IPv6 needs it:
// a single /64 already has 2^64 addresses, one more than uint64 can count.
type u128 struct{ hi, lo uint64 }

var u128Max = u128{math.MaxUint64, math.MaxUint64}

func u128From(v uint64) u128 { return u128{lo: v} }

// addrU128 returns ip as a number. IPv4 addresses map to 0..2^32-1; callers
// never mix families in one computation.
func addrU128(ip netip.Addr) u128 {
	if ip.Is4() {
		b := ip.As4()
		return u128{lo: uint64(binary.BigEndian.Uint32(b[:]))}
	}
	b := ip.As16()
	return u128{hi: binary.BigEndian.Uint64(b[:8]), lo: binary.BigEndian.Uint64(b[8:])}
}

// u128Addr is the inverse of addrU128 for family f.
func u128Addr(v u128, f Family) netip.Addr {
	if f == FamilyV4 {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], uint32(v.lo))
		return netip.AddrFrom4(b)
	}
	var b [16]byte
	binary.BigEndian.PutUint64(b[:8], v.hi)
	binary.BigEndian.PutUint64(b[8:], v.lo)
	return netip.AddrFrom16(b)
}

func (a u128) less(b u128) bool { return a.hi < b.hi || (a.hi == b.hi && a.lo < b.lo) }

// sub returns a-b; callers guarantee a >= b.
func (a u128) sub(b u128) u128 {
	lo := a.lo - b.lo
	borrow := uint64(0)
	if a.lo < b.lo {
		borrow = 1
	}
	return u128{hi: a.hi - b.hi - borrow, lo: lo}
}

// addSat returns a+b, saturating at 2^128-1 (only reachable for ::/0).
func (a u128) addSat(b u128) u128 {
	lo := a.lo + b.lo
	carry := uint64(0)
	if lo < a.lo {
		carry = 1
	}
	hi := a.hi + b.hi + carry
	if hi < a.hi || (carry == 1 && hi == a.hi) {
		return u128Max
	}
	return u128{hi: hi, lo: lo}
}

// subSat returns a-b, or 0 if b > a.
func (a u128) subSat(b u128) u128 {
	if a.less(b) {
		return u128{}
	}
	return a.sub(b)
}

// uint64Sat returns a as a uint64, saturating at math.MaxUint64: usage
// figures are reported as uint64 and "more than you will ever use" is the
// honest answer for anything larger.
func (a u128) uint64Sat() uint64 {
	if a.hi != 0 {
		return math.MaxUint64
	}
	return a.lo
}

// rangeSize returns the number of addresses in [first, last], saturating.
func rangeSize(first, last netip.Addr) u128 {
	d := addrU128(last).sub(addrU128(first))
	return d.addSat(u128From(1))
}

// inc returns a+1, wrapping.
func (a u128) inc() u128 {
	lo := a.lo + 1
	hi := a.hi
	if lo == 0 {
		hi++
	}
	return u128{hi: hi, lo: lo}
}

// dec returns a-1, wrapping.
func (a u128) dec() u128 {
	hi := a.hi
	if a.lo == 0 {
		hi--
	}
	return u128{hi: hi, lo: a.lo - 1}
}
