package announce

import (
	"fmt"
	"hash/fnv"
	"math"
	"net/netip"
	"slices"
	"testing"
)

func healthy(names ...string) []Node {
	out := make([]Node, len(names))
	for i, n := range names {
		out[i] = Node{Name: n, Ready: true, SpeakerAlive: true}
	}
	return out
}

func TestEligible(t *testing.T) {
	nodes := healthy("a", "b", "c", "d", "e", "f")
	nodes[1].Ready = false
	nodes[2].SpeakerAlive = false
	nodes[3].Excluded = true
	nodes[4].NetworkUnavailable = true
	tests := []struct {
		name  string
		nodes []Node
		match func(Node) bool
		local func(string) bool
		want  []string
	}{
		{"health filters", nodes, nil, nil, []string{"a", "f"}},
		{"selector", nodes, func(n Node) bool { return n.Name == "f" }, nil, []string{"f"}},
		{"local endpoints", nodes, nil, func(n string) bool { return n == "a" }, []string{"a"}},
		{"no local endpoint anywhere", nodes, nil, func(string) bool { return false }, nil},
		{"cordoned avoided", func() []Node { n := healthy("x", "y"); n[0].Unschedulable = true; return n }(), nil, nil, []string{"y"}},
		{"all cordoned still serve", func() []Node { n := healthy("x", "y"); n[0].Unschedulable = true; n[1].Unschedulable = true; return n }(), nil, nil, []string{"x", "y"}},
		{"order independent", healthy("c", "a", "b"), nil, nil, []string{"a", "b", "c"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Eligible(tt.nodes, tt.match, tt.local); !slices.Equal(got, tt.want) {
				t.Fatalf("got %v want %v", got, tt.want)
			}
		})
	}
}

func addrs(n int) []netip.Addr {
	out := make([]netip.Addr, n)
	ip := netip.MustParseAddr("198.18.0.0")
	for i := range out {
		out[i] = ip
		ip = ip.Next()
	}
	return out
}

func TestOwnerDeterministicAndOrderFree(t *testing.T) {
	if _, ok := Owner(netip.MustParseAddr("198.18.0.1"), nil); ok {
		t.Fatal("owner without nodes")
	}
	for _, ip := range addrs(200) {
		a, _ := Owner(ip, []string{"n1", "n2", "n3"})
		b, _ := Owner(ip, []string{"n3", "n1", "n2"})
		if a != b {
			t.Fatalf("%s: %s vs %s depending on order", ip, a, b)
		}
	}
	// Pinned: the choice must never change between speaker versions,
	// or an upgrade would move addresses.
	if got, _ := Owner(netip.MustParseAddr("198.18.0.1"), []string{"node-1", "node-2", "node-3"}); got != pinnedOwner {
		t.Fatalf("owner of 198.18.0.1 changed to %s", got)
	}
}

const pinnedOwner = "node-2"

func TestOwnerSpreadsEvenly(t *testing.T) {
	for _, n := range []int{2, 3, 5, 10} {
		var nodes []string
		for i := range n {
			nodes = append(nodes, fmt.Sprintf("worker-%d", i))
		}
		count := map[string]int{}
		ips := addrs(5000)
		for _, ip := range ips {
			o, _ := Owner(ip, nodes)
			count[o]++
		}
		want := float64(len(ips)) / float64(n)
		for node, c := range count {
			if math.Abs(float64(c)-want) > 0.1*want {
				t.Errorf("%d nodes: %s owns %d, want %.0f ±10%%", n, node, c, want)
			}
		}
	}
}

func TestOwnerMovesOnlyWhatItMust(t *testing.T) {
	before := []string{"a", "b", "c", "d"}
	ips := addrs(4000)
	owner := map[netip.Addr]string{}
	for _, ip := range ips {
		owner[ip], _ = Owner(ip, before)
	}
	// A node leaves: only its addresses move.
	after := []string{"a", "b", "d"}
	for _, ip := range ips {
		o, _ := Owner(ip, after)
		if owner[ip] != "c" && o != owner[ip] {
			t.Fatalf("%s moved from %s to %s though %s stayed", ip, owner[ip], o, owner[ip])
		}
	}
	// A node joins: only addresses it wins move, about 1/5 of them.
	joined := []string{"a", "b", "c", "d", "e"}
	moved := 0
	for _, ip := range ips {
		o, _ := Owner(ip, joined)
		if o != owner[ip] {
			if o != "e" {
				t.Fatalf("%s moved to %s, not to the new node", ip, o)
			}
			moved++
		}
	}
	if frac := float64(moved) / float64(len(ips)); frac < 0.15 || frac > 0.25 {
		t.Fatalf("%.2f of addresses moved to the new node, want about 0.20", frac)
	}
}

// TestScoreIsFNV pins the owner hash: speakers of different versions must
// pick the same owners, so it may never change.
func TestScoreIsFNV(t *testing.T) {
	for _, tt := range []struct {
		node string
		ip   string
	}{{"n01", "198.18.96.0"}, {"node-a", "2001:db8::1"}, {"", "0.0.0.0"}, {"a-much-longer-node-name.example.com", "10.0.0.255"},
		{"worker-17.example.com", "::ffff:10.0.0.1"}, {"zz", "fe80::1"}} {
		h := fnv.New64a()
		h.Write([]byte(tt.node))
		h.Write([]byte{0})
		b := netip.MustParseAddr(tt.ip).As16()
		h.Write(b[:])
		if got, want := score(tt.node, netip.MustParseAddr(tt.ip)), mix(h.Sum64()); got != want {
			t.Errorf("score(%q, %s) = %#x, want %#x", tt.node, tt.ip, got, want)
		}
	}
	// And one value written down, so that a change to mix shows too.
	if got := score("n01", netip.MustParseAddr("198.18.96.0")); got != scoreN01 {
		t.Errorf("score(n01, 198.18.96.0) = %#x, want %#x", got, uint64(scoreN01))
	}
}

// scoreN01 is score("n01", 198.18.96.0) as the first released speaker
// computed it (hash/fnv, then mix).
const scoreN01 = 0x6cbbd1447e6d83e1
