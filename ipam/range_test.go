package ipam

import (
	"math"
	"strings"
	"testing"
)

func TestParseRange(t *testing.T) {
	tests := []struct {
		in          string
		first, last string
		str         string // Range.String(), if different from in
		err         string // substring of the error
	}{
		{in: "10.0.0.0/24", first: "10.0.0.0", last: "10.0.0.255"},
		{in: "10.0.0.5/32", first: "10.0.0.5", last: "10.0.0.5"},
		{in: "0.0.0.0/0", first: "0.0.0.0", last: "255.255.255.255"},
		{in: "192.168.0.0/15", first: "192.168.0.0", last: "192.169.255.255"},
		{in: " 10.0.0.0/30 ", first: "10.0.0.0", last: "10.0.0.3", str: "10.0.0.0/30"},
		{in: "2001:db8::/64", first: "2001:db8::", last: "2001:db8::ffff:ffff:ffff:ffff"},
		{in: "2001:db8::/127", first: "2001:db8::", last: "2001:db8::1"},
		{in: "2001:db8::/32", first: "2001:db8::", last: "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"},
		{in: "::/0", first: "::", last: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"},
		{in: "10.0.0.10-10.0.0.20", first: "10.0.0.10", last: "10.0.0.20"},
		{in: "10.0.0.10 - 10.0.0.20", first: "10.0.0.10", last: "10.0.0.20", str: "10.0.0.10-10.0.0.20"},
		{in: "10.0.0.0-10.0.0.255", first: "10.0.0.0", last: "10.0.0.255", str: "10.0.0.0/24"},
		{in: "10.0.0.7-10.0.0.7", first: "10.0.0.7", last: "10.0.0.7", str: "10.0.0.7/32"},
		{in: "2001:db8::1-2001:db8::ff", first: "2001:db8::1", last: "2001:db8::ff"},

		{in: "10.0.0.1/24", err: "10.0.0.1/24 has host bits set; did you mean 10.0.0.0/24"},
		{in: "2001:db8::1/64", err: "2001:db8::1/64 has host bits set; did you mean 2001:db8::/64"},
		{in: "10.0.0.0/33", err: `invalid CIDR "10.0.0.0/33"`},
		{in: "10.0.0.20-10.0.0.10", err: "first address 10.0.0.20 is after last address 10.0.0.10"},
		{in: "10.0.0.1-2001:db8::1", err: "mixes IPv4 (10.0.0.1) and IPv6 (2001:db8::1)"},
		{in: "10.0.0.1-", err: "last address"},
		{in: "-10.0.0.1", err: "first address"},
		{in: "banana", err: "want a CIDR such as"},
		{in: "", err: "empty address range"},
		{in: "10.0.0.1", err: "single address, not a range; write 10.0.0.1/32 or 10.0.0.1-10.0.0.1"},
		{in: "fe80::1%eth0-fe80::2%eth0", err: "has a zone"},
		{in: "::ffff:10.0.0.0/120", err: "IPv4-mapped"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			r, err := ParseRange(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("ParseRange(%q) = %v, %v; want error containing %q", tt.in, r, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseRange(%q): %v", tt.in, err)
			}
			if r.First != ip(tt.first) || r.Last != ip(tt.last) {
				t.Fatalf("ParseRange(%q) = %s..%s, want %s..%s", tt.in, r.First, r.Last, tt.first, tt.last)
			}
			wantStr := tt.str
			if wantStr == "" {
				wantStr = tt.in
			}
			if r.String() != wantStr {
				t.Errorf("String() = %q, want %q", r.String(), wantStr)
			}
			// String round-trips.
			if r2, err := ParseRange(r.String()); err != nil || r2 != r {
				t.Errorf("ParseRange(String()) = %v, %v; want %v", r2, err, r)
			}
		})
	}
}

func TestRangeContains(t *testing.T) {
	r := MustParseRange("10.0.0.10-10.0.0.20")
	for s, want := range map[string]bool{
		"10.0.0.9": false, "10.0.0.10": true, "10.0.0.15": true, "10.0.0.20": true, "10.0.0.21": false,
		"::ffff:10.0.0.15": false, "2001:db8::": false,
	} {
		if got := r.Contains(ip(s)); got != want {
			t.Errorf("Contains(%s) = %v, want %v", s, got, want)
		}
	}
}

func TestFamily(t *testing.T) {
	if FamilyV4.String() != "IPv4" || FamilyV6.String() != "IPv6" || Family(0).String() != "Family(0)" {
		t.Errorf("bad String: %v %v %v", FamilyV4, FamilyV6, Family(0))
	}
	if FamilyOf(ip("10.0.0.1")) != FamilyV4 || FamilyOf(ip("2001:db8::1")) != FamilyV6 ||
		FamilyOf(ip("::ffff:10.0.0.1")) != FamilyV6 {
		t.Errorf("bad FamilyOf")
	}
}

func TestU128(t *testing.T) {
	tests := []struct {
		first, last string
		want        u128
	}{
		{"10.0.0.0", "10.0.0.255", u128From(256)},
		{"0.0.0.0", "255.255.255.255", u128From(1 << 32)},
		{"2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", u128{hi: 1}},
		{"::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", u128Max},
		{"2001:db8::5", "2001:db8::5", u128From(1)},
	}
	for _, tt := range tests {
		if got := rangeSize(ip(tt.first), ip(tt.last)); got != tt.want {
			t.Errorf("rangeSize(%s, %s) = %v, want %v", tt.first, tt.last, got, tt.want)
		}
	}
	if got := (u128{hi: 1}).uint64Sat(); got != math.MaxUint64 {
		t.Errorf("2^64 saturates to %d", got)
	}
	if got := (u128{hi: 1}).sub(u128From(1)); got != u128From(math.MaxUint64) {
		t.Errorf("2^64-1 = %v", got)
	}
	if got := u128Max.addSat(u128From(1)); got != u128Max {
		t.Errorf("max+1 = %v", got)
	}
	if got := (u128{lo: math.MaxUint64}).addSat(u128From(1)); got != (u128{hi: 1}) {
		t.Errorf("carry: %v", got)
	}
	for _, s := range []string{"10.1.2.3", "2001:db8::1:2:3", "::", "255.255.255.255"} {
		a := ip(s)
		if got := u128Addr(addrU128(a), FamilyOf(a)); got != a {
			t.Errorf("round trip %s = %s", a, got)
		}
	}
}

func TestBuggyIn(t *testing.T) {
	tests := []struct {
		first, last string
		want        uint64
	}{
		{"10.0.0.0", "10.0.0.255", 2},
		{"10.0.0.1", "10.0.0.254", 0},
		{"10.0.0.255", "10.0.1.0", 2},
		{"0.0.0.0", "0.0.0.0", 1},
		{"0.0.0.0", "255.255.255.255", 2 << 24},
		{"10.0.0.0", "10.0.255.255", 512},
	}
	for _, tt := range tests {
		if got := buggyIn(ip(tt.first), ip(tt.last)); got != tt.want {
			t.Errorf("buggyIn(%s, %s) = %d, want %d", tt.first, tt.last, got, tt.want)
		}
	}
	// Brute force on a window crossing several /24 boundaries.
	base := ip("10.0.0.250")
	for i := 0; i < 600; i += 7 {
		f := base
		for range i {
			f = f.Next()
		}
		l := f
		var n uint64
		for j := 0; j < 300; j++ {
			if isBuggyIPv4(l) {
				n++
			}
			if got := buggyIn(f, l); got != n {
				t.Fatalf("buggyIn(%s, %s) = %d, want %d", f, l, got, n)
			}
			l = l.Next()
		}
	}
}
