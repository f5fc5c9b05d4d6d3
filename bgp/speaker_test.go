package bgp

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// TestSpeakerLocal runs a speaker without peers (no sockets at all):
// Start's checks, SetRoutes bookkeeping, metrics, Stop.
func TestSpeakerLocal(t *testing.T) {
	ctx := context.Background()
	if err := New(testr.New(t), Options{ASN: 64513}).Start(ctx); err == nil || !strings.Contains(err.Error(), "router ID") {
		t.Errorf("start without router ID: %v", err)
	}
	reg := prometheus.NewPedanticRegistry()
	s := New(testr.New(t), Options{RouterID: netip.MustParseAddr("198.18.20.2"), ASN: 64513, Registerer: reg})
	if err := s.SetRoutes(ctx, nil); err == nil {
		t.Error("SetRoutes before Start: no error")
	}
	if err := s.Start(ctx); err != nil {
		t.Fatal(err)
	}
	defer s.Stop()
	r := func(p string, peers ...string) Route { return Route{Prefix: netip.MustParsePrefix(p), Peers: peers} }
	steps := []struct {
		routes          []Route
		adds, withdraws float64
		announced       float64
	}{
		{[]Route{r("198.18.21.1/32", "a"), r("2001:db8:21::1/128", "a")}, 2, 0, 2},
		{[]Route{r("198.18.21.1/32", "a"), r("2001:db8:21::1/128", "a")}, 2, 0, 2}, // unchanged: nothing sent
		{[]Route{r("198.18.21.1/32", "a"), {Prefix: netip.MustParsePrefix("2001:db8:21::1/128"), Peers: []string{"a"}, Attrs: Attrs{Communities: []uint32{1}}}}, 3, 0, 2},
		{[]Route{r("198.18.21.2/32", "a")}, 4, 2, 1},
	}
	for i, st := range steps {
		if err := s.SetRoutes(ctx, st.routes); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got := testutil.ToFloat64(s.m.updates.WithLabelValues("add")); got != st.adds {
			t.Errorf("step %d: adds %v, want %v", i, got, st.adds)
		}
		if got := testutil.ToFloat64(s.m.updates.WithLabelValues("withdraw")); got != st.withdraws {
			t.Errorf("step %d: withdraws %v, want %v", i, got, st.withdraws)
		}
		if got := testutil.ToFloat64(s.m.announced); got != st.announced {
			t.Errorf("step %d: announced %v, want %v", i, got, st.announced)
		}
	}
	if err := s.SetRoutes(ctx, []Route{r("198.18.21.2/32", "a"), r("198.18.21.2/32", "a")}); err == nil {
		t.Error("peer named twice for a prefix: no error")
	}
	if err := s.SetPeers(ctx, []PeerSpec{{Name: "a", Address: netip.MustParseAddr("198.18.20.1")}}); err == nil || !strings.Contains(err.Error(), `peer "a"`) {
		t.Errorf("peer without ASN: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg); err != nil || n != 3 {
		t.Errorf("gathered %d metrics (%v), want 3 (two update ops, announced prefixes)", n, err)
	}
	s.Stop()
	if n, _ := testutil.GatherAndCount(reg); n != 0 {
		t.Errorf("after Stop: %d metrics still registered", n)
	}
}
