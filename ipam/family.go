package ipam

import (
	"fmt"
	"net/netip"
)

// Family is an IP address family. The zero value is not a valid family so
// that a forgotten field is caught by validation instead of silently meaning
// IPv4.
type Family int

const (
	// FamilyV4 is IPv4.
	FamilyV4 Family = iota + 1
	// FamilyV6 is IPv6.
	FamilyV6
)

// numFamilies sizes the per-family arrays; index with Family.index.
const numFamilies = 2

// FamilyOf returns the family of ip. IPv4-mapped IPv6 addresses are IPv6:
// they are written as IPv6 and a Service status would carry them as such.
func FamilyOf(ip netip.Addr) Family {
	if ip.Is4() {
		return FamilyV4
	}
	return FamilyV6
}

// String returns "IPv4" or "IPv6", the spelling used in error messages and by
// Kubernetes' ipFamilies field.
func (f Family) String() string {
	switch f {
	case FamilyV4:
		return "IPv4"
	case FamilyV6:
		return "IPv6"
	default:
		return fmt.Sprintf("Family(%d)", int(f))
	}
}

func (f Family) valid() bool { return f == FamilyV4 || f == FamilyV6 }

// index maps a valid family to 0 or 1 for per-family arrays.
func (f Family) index() int { return int(f) - 1 }

// familyAt is the inverse of Family.index.
func familyAt(i int) Family { return Family(i + 1) }
