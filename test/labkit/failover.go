package labkit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mdlayher/arp"

	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netlab"
)

// Lab is what a running lab records of itself (bin/lab/lab.json) so that
// a second command (`make lab-failover`) and the tests can act on it: its
// hosts, its nodes, the two Services' addresses and the router's FRR.
type Lab struct {
	Hosts map[string]*netlab.Host `json:"hosts"`
	Nodes []string                `json:"nodes"`
	// LAN is the address "client" reaches over layer 2, Routed the one
	// "client2" reaches through "router" over BGP.
	LAN    netip.Addr `json:"lan"`
	Routed netip.Addr `json:"routed"`
	// FRRDir holds the router's vtysh sockets.
	FRRDir string `json:"frrDir"`
}

// Save writes the record to path.
func (l *Lab) Save(path string) error {
	data, err := json.MarshalIndent(l, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, data, 0o644)
}

// LoadLab reads the record of a running lab and checks that it still runs.
func LoadLab(path string) (*Lab, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("no lab is running (%s is missing): start one with `make lab` first", path)
	}
	if err != nil {
		return nil, err
	}
	var l Lab
	if err := json.Unmarshal(data, &l); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	for _, name := range append(slices.Clone(l.Nodes), "client", "client2", "router") {
		h, ok := l.Hosts[name]
		if !ok {
			return nil, fmt.Errorf("%s names no host %q", path, name)
		}
		if _, err := os.Stat("/run/netns/" + h.Name); err != nil {
			return nil, fmt.Errorf("the lab of %s is gone (namespace %s: %w): start one with `make lab`", path, h.Name, err)
		}
	}
	return &l, nil
}

// Router is the lab's FRR, for vtysh.
func (l *Lab) Router() *frr.Router { return &frr.Router{NS: l.Hosts["router"].Name, Dir: l.FRRDir} }

func (l *Lab) nodeAddrs() []netip.Addr {
	var out []netip.Addr
	for _, n := range l.Nodes {
		out = append(out, l.Hosts[n].IPv4.Addr())
	}
	slices.SortFunc(out, netip.Addr.Compare)
	return out
}

// nodeOf returns the node with IPv4 address a.
func (l *Lab) nodeOf(a netip.Addr) (string, bool) {
	for _, n := range l.Nodes {
		if l.Hosts[n].IPv4.Addr() == a {
			return n, true
		}
	}
	return "", false
}

// Resolve asks for ip's MAC from host's LAN link, as a router would.
func Resolve(host *netlab.Host, ip netip.Addr, timeout time.Duration) (net.HardwareAddr, error) {
	return netlab.InNS(host.Name, func() (net.HardwareAddr, error) {
		ifi, err := net.InterfaceByName(host.Link)
		if err != nil {
			return nil, err
		}
		c, err := arp.Dial(ifi)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		if err := c.SetDeadline(time.Now().Add(timeout)); err != nil {
			return nil, err
		}
		return c.Resolve(ip)
	})
}

// L2Owner returns the node whose MAC answers the LAN client's ARP request
// for the LAN address.
func (l *Lab) L2Owner() (string, error) {
	mac, err := Resolve(l.Hosts["client"], l.LAN, 300*time.Millisecond)
	if err != nil {
		return "", fmt.Errorf("ARP for %s from client: %w", l.LAN, err)
	}
	for _, n := range l.Nodes {
		if l.Hosts[n].MAC.String() == mac.String() {
			return n, nil
		}
	}
	return "", fmt.Errorf("MAC %s, not a node's, answers for %s", mac, l.LAN)
}

// RoutedVia returns the gateway router forwards from's packets to dst
// to: for a multipath route, the kernel's choice for that flow (a hash of
// the addresses).
func RoutedVia(router *netlab.Host, from, dst netip.Addr) (netip.Addr, error) {
	out, err := router.In("ip", "-o", "route", "get", from.String())
	if err != nil {
		return netip.Addr{}, err
	}
	dev := wordAfter(out, "dev")
	out, err = router.In("ip", "-o", "route", "get", dst.String(), "from", from.String(), "iif", dev)
	if err != nil {
		return netip.Addr{}, err
	}
	via, err := netip.ParseAddr(wordAfter(out, "via"))
	if err != nil {
		return netip.Addr{}, fmt.Errorf("%s forwards %s's flow to %s through no gateway: %s", router.Name, from, dst, strings.TrimSpace(out))
	}
	return via, nil
}

// FlowNode returns the node the router forwards client2's packets to the
// routed address to.
func (l *Lab) FlowNode() (string, error) {
	via, err := RoutedVia(l.Hosts["router"], l.Hosts["client2"].IPv4.Addr(), l.Routed)
	if err != nil {
		return "", err
	}
	n, ok := l.nodeOf(via)
	if !ok {
		return "", fmt.Errorf("the router forwards client2's flow to %s via %s, not a node", l.Routed, via)
	}
	return n, nil
}

// wordAfter returns the word after key in an `ip -o` line.
func wordAfter(line, key string) string {
	f := strings.Fields(line)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == key {
			return f[i+1]
		}
	}
	return ""
}

// health says what keeps the lab from being whole, or "" when it is:
// every node's BGP session established with BFD up at the router, the
// router routing the routed address over every node, a node answering
// ARP for the LAN address.
func (l *Lab) health() string {
	rtr := l.Router()
	ns, err := rtr.Neighbors()
	if err != nil {
		return err.Error()
	}
	for _, a := range l.nodeAddrs() {
		n := ns[a]
		if !n.Established() || !strings.EqualFold(n.BFDStatus, "up") {
			return fmt.Sprintf("the router's session with %s is %q, BFD %q", a, n.State, n.BFDStatus)
		}
	}
	rs, err := rtr.Routes(frr.IPv4)
	if err != nil {
		return err.Error()
	}
	if nh := rs[netip.PrefixFrom(l.Routed, 32)]; !slices.Equal(nh, l.nodeAddrs()) {
		return fmt.Sprintf("the router routes %s via %v, not every node", l.Routed, nh)
	}
	if _, err := l.L2Owner(); err != nil {
		return err.Error()
	}
	return ""
}

// WaitHealthy waits until the lab is whole (see health).
func (l *Lab) WaitHealthy(ctx context.Context, timeout time.Duration) (time.Duration, error) {
	d, _, err := l.waitHealthy(ctx, timeout)
	return d, err
}

// waitHealthy is WaitHealthy, also saying what was missing last.
func (l *Lab) waitHealthy(ctx context.Context, timeout time.Duration) (time.Duration, string, error) {
	start := time.Now()
	last := ""
	for {
		why := l.health()
		if why == "" {
			return time.Since(start), last, nil
		}
		last = why
		if time.Since(start) > timeout {
			return 0, last, fmt.Errorf("the lab is not whole %s after the start of the wait: %s", timeout, why)
		}
		select {
		case <-ctx.Done():
			return 0, last, ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Cut is one node's link cut, as its clients saw it.
type Cut struct {
	Node string `json:"node"`
	// L2Owner and Flow say what the node carried: it answered ARP for
	// the LAN address, the router sent client2's flow to it.
	L2Owner bool `json:"l2Owner"`
	Flow    bool `json:"flow"`
	// LAN and Routed are the longest runs of new connections not
	// answered at once (one every 10 ms, through kube-proxy to a pod) of
	// client to the LAN address and of client2 to the routed one: each
	// client's outage. LANConns and RoutedConns say how all went.
	LAN         time.Duration `json:"lan"`
	Routed      time.Duration `json:"routed"`
	LANConns    ConnStats     `json:"lanConns"`
	RoutedConns ConnStats     `json:"routedConns"`
	// NewOwner and NewFlow are who carried them during the cut.
	NewOwner string `json:"newOwner"`
	NewFlow  string `json:"newFlow"`
	// Recovered is from restoring the link to the lab being whole again.
	Recovered time.Duration `json:"recovered"`
	// LastMissing is what the lab waited for last before it was whole.
	LastMissing string `json:"lastMissing"`
}

// Timing of one cut: the clients connect for lead before it and the link
// stays down for cutFor (the failovers take under 1 s).
const (
	connEvery = 10 * time.Millisecond
	lead      = 500 * time.Millisecond
	cutFor    = 3 * time.Second
)

// Failover cuts the link of the node that answers for the LAN address and
// of the node client2's flow is routed to (one cut when they are the
// same), each while both clients open new connections, measures both
// clients' outage,
// restores the node completely and waits until the lab is whole again.
func (l *Lab) Failover(ctx context.Context) ([]Cut, error) {
	if _, err := l.WaitHealthy(ctx, 60*time.Second); err != nil {
		return nil, err
	}
	owner, err := l.L2Owner()
	if err != nil {
		return nil, err
	}
	flow, err := l.FlowNode()
	if err != nil {
		return nil, err
	}
	var cuts []Cut
	for _, node := range slices.Compact([]string{owner, flow}) {
		if len(cuts) > 0 {
			// The restored node may carry the flow again: ask anew.
			if flow, err = l.FlowNode(); err != nil {
				return cuts, err
			}
		}
		c, err := l.cut(ctx, node, node == owner, node == flow)
		if err != nil {
			return cuts, err
		}
		cuts = append(cuts, c)
	}
	return cuts, nil
}

func (l *Lab) cut(ctx context.Context, node string, owner, flow bool) (Cut, error) {
	c := Cut{Node: node, L2Owner: owner, Flow: flow}
	lan := StartConnect(l.Hosts["client"], l.LAN, connEvery)
	routed := StartConnect(l.Hosts["client2"], l.Routed, connEvery)
	time.Sleep(lead)
	restore, err := l.Hosts[node].CutLink()
	if err != nil {
		lan.Stop()
		routed.Stop()
		return c, err
	}
	time.Sleep(cutFor)
	c.NewOwner, _ = l.L2Owner()
	c.NewFlow, _ = l.FlowNode()
	lan.Halt() // both clients connect for the same time
	routed.Halt()
	c.LANConns, c.RoutedConns = lan.Stop(), routed.Stop()
	c.LAN, c.Routed = c.LANConns.Window, c.RoutedConns.Window
	if err := restore(); err != nil {
		return c, err
	}
	if c.Recovered, c.LastMissing, err = l.waitHealthy(ctx, 60*time.Second); err != nil {
		return c, fmt.Errorf("after restoring %s's link: %w", node, err)
	}
	return c, nil
}

// String says what the cut did, in a line.
func (c Cut) String() string {
	var carried []string
	if c.L2Owner {
		carried = append(carried, "answered ARP for the LAN address")
	}
	if c.Flow {
		carried = append(carried, "carried client2's routed flow")
	}
	if len(carried) == 0 {
		carried = append(carried, "carried neither client")
	}
	return fmt.Sprintf("%s (%s): LAN client lost %s, then %s answered; routed client lost %s, then via %s; whole again %s after the link came back (last missing: %s)",
		c.Node, strings.Join(carried, ", "), c.LANConns, orNobody(c.NewOwner), c.RoutedConns, orNobody(c.NewFlow), c.Recovered.Round(time.Millisecond), orNobody(c.LastMissing))
}

func orNobody(s string) string {
	if s == "" {
		return "nobody"
	}
	return s
}
