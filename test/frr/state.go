package frr

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Neighbor is bgpd's view of one session.
type Neighbor struct {
	Address netip.Addr
	State   string // Established, Active, Connect, OpenSent, ...
	// Since is when the session was established (zero if it is not).
	Since time.Time
	// PrefixesReceived counts accepted prefixes over both families.
	PrefixesReceived int
	// BFDStatus is bgpd's view of the BFD session ("Up", "Down", "" without BFD).
	BFDStatus string
	// LastResetReason is why the session last went down.
	LastResetReason string
	// Connections counts how often the session was established; it
	// changes exactly when the session was reset (Since is derived from
	// an uptime and may jitter by a second).
	Connections int
}

// Established tells whether the session is up.
func (n Neighbor) Established() bool { return n.State == "Established" }

// Neighbors returns every configured BGP neighbor by address.
func (r *Router) Neighbors() (map[netip.Addr]Neighbor, error) {
	all, err := r.NeighborsByName()
	if err != nil {
		return nil, err
	}
	out := map[netip.Addr]Neighbor{}
	for k, n := range all {
		if a, err := netip.ParseAddr(k); err == nil {
			out[a] = n
		}
	}
	return out, nil
}

// NeighborsByName returns every configured BGP neighbor as bgpd names
// it: by address, or by interface for an unnumbered one (whose Address is
// then the peer's link-local address once known).
func (r *Router) NeighborsByName() (map[string]Neighbor, error) {
	var raw map[string]struct {
		BGPState      string `json:"bgpState"`
		UpEpoch       int64  `json:"bgpTimerUpEstablishedEpoch"`
		LastResetDue  string `json:"lastResetDueTo"`
		Connections   int    `json:"connectionsEstablished"`
		ForeignHost   string `json:"hostForeign"`
		AddressFamily map[string]struct {
			AcceptedPrefixCounter int `json:"acceptedPrefixCounter"`
		} `json:"addressFamilyInfo"`
		PeerBfdInfo *struct {
			Status string `json:"status"`
		} `json:"peerBfdInfo"`
	}
	if err := r.VtyshJSON("show bgp neighbors json", &raw); err != nil {
		return nil, err
	}
	out := map[string]Neighbor{}
	for k, v := range raw {
		a, err := netip.ParseAddr(k)
		if err != nil {
			a, _ = netip.ParseAddr(v.ForeignHost)
		}
		n := Neighbor{Address: a, State: v.BGPState, LastResetReason: v.LastResetDue, Connections: v.Connections}
		if n.Established() && v.UpEpoch > 0 {
			n.Since = time.Unix(v.UpEpoch, 0)
		}
		for _, af := range v.AddressFamily {
			n.PrefixesReceived += af.AcceptedPrefixCounter
		}
		if v.PeerBfdInfo != nil {
			n.BFDStatus = v.PeerBfdInfo.Status
		}
		out[k] = n
	}
	return out, nil
}

// BFDPeer is bfdd's view of one BFD session.
type BFDPeer struct {
	Peer   netip.Addr `json:"peer"`
	Status string     `json:"status"` // up, down, init
	// Intervals in milliseconds as negotiated.
	ReceiveInterval  int `json:"receive-interval"`
	TransmitInterval int `json:"transmit-interval"`
	DetectMultiplier int `json:"detect-multiplier"`
	RemoteMultiplier int `json:"remote-detect-multiplier"`
}

// BFDPeers returns bfdd's sessions.
func (r *Router) BFDPeers() ([]BFDPeer, error) {
	var out []BFDPeer
	if err := r.VtyshJSON("show bfd peers json", &out); err != nil {
		return nil, err
	}
	return out, nil
}

// Path is one BGP path bgpd holds for a prefix.
type Path struct {
	Nexthops  []netip.Addr
	From      netip.Addr // the peer that sent it
	Best      bool
	Multipath bool
	Stale     bool
	// LocalPref is the LOCAL_PREF attribute (-1 when absent: eBGP).
	LocalPref int
	// Communities and LargeCommunities as FRR prints them, e.g.
	// "64512:100 64512:200" and "64512:1:2".
	Communities      string
	LargeCommunities string
	ASPath           string
}

// Family is an address family in vtysh's spelling: "ipv4" or "ipv6".
type Family string

const (
	IPv4 Family = "ipv4"
	IPv6 Family = "ipv6"
)

// FamilyOf returns the family of prefix.
func FamilyOf(p netip.Prefix) Family {
	if p.Addr().Is4() {
		return IPv4
	}
	return IPv6
}

// BGPPrefix returns bgpd's paths for one prefix (none if it has none).
func (r *Router) BGPPrefix(p netip.Prefix) ([]Path, error) {
	var raw struct {
		Paths []struct {
			Nexthops []struct {
				IP    string `json:"ip"`
				Scope string `json:"scope"`
			} `json:"nexthops"`
			Peer struct {
				PeerID string `json:"peerId"`
			} `json:"peer"`
			BestPath *struct {
				Overall bool `json:"overall"`
			} `json:"bestpath"`
			Multipath bool `json:"multipath"`
			Stale     bool `json:"stale"`
			LocalPref *int `json:"locPrf"`
			Community *struct {
				String string `json:"string"`
			} `json:"community"`
			LargeCommunity *struct {
				String string `json:"string"`
			} `json:"largeCommunity"`
			ASPath *struct {
				String string `json:"string"`
			} `json:"aspath"`
		} `json:"paths"`
	}
	if err := r.VtyshJSON(fmt.Sprintf("show bgp %s unicast %s json", FamilyOf(p), p), &raw); err != nil {
		return nil, err
	}
	var out []Path
	for _, rp := range raw.Paths {
		path := Path{Multipath: rp.Multipath, Stale: rp.Stale, LocalPref: -1}
		for _, nh := range rp.Nexthops {
			if nh.Scope == "link-local" {
				continue
			}
			if a, err := netip.ParseAddr(nh.IP); err == nil {
				path.Nexthops = append(path.Nexthops, a)
			}
		}
		path.From, _ = netip.ParseAddr(rp.Peer.PeerID)
		if rp.BestPath != nil {
			path.Best = rp.BestPath.Overall
		}
		if rp.LocalPref != nil {
			path.LocalPref = *rp.LocalPref
		}
		if rp.Community != nil {
			path.Communities = rp.Community.String
		}
		if rp.LargeCommunity != nil {
			path.LargeCommunities = rp.LargeCommunity.String
		}
		if rp.ASPath != nil {
			path.ASPath = rp.ASPath.String
		}
		out = append(out, path)
	}
	return out, nil
}

// Routes returns zebra's installed BGP routes of a family: prefix → the
// next hops it forwards to (several for ECMP), sorted.
func (r *Router) Routes(f Family) (map[netip.Prefix][]netip.Addr, error) {
	cmd := "show ip route bgp json"
	if f == IPv6 {
		cmd = "show ipv6 route bgp json"
	}
	var raw map[string][]struct {
		Protocol  string `json:"protocol"`
		Selected  bool   `json:"selected"`
		Installed bool   `json:"installed"`
		Nexthops  []struct {
			IP     string `json:"ip"`
			Active bool   `json:"active"`
		} `json:"nexthops"`
	}
	if err := r.VtyshJSON(cmd, &raw); err != nil {
		return nil, err
	}
	out := map[netip.Prefix][]netip.Addr{}
	for k, entries := range raw {
		p, err := netip.ParsePrefix(k)
		if err != nil {
			continue
		}
		for _, e := range entries {
			if e.Protocol != "bgp" || !e.Selected {
				continue
			}
			var nhs []netip.Addr
			for _, nh := range e.Nexthops {
				if a, err := netip.ParseAddr(nh.IP); err == nil && nh.Active {
					nhs = append(nhs, a)
				}
			}
			slices.SortFunc(nhs, netip.Addr.Compare)
			out[p] = nhs
		}
	}
	return out, nil
}

// Poll calls cond every interval until it returns true, an error, or ctx
// ends, and returns how long it took from the call. It is the measuring
// stick of the BGP tests and benchmarks: the resolution is interval plus
// one vtysh round trip (a few milliseconds).
func Poll(ctx context.Context, interval time.Duration, cond func() (bool, error)) (time.Duration, error) {
	start := time.Now()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		ok, err := cond()
		if err != nil {
			return time.Since(start), err
		}
		if ok {
			return time.Since(start), nil
		}
		select {
		case <-ctx.Done():
			return time.Since(start), fmt.Errorf("after %v: %w", time.Since(start).Round(time.Millisecond), ctx.Err())
		case <-t.C:
		}
	}
}

// WaitRoute waits until zebra's route for prefix satisfies want (given the
// sorted next hops, nil when there is no route) and returns how long it
// took, polling every 10ms. Use it to measure propagation: call it right
// after the change.
func (r *Router) WaitRoute(ctx context.Context, prefix netip.Prefix, want func(nexthops []netip.Addr) bool) (time.Duration, error) {
	var last []netip.Addr
	d, err := Poll(ctx, 10*time.Millisecond, func() (bool, error) {
		rs, err := r.Routes(FamilyOf(prefix))
		if err != nil {
			return false, err
		}
		last = rs[prefix]
		return want(last), nil
	})
	if err != nil {
		return d, fmt.Errorf("route %s in %s (last next hops %v): %w", prefix, r.NS, last, err)
	}
	return d, nil
}

// NextHops returns a WaitRoute condition: exactly these next hops (in any
// order); none means no route.
func NextHops(want ...netip.Addr) func([]netip.Addr) bool {
	w := slices.Clone(want)
	slices.SortFunc(w, netip.Addr.Compare)
	return func(got []netip.Addr) bool { return slices.Equal(got, w) }
}
