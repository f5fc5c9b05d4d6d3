package main

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/datapath"
	"github.com/ironlb/ironlb/test/labkit"
	"github.com/ironlb/ironlb/test/netlab"
)

// runFailover cuts links in the running lab runs times (see
// labkit.Lab.Failover) and prints what each client lost.
func runFailover(runs int) error {
	root, err := apiserver.Root()
	if err != nil {
		return err
	}
	l, err := labkit.LoadLab(filepath.Join(root, "bin", "lab", "lab.json"))
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	for i := range runs {
		step("run %d of %d: client connects to %s (layer 2), client2 to %s (BGP, BFD 300 ms x 3), a new connection every 10 ms each; cutting the link of the node answering for %s and of the node client2's flow is routed to", i+1, runs, l.LAN, l.Routed, l.LAN)
		cuts, err := l.Failover(ctx)
		for _, c := range cuts {
			fmt.Println("    cut " + c.String())
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// path says which node a client's request entered (the one answering ARP
// for the address, or the router's next hop for the client's flow), and
// what the pod's view of the source says kube-proxy did.
func path(lab *netlab.Lab, dp *datapath.Cluster, from *netlab.Host, vip netip.Addr, a datapath.Answer) string {
	entry, how := "", ""
	if mac, err := labkit.Resolve(from, vip, 300*time.Millisecond); err == nil {
		how = "answers ARP for " + vip.String()
		for _, n := range nodes {
			if lab.Hosts[n].MAC.String() == mac.String() {
				entry = n
			}
		}
	} else if via, err := labkit.RoutedVia(lab.Hosts["router"], from.IPv4.Addr(), vip); err == nil {
		how = "is the router's next hop for " + from.Name + "'s flow to " + vip.String()
		for _, n := range nodes {
			if lab.Hosts[n].IPv4.Addr() == via {
				entry = n
			}
		}
	}
	if entry == "" {
		return "the path: the entry node is unknown"
	}
	var did string
	switch {
	case a.From == from.IPv4.Addr():
		did = "the pod saw the client's own address (no SNAT)"
	case a.From == lab.Hosts[entry].IPv4.Addr():
		did = fmt.Sprintf("kube-proxy on %s DNATed it to the pod on %s and SNATed it to %s's address %s", entry, a.Node, entry, a.From)
	case dp.PodCIDR(entry).Contains(a.From):
		did = fmt.Sprintf("kube-proxy on %s DNATed it to the pod on the same node and masqueraded it to the node's pod-side address %s", entry, a.From)
	default:
		did = fmt.Sprintf("the pod saw source %s", a.From)
	}
	return fmt.Sprintf("the path: %s %s; %s", entry, how, did)
}

// fetch retries GET http://vip/ from host for up to 30 s.
func fetch(ctx context.Context, host *netlab.Host, vip netip.Addr) (string, error) {
	deadline := time.Now().Add(30 * time.Second)
	for {
		body, err := labkit.Get(host, vip, time.Second)
		if err == nil || time.Now().After(deadline) || ctx.Err() != nil {
			return body, err
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func indent(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("      " + l + "\n")
	}
	return b.String()
}
