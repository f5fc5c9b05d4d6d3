package bgp_test

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/ironlb/ironlb/bgp"
	"github.com/ironlb/ironlb/bgp/bgptest"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/netlab"
)

func TestMain(m *testing.M) {
	bgptest.Main() // the child speakers run here
	os.Exit(m.Run())
}

// Namespaces and addresses of these tests: unique in the repository.
const nsPrefix = "ilbbgp"

var (
	lanV4 = netip.MustParsePrefix("198.18.20.0/24")
	lanV6 = netip.MustParsePrefix("2001:db8:20::/64")
)

const (
	routerASN = 64512
	nodeASN   = 64513
)

// lab is a LAN with an FRR router ("rtr", first address) and nodes.
type lab struct {
	t     *testing.T
	net   *netlab.Lab
	rtr   *frr.Router
	dir   string
	nodes []*netlab.Host
}

// neighbor is one FRR neighbor statement.
type neighbor struct {
	addr     netip.Addr
	iface    string // unnumbered: the router's link to the node
	asn      uint32
	password string
	bfd      bool
}

// skipUnlessLab skips when namespaces or FRR are missing (not root, no
// netns, no frr package), saying why.
func skipUnlessLab(t *testing.T) {
	t.Helper()
	if err := netlab.Check(); err != nil {
		t.Skipf("BGP lab tests need network namespaces: %v", err)
	}
	if err := frr.Check(); err != nil {
		t.Skipf("BGP lab tests need FRR: %v", err)
	}
}

// newLab builds the LAN with n nodes, runs setup (more links, say) and
// starts FRR with a neighbor for each node address neighbors returns.
func newLab(t *testing.T, n int, neighbors func(nodes []*netlab.Host) []neighbor, setup ...func(*netlab.Lab) error) *lab {
	t.Helper()
	skipUnlessLab(t)
	netlab.Cleanup(nsPrefix)
	names := []string{"rtr"}
	for i := range n {
		names = append(names, fmt.Sprintf("n%d", i+1))
	}
	nl, err := netlab.New(nsPrefix, lanV4, lanV6, 1, names...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := nl.Close(); err != nil {
			t.Error(err)
		}
	})
	l := &lab{t: t, net: nl, dir: t.TempDir()}
	for _, name := range names[1:] {
		h := nl.Hosts[name]
		// Only the static address: a router advertisement (FRR sends
		// some) would add a SLAAC address the kernel prefers as source,
		// which the router does not know as a neighbor.
		if _, err := h.In("sysctl", "-qw", "net.ipv6.conf.all.accept_ra=0", "net.ipv6.conf.eth0.accept_ra=0"); err != nil {
			t.Fatal(err)
		}
		l.nodes = append(l.nodes, h)
	}
	for _, f := range setup {
		if err := f(nl); err != nil {
			t.Fatal(err)
		}
	}
	conf := frrConf(nl.Hosts["rtr"], neighbors(l.nodes))
	rtr, err := frr.Start(nl.Hosts["rtr"].Name, filepath.Join(l.dir, "frr"), conf)
	if err != nil {
		t.Fatal(err)
	}
	l.rtr = rtr
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("FRR logs:\n%s", rtr.Logs())
		}
		rtr.Close()
	})
	return l
}

func frrConf(rtr *netlab.Host, ns []neighbor) string {
	var out []frr.NeighborConf
	for _, n := range ns {
		out = append(out, frr.NeighborConf{Addr: n.addr, Interface: n.iface, ASN: n.asn, Password: n.password, BFD: n.bfd})
	}
	return frr.BGPConfig(routerASN, rtr.IPv4.Addr(), out)
}

// speaker starts a child speaker on node h; t.Cleanup kills it.
func (l *lab) speaker(h *netlab.Host) *bgptest.Proc {
	l.t.Helper()
	p, err := bgptest.Start(h.Name, filepath.Join(l.dir, h.Name+".log"), bgptest.Options{
		RouterID: h.IPv4.Addr(), ASN: nodeASN, Verbosity: 1,
		NodeIPv4: h.IPv4.Addr(), NodeIPv6: h.IPv6.Addr(),
	})
	if err != nil {
		l.t.Fatal(err)
	}
	l.t.Cleanup(func() {
		p.Kill()
		if l.t.Failed() {
			l.t.Logf("speaker %s log:\n%s", h.Name, p.LogTail(400))
		}
	})
	return p
}

// peer is the session from a node to the router over IPv4 or IPv6.
func (l *lab) peer(name string, v6 bool) bgp.PeerSpec {
	rtr := l.net.Hosts["rtr"]
	a := rtr.IPv4.Addr()
	if v6 {
		a = rtr.IPv6.Addr()
	}
	return bgp.PeerSpec{Name: name, Address: a, MyASN: nodeASN, PeerASN: routerASN, ConnectTime: time.Second}
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func route(prefix string, peers ...string) bgp.Route {
	return bgp.Route{Prefix: netip.MustParsePrefix(prefix), Peers: peers}
}

func hostRoute(a netip.Addr) netip.Prefix { return netip.PrefixFrom(a, a.BitLen()) }
