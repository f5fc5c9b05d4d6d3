package l2

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// testNet is a two-host link: a "node" namespace where the Announcer runs
// and a "client" namespace playing the neighbour, joined by a veth pair.
//
// The namespaces are anonymous (held by file descriptors, never mounted
// under /var/run/netns), so they cannot collide with other tests or
// packages running in parallel and cannot be left behind: they disappear
// when the last descriptor and socket referring to them are closed, even if
// the test binary crashes. The link names carry a random suffix all the same
// so that logs of parallel tests can be told apart.
type testNet struct {
	node, client       netns.NsHandle
	nodeIf, clientIf   string
	nodeMAC, clientMAC net.HardwareAddr
	clientLL           netip.Addr
}

var (
	nodeV4   = netip.MustParsePrefix("198.18.0.1/24")
	clientV4 = netip.MustParsePrefix("198.18.0.2/24")
	nodeV6   = netip.MustParsePrefix("2001:db8:1::1/64")
	clientV6 = netip.MustParsePrefix("2001:db8:1::2/64")
)

// onThread runs fn on a goroutine locked to a fresh OS thread that is
// never unlocked, so the thread is discarded when fn returns: whatever
// namespace fn switched to can never leak into other goroutines.
func onThread(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		errc <- fn()
	}()
	return <-errc
}

// inNS runs fn inside ns (see onThread). Sockets created by fn stay in ns.
func inNS(ns netns.NsHandle, fn func() error) error {
	return onThread(func() error {
		if err := netns.Set(ns); err != nil {
			return fmt.Errorf("setns: %w", err)
		}
		return fn()
	})
}

func newNamespace(t *testing.T) netns.NsHandle {
	t.Helper()
	var ns netns.NsHandle
	err := onThread(func() error {
		var err error
		ns, err = netns.New()
		if err != nil {
			return err
		}
		// Addresses appear without DAD, so sockets can bind to them at once.
		for _, k := range []string{"all", "default"} {
			if err := sysctl("net/ipv6/conf/"+k+"/accept_dad", "0"); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatalf("new network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	return ns
}

func sysctl(path, value string) error {
	return os.WriteFile("/proc/sys/"+path, []byte(value), 0o644)
}

// newTestNet builds the two namespaces and the veth between them, with
// 198.18.0.1/24 + 2001:db8:1::1/64 on the node and .2 / ::2 on the client,
// links up and link-local addresses usable. It skips the test when not
// allowed to create namespaces.
func newTestNet(t *testing.T) *testNet {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create network namespaces")
	}
	suffix := make([]byte, 3)
	_, _ = rand.Read(suffix)
	tn := &testNet{
		node:     newNamespace(t),
		client:   newNamespace(t),
		nodeIf:   "l2n" + hex.EncodeToString(suffix),
		clientIf: "l2c" + hex.EncodeToString(suffix),
	}

	nh := netlinkHandle(t, tn.node)
	ch := netlinkHandle(t, tn.client)
	veth := &netlink.Veth{
		LinkAttrs:     netlink.LinkAttrs{Name: tn.nodeIf},
		PeerName:      tn.clientIf,
		PeerNamespace: netlink.NsFd(tn.client),
	}
	if err := nh.LinkAdd(veth); err != nil {
		t.Fatalf("add veth: %v", err)
	}
	tn.nodeMAC = setupLink(t, nh, tn.nodeIf, nodeV4, nodeV6)
	tn.clientMAC = setupLink(t, ch, tn.clientIf, clientV4, clientV6)
	waitLinkLocal(t, nh, tn.nodeIf)
	tn.clientLL = waitLinkLocal(t, ch, tn.clientIf)
	return tn
}

func netlinkHandle(t *testing.T, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatalf("netlink handle: %v", err)
	}
	t.Cleanup(h.Close)
	return h
}

func setupLink(t *testing.T, h *netlink.Handle, name string, prefixes ...netip.Prefix) net.HardwareAddr {
	t.Helper()
	link, err := h.LinkByName(name)
	if err != nil {
		t.Fatalf("link %s: %v", name, err)
	}
	for _, p := range prefixes {
		addAddr(t, h, name, p)
	}
	if lo, err := h.LinkByName("lo"); err == nil {
		_ = h.LinkSetUp(lo)
	}
	if err := h.LinkSetUp(link); err != nil {
		t.Fatalf("link %s up: %v", name, err)
	}
	return link.Attrs().HardwareAddr
}

func addAddr(t *testing.T, h *netlink.Handle, ifname string, p netip.Prefix) {
	t.Helper()
	link, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatalf("link %s: %v", ifname, err)
	}
	addr := &netlink.Addr{IPNet: prefixIPNet(p), Flags: unix.IFA_F_NODAD}
	if err := h.AddrAdd(link, addr); err != nil {
		t.Fatalf("add %s to %s: %v", p, ifname, err)
	}
}

func delAddr(t *testing.T, h *netlink.Handle, ifname string, p netip.Prefix) {
	t.Helper()
	link, err := h.LinkByName(ifname)
	if err != nil {
		t.Fatalf("link %s: %v", ifname, err)
	}
	if err := h.AddrDel(link, &netlink.Addr{IPNet: prefixIPNet(p)}); err != nil {
		t.Fatalf("delete %s from %s: %v", p, ifname, err)
	}
}

func prefixIPNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}

// waitLinkLocal waits until the interface has a usable (non-tentative)
// IPv6 link-local address, which the NDP sockets bind to.
func waitLinkLocal(t *testing.T, h *netlink.Handle, name string) netip.Addr {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		link, err := h.LinkByName(name)
		if err != nil {
			t.Fatalf("link %s: %v", name, err)
		}
		addrs, err := h.AddrList(link, netlink.FAMILY_V6)
		if err != nil {
			t.Fatalf("addresses of %s: %v", name, err)
		}
		for _, a := range addrs {
			ip, _ := netip.AddrFromSlice(a.IP)
			if ip.IsLinkLocalUnicast() && a.Flags&unix.IFA_F_TENTATIVE == 0 {
				return ip
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no usable link-local address on %s", name)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// clientNetlink returns a netlink handle in the client namespace, for tests
// that configure the client (e.g. to make it claim a VIP).
func (tn *testNet) clientNetlink(t *testing.T) *netlink.Handle {
	return netlinkHandle(t, tn.client)
}

func (tn *testNet) clientInterface(t *testing.T) *net.Interface {
	t.Helper()
	var ifi *net.Interface
	err := inNS(tn.client, func() error {
		var err error
		ifi, err = net.InterfaceByName(tn.clientIf)
		return err
	})
	if err != nil {
		t.Fatalf("client interface: %v", err)
	}
	return ifi
}
