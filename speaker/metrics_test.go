package speaker

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics(t *testing.T) {
	reg := prometheus.NewPedanticRegistry()
	count := map[string]int{"l2": 3}
	m := NewMetrics(reg, func() map[string]int { return count })
	m.takeover("failover")
	m.takeover("failover")
	var nilMetrics *Metrics
	nilMetrics.takeover("rebalance") // must not panic

	want := `
# HELP ironlb_announced Addresses this node announces, by protocol.
# TYPE ironlb_announced gauge
ironlb_announced{protocol="bgp"} 0
ironlb_announced{protocol="l2"} 3
# HELP ironlb_l2_takeovers_total Addresses this node took over from another node, by cause (failover: the previous owner is gone; rebalance: it is alive).
# TYPE ironlb_l2_takeovers_total counter
ironlb_l2_takeovers_total{cause="failover"} 2
ironlb_l2_takeovers_total{cause="rebalance"} 0
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want)); err != nil {
		t.Fatal(err)
	}
	// Read at scrape time: a change shows without any update call.
	count["l2"] = 5
	if err := testutil.GatherAndCompare(reg, strings.NewReader(strings.Replace(want, `protocol="l2"} 3`, `protocol="l2"} 5`, 1)), "ironlb_announced"); err != nil {
		t.Fatal(err)
	}
}
