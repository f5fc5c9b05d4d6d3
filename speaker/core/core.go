package core

import (
	"fmt"
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/speaker/announce"
)

// Inputs are one node's view of the cluster for one pass: the informers'
// objects (shared with the caches, never modified) and the mesh's view.
type Inputs struct {
	Self   string
	Config *config.Config
	// Filter says which Services are ironlb's: another load balancer's
	// are neither announced nor reported.
	Filter         config.ClassFilter
	Nodes          []*corev1.Node
	Services       []*Service
	EndpointSlices []*discoveryv1.EndpointSlice
	// Alive is the mesh's view: which speakers are heard from.
	Alive map[string]bool
	// Settled is false until the mesh's view is worth acting on: until it
	// has heard from its peers they all look dead, and this node would
	// claim every address.
	Settled bool
	// Interfaces are announced on when an L2Advertisement names none.
	Interfaces []string
	// BGP says this node runs BGP at all.
	BGP bool
	// Namespace is the speaker's own, Secrets the password Secrets in it.
	Namespace string
	Secrets   []*corev1.Secret
}

// State is what a node remembers between passes.
type State struct {
	// owners is the previous plan's owner of each address: an address
	// another speaker owned is a takeover, announced without a probe. If
	// that speaker is dead there is nobody to ask; if it is alive it
	// computes the same plan and releases the address within moments, and
	// a probe would only see its last answers and back off for seconds.
	owners map[netip.Addr]string
	// planned says owners holds a plan: before the first one (a fresh
	// start) the Services' Announced conditions tell which addresses some
	// peer announces already.
	planned bool
	// wasAlive is the mesh's view at the previous pass.
	wasAlive map[string]bool
	// active are the interfaces given addresses last time: one that gets
	// none now is told to release them.
	active map[string]bool
}

// Actions are what one pass asks of the shells.
type Actions struct {
	// BGP is this node's BGP part, nil when the node runs no BGP.
	BGP *BGPAction
	// L2 is what each interface announces, nil while the mesh is not
	// settled (nothing is changed then). An interface with no addresses
	// releases what it announced.
	L2 map[string]L2Update
	// Reassert asks for one more gratuitous announcement of everything
	// announced, a heartbeat from now: a peer came back from the dead,
	// maybe the other side of a healed partition still answering for
	// addresses it took over meanwhile; it yields them (same plan), and the
	// claim makes it withdraw.
	Reassert bool
	// Report is the plan's part the reporting needs (nil while the mesh is
	// not settled): hand it to Report once the announcers have their sets.
	Report *Publication
}

// L2Update is one interface's addresses and how they move.
type L2Update struct {
	IPs []netip.Addr
	// Takeover are the addresses that come from another node, with the
	// cause ("failover": that node is dead, "rebalance": alive): announced
	// without a probe. If that node is gone nobody answers a probe, and if
	// it is alive it computes the same plan and yields until we announce.
	Takeover map[netip.Addr]string
	// Owners is the new plan's owner of every address: one leaving for a
	// live new owner keeps being answered until that node announces it.
	Owners map[netip.Addr]string
}

// Yield tells whether ip, leaving this node, goes to another node.
func (u L2Update) Yield(self string) func(netip.Addr) bool {
	return func(ip netip.Addr) bool {
		n, ok := u.Owners[ip]
		return ok && n != self
	}
}

// Plans is the cluster-wide decision, the same on every node: who
// announces each address over each protocol.
type Plans struct {
	// Services are ironlb's Services, Infos those of them with addresses.
	Services []*Service
	Infos    []announce.ServiceInfo
	Nodes    []announce.NodeInfo
	L2       announce.L2Plan
	BGP      announce.BGPPlan
}

// Plan computes the cluster-wide decision from in's Config, Filter, Nodes,
// Services, EndpointSlices and Alive. Step acts on its node's part;
// kubectl-ironlb explains it and simulates drains with it, so what the
// plugin says is what the speakers do.
func Plan(in Inputs) Plans {
	p := Plans{Nodes: NodeInfos(in.Nodes, in.Alive)}
	for _, s := range in.Services {
		if in.Filter.ManagesClass(s.Class) {
			p.Services = append(p.Services, s)
		}
	}
	p.Infos = ServiceInfos(in.Config, p.Services, in.EndpointSlices)
	p.L2 = announce.PlanL2(in.Config, p.Nodes, p.Infos)
	p.BGP = announce.PlanBGP(in.Config, p.Nodes, p.Infos)
	return p
}

// Step plans one pass: the cluster-wide plan (Plan), then this node's
// part of it per protocol.
func Step(prev State, in Inputs) (State, Actions) {
	p := Plan(in)
	svcs, infos, plan, bgpPlan := p.Services, p.Infos, p.L2, p.BGP

	var act Actions
	if in.BGP {
		act.BGP = stepBGP(in, bgpPlan)
	}
	if !in.Settled {
		// The mesh's settling triggers the next pass.
		return prev, act
	}

	// This node's addresses per interface; one interface may be named by
	// several advertisements and be a default one too.
	mine := map[string][]netip.Addr{}
	for group, ips := range plan.ForNode(in.Self) {
		ifaces := []string{group}
		if group == "" {
			ifaces = in.Interfaces
		}
		for _, i := range ifaces {
			mine[i] = append(mine[i], ips...)
		}
	}
	next := State{
		owners:   make(map[netip.Addr]string, len(plan.Addresses)),
		planned:  true,
		wasAlive: in.Alive,
		active:   map[string]bool{},
	}
	for ip, a := range plan.Addresses {
		next.owners[ip] = a.Node
	}
	for n, ok := range in.Alive {
		if ok && n != in.Self && prev.wasAlive != nil && !prev.wasAlive[n] {
			act.Reassert = true
		}
	}
	for iface := range mine {
		next.active[iface] = true
	}
	for iface := range prev.active {
		if _, still := mine[iface]; !still {
			mine[iface] = nil // release what this interface announced
		}
	}
	announcedBefore := map[netip.Addr]bool{}
	if !prev.planned {
		announcedBefore = announcedAddresses(svcs)
	}
	act.L2 = make(map[string]L2Update, len(mine))
	wanted := map[netip.Addr]bool{}
	for iface, ips := range mine {
		u := L2Update{IPs: ips, Owners: next.owners, Takeover: map[netip.Addr]string{}}
		for _, ip := range ips {
			wanted[ip] = true
			prevOwner, ok := prev.owners[ip]
			if (ok && prevOwner != in.Self) || (!ok && announcedBefore[ip]) {
				cause := "failover"
				if in.Alive[prevOwner] {
					cause = "rebalance"
				}
				u.Takeover[ip] = cause
			}
		}
		act.L2[iface] = u
	}
	refs := make([]pubService, len(infos))
	for i, s := range infos {
		refs[i] = pubService{key: s.Key, ips: s.IPs}
	}
	act.Report = &Publication{self: in.Self, svcs: refs, plan: plan, bgp: bgpPlan, alive: in.Alive, wanted: wanted}
	return next, act
}

// announcedAddresses lists the addresses whose Services report being
// announced in layer 2 by some node.
func announcedAddresses(svcs []*Service) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, s := range svcs {
		c := s.Announced
		if c == nil || c.Status != metav1.ConditionTrue || c.Reason != ReasonLayer2 {
			continue
		}
		for _, ip := range s.IPs {
			out[ip] = true
		}
	}
	return out
}

// selfNode finds the node named self.
func selfNode(nodes []*corev1.Node, self string) (*corev1.Node, error) {
	for _, n := range nodes {
		if n.Name == self {
			return n, nil
		}
	}
	return nil, fmt.Errorf("node %q not found", self)
}
