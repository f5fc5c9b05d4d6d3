package core

import (
	"fmt"
	"maps"
	"net"
	"net/netip"
	"slices"
	"sort"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/speaker/announce"
)

// Reasons of the Announced condition when announced: layer 2 (possibly
// BGP too), or BGP only; when not, the plan's (announce.Reason*) or
// ReasonAddressConflict.
const (
	ReasonLayer2          = "Layer2"
	ReasonBGP             = "BGP"
	ReasonAddressConflict = "AddressConflict"
)

// Publication is the part of a pass's plan that reporting needs. It holds
// only what the reports read of each Service, not the cached objects: the
// cache replaces an object on each update, and a publication kept the
// replaced ones alive, a second copy of every Service at idle.
type Publication struct {
	self  string
	svcs  []pubService
	plan  announce.L2Plan
	bgp   announce.BGPPlan
	alive map[string]bool
	// wanted are the addresses this node's interfaces were given.
	wanted map[netip.Addr]bool
}

// pubService is a Service with addresses, as the plan saw it.
type pubService struct {
	key string // namespace/name
	ips []netip.Addr
}

// Wire is what this node's announcers say now.
type Wire struct {
	// Announcing are the addresses answered for on some interface.
	Announcing map[netip.Addr]bool
	// Conflicts are the addresses another host claims, with its MAC, as
	// the announcers reported them.
	Conflicts map[netip.Addr]net.HardwareAddr
}

// Verdict is the Announced condition this node writes for one Service
// (Type and ObservedGeneration are the writer's to fill in).
type Verdict struct {
	Key       string
	Condition metav1.Condition
}

// Over lists the conflicts that are over: the address is answered again,
// or no longer this node's.
func (p *Publication) Over(w Wire) []netip.Addr {
	var over []netip.Addr
	for ip := range w.Conflicts {
		if w.Announcing[ip] || !p.wanted[ip] {
			over = append(over, ip)
		}
	}
	return over
}

// Report says the Announced condition of every Service this node writes
// it for. One speaker writes it per Service: the layer-2 owner of its
// address (the only one that knows about conflicts), else the first node
// announcing it over BGP, else, for Services nobody announces, the alive
// speaker with the lowest name. Conflicts that are Over count no more.
func (p *Publication) Report(w Wire) []Verdict {
	conflicts := w.Conflicts
	if over := p.Over(w); len(over) > 0 {
		conflicts = maps.Clone(w.Conflicts)
		for _, ip := range over {
			delete(conflicts, ip)
		}
	}
	var aliveNames []string
	for n, ok := range p.alive {
		if ok {
			aliveNames = append(aliveNames, n)
		}
	}
	sort.Strings(aliveNames)
	reporter := len(aliveNames) > 0 && aliveNames[0] == p.self
	var out []Verdict
	for _, s := range p.svcs {
		if c := p.condition(s.key, s.ips, w.Announcing, conflicts, reporter); c != nil {
			out = append(out, Verdict{Key: s.key, Condition: *c})
		}
	}
	return out
}

// condition is the condition this node writes for the Service key with
// addresses ips, or nil when another node writes it.
func (p *Publication) condition(key string, ips []netip.Addr, announcing map[netip.Addr]bool, conflicts map[netip.Addr]net.HardwareAddr, reporter bool) *metav1.Condition {
	var l2Owner string
	var mine []string
	pending := false
	for _, ip := range ips {
		a, ok := p.plan.Addresses[ip]
		if !ok {
			continue
		}
		if l2Owner == "" {
			l2Owner = a.Node
		}
		if a.Node != p.self {
			continue
		}
		if mac, bad := conflicts[ip]; bad {
			return &metav1.Condition{Status: metav1.ConditionFalse, Reason: ReasonAddressConflict,
				Message: fmt.Sprintf("another host (MAC %s) answers for %s; not announced", mac, ip)}
		}
		if !announcing[ip] {
			// Still probing (or waiting for a peer to let go): say so
			// once it is on the wire (the announcer reports it).
			pending = true
			continue
		}
		where := "all interfaces"
		if len(a.Interfaces) > 0 {
			where = strings.Join(a.Interfaces, ",")
		}
		proto := "ARP"
		if ip.Is6() {
			proto = "NDP"
		}
		mine = append(mine, fmt.Sprintf("%s on %s (%s)", ip, where, proto))
	}
	var bgpNodes []string
	for _, ip := range ips {
		for _, n := range p.bgp.Addresses[ip].Nodes {
			if !slices.Contains(bgpNodes, n) {
				bgpNodes = append(bgpNodes, n)
			}
		}
	}
	sort.Strings(bgpNodes)
	viaBGP := ""
	if len(bgpNodes) > 0 {
		viaBGP = fmt.Sprintf("BGP from %d nodes (%s)", len(bgpNodes), strings.Join(bgpNodes, ", "))
	}
	switch {
	case len(mine) == 0 && pending:
		return nil
	case len(mine) > 0:
		msg := fmt.Sprintf("announced by node %s: %s", p.self, strings.Join(mine, "; "))
		if viaBGP != "" {
			msg += "; " + viaBGP
		}
		return &metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonLayer2, Message: msg}
	case l2Owner != "":
		return nil // the owner writes
	case len(bgpNodes) > 0:
		if bgpNodes[0] != p.self {
			return nil
		}
		return &metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonBGP, Message: "announced over " + viaBGP}
	case !reporter:
		return nil
	}
	reason := p.bgp.NotAnnounced[key]
	if reason == "" {
		reason = p.plan.NotAnnounced[key]
	}
	if reason == "" {
		return nil
	}
	return &metav1.Condition{Status: metav1.ConditionFalse, Reason: reason, Message: notAnnouncedMessage(reason)}
}

func notAnnouncedMessage(reason string) string {
	switch reason {
	case announce.ReasonNoAdvertisement:
		return "no L2Advertisement or BGPAdvertisement selects this Service's pool and labels"
	case announce.ReasonNoLocalEndpoint:
		return "externalTrafficPolicy Local and no node has a ready endpoint"
	default:
		return "no eligible node: none is Ready, alive, selected by an advertisement and not excluded or cordoned"
	}
}
