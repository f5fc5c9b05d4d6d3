// Package announce decides which nodes announce which addresses. It is
// pure: every speaker computes the same answer from the same shared state
// (nodes, liveness, endpoints) with no coordination, so the decision must
// be deterministic and must not depend on the order the inputs arrive in.
package announce

import (
	"hash/fnv"
	"net/netip"
	"sort"
)

// Node is what the decision needs to know about one node.
type Node struct {
	Name string
	// Ready is the kubelet's Ready condition.
	Ready bool
	// Unschedulable is a cordon, the first step of a drain.
	Unschedulable bool
	// Excluded is the label node.kubernetes.io/exclude-from-external-load-balancers.
	Excluded bool
	// NetworkUnavailable is the NetworkUnavailable condition.
	NetworkUnavailable bool
	// SpeakerAlive says the node's speaker is heard from (membership).
	SpeakerAlive bool
}

// Healthy tells whether a node may announce at all.
func (n Node) Healthy() bool {
	return n.Ready && n.SpeakerAlive && !n.Excluded && !n.NetworkUnavailable
}

// Eligible returns, sorted by name, the nodes that may announce one
// address: healthy, accepted by match (the advertisement's node
// selectors; nil accepts all) and by local (a ready local endpoint, for
// externalTrafficPolicy Local; nil accepts all). Cordoned nodes are used
// only when no uncordoned node qualifies, so a drain moves traffic away
// before pods are evicted without turning a fully cordoned cluster dark.
func Eligible(nodes []Node, match func(Node) bool, local func(node string) bool) []string {
	var open, cordoned []string
	for _, n := range nodes {
		if !n.Healthy() || (match != nil && !match(n)) || (local != nil && !local(n.Name)) {
			continue
		}
		if n.Unschedulable {
			cordoned = append(cordoned, n.Name)
		} else {
			open = append(open, n.Name)
		}
	}
	out := open
	if len(out) == 0 {
		out = cordoned
	}
	sort.Strings(out)
	return out
}

// Owner picks the single node that answers ARP/NDP for ip, by rendezvous
// (highest random weight) hashing: every address lands on a pseudo-random
// eligible node, so addresses spread evenly, and when a node leaves only
// the addresses it owned move (when one joins, only those it now wins).
// Services sharing an address share its owner because the choice depends
// on the address alone. ok is false when no node is eligible.
func Owner(ip netip.Addr, eligible []string) (owner string, ok bool) {
	var best uint64
	for _, n := range eligible {
		s := score(n, ip)
		if !ok || s > best || (s == best && n < owner) {
			owner, best, ok = n, s, true
		}
	}
	return owner, ok
}

// score is a stable 64-bit hash of (node, ip), the same in every process
// and every version of the speaker (unlike hash/maphash, which is seeded).
func score(node string, ip netip.Addr) uint64 {
	h := fnv.New64a()
	_, _ = h.Write([]byte(node))
	_, _ = h.Write([]byte{0})
	b := ip.As16()
	_, _ = h.Write(b[:])
	return mix(h.Sum64())
}

// mix is the splitmix64 finaliser: FNV alone spreads similar inputs (node
// names differing in one digit, consecutive addresses) poorly.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}
