package speaker

import (
	"testing"

	"github.com/ironlb/ironlb/bgp"
	"github.com/ironlb/ironlb/speaker/core"
)

// TestWaitingFor: a link event is worth a pass for an interface layer 2
// could not use, and for the link or VRF device of a BGP peer (which may
// be waiting for it to appear), not for others.
func TestWaitingFor(t *testing.T) {
	r := &Reconciler{missing: map[string]bool{"eth2": true}}
	r.lastBGP = &core.BGPAction{Desired: core.BGPDesired{Peers: []bgp.PeerSpec{{Name: "tor", Interface: "up0"}, {Name: "edge", VRF: "fabric"}}}}
	for iface, want := range map[string]bool{"eth2": true, "up0": true, "fabric": true, "eth0": false} {
		if got := r.WaitingFor(iface); got != want {
			t.Errorf("WaitingFor(%s) = %v, want %v", iface, got, want)
		}
	}
}
