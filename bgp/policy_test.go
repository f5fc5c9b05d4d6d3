package bgp

import (
	"maps"
	"net/netip"
	"reflect"
	"slices"
	"testing"
)

func TestPlanExport(t *testing.T) {
	pfx := netip.MustParsePrefix
	addr := netip.MustParseAddr
	peers := map[string]netip.Addr{"a": addr("198.18.20.1"), "b": addr("198.18.20.3"), "c": addr("2001:db8:20::1")}
	unnumbered := map[string]netip.Addr{"u": addr("fe80::1%eth1")}
	v4, v6 := addr("198.18.20.2"), addr("2001:db8:20::2")
	comm := Attrs{Communities: []uint32{1}}
	tests := []struct {
		name      string
		routes    []Route
		v4, v6    netip.Addr
		wantRIB   map[netip.Prefix]Attrs
		wantStmts []stmt
	}{{
		name:    "every peer alike: no statement",
		routes:  []Route{{Prefix: pfx("198.18.21.1/32"), Attrs: comm, Peers: []string{"a", "b", "c"}}},
		v4:      v4,
		wantRIB: map[netip.Prefix]Attrs{pfx("198.18.21.1/32"): comm},
		wantStmts: []stmt{
			{Family: 4, Neighbors: []netip.Addr{peers["c"]}, NextHop: v4},
		},
	}, {
		name:    "restricted prefix: reject the others",
		routes:  []Route{{Prefix: pfx("198.18.21.1/32"), Attrs: comm, Peers: []string{"a"}}},
		v4:      v4,
		wantRIB: map[netip.Prefix]Attrs{pfx("198.18.21.1/32"): comm},
		wantStmts: []stmt{
			{Family: 4, Neighbors: []netip.Addr{peers["c"]}, NextHop: v4},
			{Prefix: pfx("198.18.21.1/32"), Neighbors: []netip.Addr{peers["b"], peers["c"]}, Reject: true},
		},
	}, {
		name: "attributes per peer group: bare RIB path, one statement per non-empty group",
		routes: []Route{
			{Prefix: pfx("2001:db8:21::1/128"), Peers: []string{"c"}},
			{Prefix: pfx("2001:db8:21::1/128"), Attrs: comm, Peers: []string{"a", "unknown"}},
		},
		wantRIB: map[netip.Prefix]Attrs{pfx("2001:db8:21::1/128"): {}},
		wantStmts: []stmt{
			// No IPv6 address for the node: IPv6 routes stay off IPv4 sessions.
			{Family: 6, Neighbors: []netip.Addr{peers["a"], peers["b"]}, Reject: true},
			{Prefix: pfx("2001:db8:21::1/128"), Neighbors: []netip.Addr{peers["a"]}, Attrs: comm},
			{Prefix: pfx("2001:db8:21::1/128"), Neighbors: []netip.Addr{peers["b"]}, Reject: true},
		},
	}, {
		name:    "cross-family next hop for IPv6 over IPv4",
		routes:  []Route{{Prefix: pfx("2001:db8:21::1/128"), Peers: []string{"a", "b", "c"}}},
		v6:      v6,
		wantRIB: map[netip.Prefix]Attrs{pfx("2001:db8:21::1/128"): {}},
		wantStmts: []stmt{
			{Family: 6, Neighbors: []netip.Addr{peers["a"], peers["b"]}, NextHop: v6},
		},
	}, {
		name:    "unnumbered (link-local) sessions keep GoBGP's IPv6 next hop for IPv4 routes",
		routes:  []Route{{Prefix: pfx("198.18.21.1/32"), Peers: []string{"a", "b", "c", "u"}}},
		v4:      v4,
		wantRIB: map[netip.Prefix]Attrs{pfx("198.18.21.1/32"): {}},
		wantStmts: []stmt{
			{Family: 4, Neighbors: []netip.Addr{peers["c"]}, NextHop: v4},
		},
	}, {
		name:    "route without peers is not announced",
		routes:  []Route{{Prefix: pfx("198.18.21.1/32")}},
		wantRIB: map[netip.Prefix]Attrs{},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ps := maps.Clone(peers)
			if slices.ContainsFunc(tc.routes, func(r Route) bool { return slices.Contains(r.Peers, "u") }) {
				maps.Copy(ps, unnumbered)
			}
			got := planExport(tc.routes, ps, tc.v4, tc.v6)
			if !reflect.DeepEqual(got.rib, tc.wantRIB) {
				t.Errorf("rib %v, want %v", got.rib, tc.wantRIB)
			}
			if !reflect.DeepEqual(got.stmts, tc.wantStmts) {
				t.Errorf("statements\n%+v\nwant\n%+v", got.stmts, tc.wantStmts)
			}
		})
	}
}

func TestCheckRoutes(t *testing.T) {
	pfx := netip.MustParsePrefix
	for _, tc := range []struct {
		routes []Route
		ok     bool
	}{
		{[]Route{{Prefix: pfx("10.0.0.0/24"), Peers: []string{"a"}}, {Prefix: pfx("10.0.0.0/24"), Peers: []string{"b"}}}, true},
		{[]Route{{Prefix: pfx("10.0.0.0/24"), Peers: []string{"a"}}, {Prefix: pfx("10.0.0.0/24"), Peers: []string{"a"}}}, false},
		{[]Route{{Prefix: pfx("10.0.0.1/24")}}, false},
		{[]Route{{}}, false},
	} {
		if err := checkRoutes(tc.routes); (err == nil) != tc.ok {
			t.Errorf("%v: error %v, want ok=%v", tc.routes, err, tc.ok)
		}
	}
}

// TestAPIPolicyUnzoned: GoBGP matches neighbours by address alone, so an
// unnumbered session's zone must not reach its neighbour set (GoBGP
// refuses "fe80::1%eth1/128").
func TestAPIPolicyUnzoned(t *testing.T) {
	sets, _ := apiPolicy("p", []stmt{{Family: 4, Neighbors: []netip.Addr{netip.MustParseAddr("fe80::1%eth1")}, Reject: true}})
	if len(sets) == 0 || !slices.Equal(sets[0].List, []string{"fe80::1/128"}) {
		t.Fatalf("neighbour set %v, want [fe80::1/128]", sets)
	}
}
