package frr

import (
	"context"
	"fmt"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/netlab"
)

// TestTwoRouters peers two FRR instances (with BFD) and checks the
// helpers against what they must see, and that Close leaves no daemon.
func TestTwoRouters(t *testing.T) {
	if err := netlab.Check(); err != nil {
		t.Skipf("needs network namespaces: %v", err)
	}
	if err := Check(); err != nil {
		t.Skip(err)
	}
	const prefix = "ilbfrr"
	netlab.Cleanup(prefix)
	lab, err := netlab.New(prefix, netip.MustParsePrefix("198.18.22.0/24"), netip.MustParsePrefix("2001:db8:22::/64"), 1, "r1", "r2")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = lab.Close() })
	r1h, r2h := lab.Hosts["r1"], lab.Hosts["r2"]
	conf := func(asn, peerASN int, me, peer *netlab.Host, network string) string {
		return fmt.Sprintf(`router bgp %d
 bgp router-id %s
 no bgp ebgp-requires-policy
 no bgp network import-check
 neighbor %s remote-as %d
 neighbor %s timers connect 1
 neighbor %s bfd
 address-family ipv4 unicast
  network %s
 exit-address-family
exit
`, asn, me.IPv4.Addr(), peer.IPv4.Addr(), peerASN, peer.IPv4.Addr(), peer.IPv4.Addr(), network)
	}
	dir := t.TempDir()
	var routers []*Router
	for _, c := range []struct {
		h, peer        *netlab.Host
		asn, peerASN   int
		network, label string
	}{{r1h, r2h, 64601, 64602, "198.18.23.0/24", "r1"}, {r2h, r1h, 64602, 64601, "198.18.24.0/24", "r2"}} {
		r, err := Start(c.h.Name, filepath.Join(dir, c.label), conf(c.asn, c.peerASN, c.h, c.peer, c.network))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(r.Close)
		routers = append(routers, r)
	}
	r1 := routers[0]
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := r1.WaitRoute(ctx, netip.MustParsePrefix("198.18.24.0/24"), NextHops(r2h.IPv4.Addr()))
	if err != nil {
		t.Fatal(err, r1.Logs())
	}
	t.Logf("route from r2 installed on r1 after %v", d)
	ns, err := r1.Neighbors()
	if err != nil {
		t.Fatal(err)
	}
	if n := ns[r2h.IPv4.Addr()]; !n.Established() || n.Since.IsZero() || n.PrefixesReceived != 1 || n.Connections != 1 {
		t.Errorf("neighbor r2: %+v", n)
	}
	paths, err := r1.BGPPrefix(netip.MustParsePrefix("198.18.24.0/24"))
	if err != nil || len(paths) != 1 || paths[0].From != r2h.IPv4.Addr() || !paths[0].Best || paths[0].ASPath != "64602" {
		t.Errorf("paths %+v, %v", paths, err)
	}
	if _, err := Poll(ctx, 50*time.Millisecond, func() (bool, error) {
		ps, err := r1.BFDPeers()
		return len(ps) == 1 && ps[0].Status == "up" && ps[0].Peer == r2h.IPv4.Addr(), err
	}); err != nil {
		t.Error("BFD:", err)
	}
	for _, r := range routers {
		r.Close()
	}
	out, _ := exec.Command("pgrep", "-af", dir).CombinedOutput()
	if s := strings.TrimSpace(string(out)); s != "" {
		t.Errorf("FRR processes left after Close:\n%s", s)
	}
}

func TestBFDBlocks(t *testing.T) {
	conf := "router bgp 1\n neighbor x bfd\nexit\nbfd\n profile fast\n  receive-interval 100\n exit\nexit\nline vty\n"
	want := "bfd\n profile fast\n  receive-interval 100\n exit\nexit\n"
	if got := bfdBlocks(conf); got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
