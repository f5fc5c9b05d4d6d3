// Package announce decides which nodes announce which addresses. It is
// pure: every speaker computes the same answer from the same shared state
// (nodes, liveness, endpoints) with no coordination, so the decision must
// be deterministic and must not depend on the order the inputs arrive in.
package announce

import (
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
	hs := make([]nodeHash, len(eligible))
	for i, n := range eligible {
		hs[i] = hashNode(n)
	}
	return ownerHashed(ip, hs)
}

// nodeHash is a node's score state after its name (see score), computed
// once per plan so that scoring an address costs only the address bytes:
// 4 for IPv4 (the 12-byte IPv4-mapped prefix is folded in too).
type nodeHash struct {
	name         string
	afterName    uint64
	afterV4Start uint64
}

var v4MappedStart = [12]byte{10: 0xff, 11: 0xff}

func hashNode(name string) nodeHash {
	h := fnvAdd(fnvOffset, name)
	h *= fnvPrime // the zero byte after the name
	v4 := h
	for _, c := range v4MappedStart {
		v4 = (v4 ^ uint64(c)) * fnvPrime
	}
	return nodeHash{name: name, afterName: h, afterV4Start: v4}
}

// score is score(n.name, ip).
func (n nodeHash) score(ip netip.Addr) uint64 {
	b := ip.As16()
	if ip.Is4() {
		h := n.afterV4Start
		for _, c := range b[12:] {
			h = (h ^ uint64(c)) * fnvPrime
		}
		return mix(h)
	}
	h := n.afterName
	for _, c := range b {
		h = (h ^ uint64(c)) * fnvPrime
	}
	return mix(h)
}

// ownerHashed is Owner over precomputed node hashes (a plan computes
// them once for all its addresses).
func ownerHashed(ip netip.Addr, eligible []nodeHash) (owner string, ok bool) {
	var best uint64
	for _, n := range eligible {
		s := n.score(ip)
		if !ok || s > best || (s == best && n.name < owner) {
			owner, best, ok = n.name, s, true
		}
	}
	return owner, ok
}

const (
	fnvOffset = 14695981039346656037
	fnvPrime  = 1099511628211
)

func fnvAdd(h uint64, s string) uint64 {
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * fnvPrime
	}
	return h
}

// score is a stable 64-bit hash of (node, ip), the same in every process
// and every version of the speaker (unlike hash/maphash, which is seeded):
// speakers of two versions meet in every rolling upgrade. It is FNV-1a
// (64 bit) over the node name, a zero byte and the 16-byte address, then
// mixed; computed inline because hash/fnv's interface value allocates,
// and a plan scores every address against every node.
func score(node string, ip netip.Addr) uint64 {
	return hashNode(node).score(ip)
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
