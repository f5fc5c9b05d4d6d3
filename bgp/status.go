package bgp

import (
	"context"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	api "github.com/osrg/gobgp/v4/api"
)

// PeerStatus is the state of one session.
type PeerStatus struct {
	Name    string     `json:"name"`
	Address netip.Addr `json:"address"`
	// State is the BGP FSM state: idle, connect, active, opensent,
	// openconfirm or established.
	State string `json:"state"`
	// Since is when the session reached State "established", or when it
	// last left it (zero if it never was up).
	Since time.Time `json:"since,omitzero"`
	// PrefixesSent counts the prefixes currently advertised to the peer
	// (after export policy).
	PrefixesSent uint64 `json:"prefixesSent"`
	// BFDState is up, down, init or admindown; "" when the peer has no BFD.
	BFDState string `json:"bfdState,omitempty"`
	// Error and Reason say why a peer the node should run is not
	// configured (State is then "idle"): see PeerError.
	Error  string `json:"error,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// Established tells whether the session is up.
func (s PeerStatus) Established() bool { return s.State == "established" }

// Status reports every configured session, and every peer the last sync
// left out with its error, by name.
func (s *Speaker) Status() []PeerStatus {
	s.mu.Lock()
	peers := maps.Clone(s.peers)
	var out []PeerStatus
	for name, e := range s.failed {
		p := s.desired[name]
		out = append(out, PeerStatus{Name: name, Address: p.Address, State: "idle", Error: e.Error(), Reason: e.Reason})
	}
	ok := s.started && !s.stopped
	s.mu.Unlock()
	if !ok {
		return nil
	}
	// Sessions are matched by their description, the peer's name: an
	// unnumbered session's neighbour address is GoBGP's to find.
	err := s.srv.ListPeer(context.Background(), &api.ListPeerRequest{EnableAdvertised: true}, func(p *api.Peer) {
		spec, known := peers[p.GetConf().GetDescription()]
		if !known {
			return
		}
		st := PeerStatus{Name: spec.Name, Address: spec.Address, State: sessionState(p.GetState().GetSessionState())}
		if t := p.GetTimers().GetState(); t != nil {
			if st.Established() && t.GetUptime() != nil {
				st.Since = t.GetUptime().AsTime()
			} else if !st.Established() && t.GetDowntime() != nil && t.GetDowntime().GetSeconds() > 0 {
				st.Since = t.GetDowntime().AsTime()
			}
		}
		for _, af := range p.GetAfiSafis() {
			st.PrefixesSent += af.GetState().GetAdvertised()
		}
		if spec.BFD != nil {
			st.BFDState = bfdState(p.GetState().GetBfdState().GetSessionState())
		}
		out = append(out, st)
	})
	if err != nil {
		s.log.Error(err, "Listing BGP peers")
	}
	slices.SortFunc(out, func(a, b PeerStatus) int { return strings.Compare(a.Name, b.Name) })
	return out
}

func sessionState(st api.PeerState_SessionState) string {
	name := strings.TrimPrefix(st.String(), "SESSION_STATE_")
	return strings.ToLower(name)
}

func bfdState(st api.BfdSessionState) string {
	switch st {
	case api.BfdSessionState_BFD_SESSION_STATE_UP:
		return "up"
	case api.BfdSessionState_BFD_SESSION_STATE_INIT:
		return "init"
	case api.BfdSessionState_BFD_SESSION_STATE_ADMIN_DOWN:
		return "admindown"
	default:
		return "down"
	}
}
