// Package netlab builds the project's own test hosts: network namespaces
// on one bridge acting as nodes and clients of a LAN, with iproute2. Every
// namespace it creates is removed by Close, also after a failure; names
// carry a prefix so leftovers of a killed run can be found and removed
// (Cleanup).
package netlab

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/ironlb/ironlb/internal/netnsrun"
)

// Host is one namespace attached to the LAN.
type Host struct {
	Name   string // namespace name
	Link   string // its interface on the LAN
	IPv4   netip.Prefix
	IPv6   netip.Prefix
	MAC    net.HardwareAddr
	parent *Lab
}

// Lab is a LAN: a bridge in its own namespace and the hosts on it.
type Lab struct {
	Prefix string
	Hosts  map[string]*Host
	bridge string // namespace holding the bridge
	made   []string
	links  int // bridge ports added by AddLink
	// attached is this host's link into the LAN (AttachThisHost).
	attached string
	// sysctls holds the host-wide settings New raised, to restore.
	sysctls map[string]string
}

// Check says in one sentence why labs cannot run here, or nil.
func Check() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("network namespaces need root: run as root (sudo)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("the `ip` command (Debian package iproute2) is missing: apt-get install -y iproute2")
	}
	if out, err := exec.Command("ip", "netns", "list").CombinedOutput(); err != nil {
		return fmt.Errorf("this kernel or sandbox has no network namespace support: %s", strings.TrimSpace(string(out)))
	}
	return nil
}

// Run runs a command and returns its combined output.
func Run(args ...string) (string, error) {
	var out bytes.Buffer
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return out.String(), nil
}

// In runs a command inside a host's namespace.
func (h *Host) In(args ...string) (string, error) {
	return Run(append([]string{"ip", "netns", "exec", h.Name}, args...)...)
}

// New makes a LAN (IPv4 subnet v4, IPv6 subnet v6) with the named hosts,
// host i getting address number base+i in both subnets.
func New(prefix string, v4, v6 netip.Prefix, base int, names ...string) (*Lab, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	l := &Lab{Prefix: prefix, Hosts: map[string]*Host{}, bridge: prefix + "lan"}
	if err := l.raiseNeighLimits(len(names)); err != nil {
		return nil, err
	}
	if err := l.build(v4, v6, base, names); err != nil {
		_ = l.Close()
		return nil, err
	}
	return l, nil
}

// bigLab is the size from which New raises the neighbour table limits.
const bigLab = 20

// raiseNeighLimits makes room in the kernel's neighbour (ARP/NDP) tables
// for a lab of n hosts. Those tables are shared by every namespace, and
// their default limit (gc_thresh3 = 1024 entries) is far below what 50
// hosts that all talk to each other need (50² entries, plus the clients'
// entries for every address they resolve). At the limit the kernel drops
// entries and refuses new ones ("neighbour table overflow"): heartbeats
// go unsent and peers look dead, which no real cluster of separate
// machines would see. Raised only, and restored by Close.
func (l *Lab) raiseNeighLimits(n int) error {
	if n < bigLab {
		return nil // the defaults hold a few thousand entries: plenty
	}
	need := 2*(n+2)*(n+2) + 8192
	want := map[string]int{"gc_thresh1": need, "gc_thresh2": 2 * need, "gc_thresh3": 4 * need}
	for _, fam := range []string{"ipv4", "ipv6"} {
		for _, k := range []string{"gc_thresh3", "gc_thresh2", "gc_thresh1"} { // keep 1 ≤ 2 ≤ 3 throughout
			path := "/proc/sys/net/" + fam + "/neigh/default/" + k
			b, err := os.ReadFile(path)
			if err != nil {
				return fmt.Errorf("neighbour table limits: %w", err)
			}
			cur, _ := strconv.Atoi(strings.TrimSpace(string(b)))
			if cur >= want[k] {
				continue
			}
			if err := os.WriteFile(path, []byte(strconv.Itoa(want[k])), 0o644); err != nil {
				return fmt.Errorf("neighbour table limits: %w", err)
			}
			if l.sysctls == nil {
				l.sysctls = map[string]string{}
			}
			l.sysctls[path] = strings.TrimSpace(string(b))
		}
	}
	return nil
}

func (l *Lab) addNS(name string) error {
	if _, err := Run("ip", "netns", "add", name); err != nil {
		return err
	}
	l.made = append(l.made, name)
	_, err := Run("ip", "-n", name, "link", "set", "lo", "up")
	return err
}

func (l *Lab) build(v4, v6 netip.Prefix, base int, names []string) error {
	if err := l.addNS(l.bridge); err != nil {
		return err
	}
	steps := [][]string{
		// No multicast snooping: IPv6 neighbour solicitations go to
		// solicited-node groups, and a snooping bridge without a querier
		// may not forward them to the member that answers.
		{"ip", "-n", l.bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0"},
		{"ip", "-n", l.bridge, "link", "set", "br0", "up"},
		{"ip", "netns", "exec", l.bridge, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"},
	}
	for _, s := range steps {
		if _, err := Run(s...); err != nil {
			return err
		}
	}
	for i, n := range names {
		h := &Host{Name: l.Prefix + n, Link: "eth0", parent: l}
		if err := l.addNS(h.Name); err != nil {
			return err
		}
		a4 := nth(v4.Addr(), base+i)
		a6 := nth(v6.Addr(), base+i)
		h.IPv4 = netip.PrefixFrom(a4, v4.Bits())
		h.IPv6 = netip.PrefixFrom(a6, v6.Bits())
		peer := fmt.Sprintf("v%d", i)
		for _, s := range [][]string{
			{"ip", "-n", h.Name, "link", "add", "eth0", "type", "veth", "peer", "name", peer, "netns", l.bridge},
			{"ip", "-n", l.bridge, "link", "set", peer, "master", "br0", "up"},
			{"ip", "netns", "exec", h.Name, "sysctl", "-qw", "net.ipv6.conf.eth0.accept_dad=0"},
			{"ip", "netns", "exec", h.Name, "sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"},
			{"ip", "-n", h.Name, "addr", "add", h.IPv4.String(), "dev", "eth0"},
			{"ip", "-n", h.Name, "addr", "add", h.IPv6.String(), "dev", "eth0", "nodad"},
			{"ip", "-n", h.Name, "link", "set", "eth0", "up"},
		} {
			if _, err := Run(s...); err != nil {
				return err
			}
		}
		ifi, err := InNS(h.Name, func() (*net.Interface, error) { return net.InterfaceByName("eth0") })
		if err != nil {
			return err
		}
		h.MAC = ifi.HardwareAddr
		l.Hosts[n] = h
	}
	return nil
}

// AttachThisHost plugs this process's own network namespace into the LAN
// with address addr, as a machine next to the nodes (a control-plane
// host): a server here bound to addr is reachable from every host of the
// lab. The link goes with the lab's bridge namespace on Close.
func (l *Lab) AttachThisHost(addr netip.Prefix) error {
	name := l.Prefix + "host"
	for _, s := range [][]string{
		{"ip", "link", "add", name, "type", "veth", "peer", "name", "uplink", "netns", l.bridge},
		{"ip", "-n", l.bridge, "link", "set", "uplink", "master", "br0", "up"},
		{"ip", "addr", "add", addr.String(), "dev", name},
		{"ip", "link", "set", name, "up"},
	} {
		if _, err := Run(s...); err != nil {
			return err
		}
		l.attached = name
	}
	return nil
}

// AddLink attaches one more interface of host (named name, up, with no
// address) to the LAN, the way a second NIC or a late VLAN shows up on a
// node, and returns its MAC.
func (l *Lab) AddLink(host, name string) (net.HardwareAddr, error) {
	h, ok := l.Hosts[host]
	if !ok {
		return nil, fmt.Errorf("no host %q", host)
	}
	l.links++
	port := fmt.Sprintf("x%d", l.links)
	for _, s := range [][]string{
		{"ip", "-n", h.Name, "link", "add", name, "type", "veth", "peer", "name", port, "netns", l.bridge},
		{"ip", "-n", l.bridge, "link", "set", port, "master", "br0", "up"},
		{"ip", "-n", h.Name, "link", "set", name, "up"},
	} {
		if _, err := Run(s...); err != nil {
			return nil, err
		}
	}
	ifi, err := InNS(h.Name, func() (*net.Interface, error) { return net.InterfaceByName(name) })
	if err != nil {
		return nil, err
	}
	return ifi.HardwareAddr, nil
}

// AddP2P links hosts a and b directly, the way a node is cabled to its
// top-of-rack router: a veth named aLink in a and bLink in b, up, with
// only the IPv6 link-local addresses the kernel gives them (no DAD, so
// they are usable at once).
func (l *Lab) AddP2P(a, aLink, b, bLink string) error {
	ha, ok := l.Hosts[a]
	if !ok {
		return fmt.Errorf("no host %q", a)
	}
	hb, ok := l.Hosts[b]
	if !ok {
		return fmt.Errorf("no host %q", b)
	}
	steps := [][]string{{"ip", "-n", ha.Name, "link", "add", aLink, "type", "veth", "peer", "name", bLink, "netns", hb.Name}}
	for _, e := range []struct{ ns, link string }{{ha.Name, aLink}, {hb.Name, bLink}} {
		steps = append(steps,
			[]string{"ip", "netns", "exec", e.ns, "sysctl", "-qw", "net.ipv6.conf." + e.link + ".accept_dad=0"},
			[]string{"ip", "-n", e.ns, "link", "set", e.link, "up"})
	}
	for _, s := range steps {
		if _, err := Run(s...); err != nil {
			return err
		}
	}
	return nil
}

// AddBehind makes a host that is not on the LAN but behind host via (a
// router): a point-to-point link in subnet v4, via getting the first
// address and forwarding, the new host the second address and a default
// route through via.
func (l *Lab) AddBehind(name, via string, v4 netip.Prefix) (*Host, error) {
	r, ok := l.Hosts[via]
	if !ok {
		return nil, fmt.Errorf("no host %q", via)
	}
	h := &Host{Name: l.Prefix + name, Link: "eth0", parent: l}
	if err := l.addNS(h.Name); err != nil {
		return nil, err
	}
	gw := nth(v4.Masked().Addr(), 1)
	h.IPv4 = netip.PrefixFrom(nth(v4.Masked().Addr(), 2), v4.Bits())
	l.links++
	rlink := fmt.Sprintf("to%d", l.links)
	for _, s := range [][]string{
		{"ip", "-n", h.Name, "link", "add", "eth0", "type", "veth", "peer", "name", rlink, "netns", r.Name},
		{"ip", "-n", r.Name, "addr", "add", netip.PrefixFrom(gw, v4.Bits()).String(), "dev", rlink},
		{"ip", "-n", r.Name, "link", "set", rlink, "up"},
		{"ip", "netns", "exec", r.Name, "sysctl", "-qw", "net.ipv4.ip_forward=1"},
		{"ip", "-n", h.Name, "addr", "add", h.IPv4.String(), "dev", "eth0"},
		{"ip", "-n", h.Name, "link", "set", "eth0", "up"},
		{"ip", "-n", h.Name, "route", "add", "default", "via", gw.String()},
	} {
		if _, err := Run(s...); err != nil {
			return nil, err
		}
	}
	ifi, err := InNS(h.Name, func() (*net.Interface, error) { return net.InterfaceByName("eth0") })
	if err != nil {
		return nil, err
	}
	h.MAC = ifi.HardwareAddr
	l.Hosts[name] = h
	return h, nil
}

func nth(a netip.Addr, n int) netip.Addr {
	for range n {
		a = a.Next()
	}
	return a
}

// Close removes every namespace the lab made (links go with them).
func (l *Lab) Close() error {
	var errs []string
	// Removed here, not left to the bridge namespace's removal: the kernel
	// destroys a deleted namespace's links later, and a lab made right
	// after could not attach under the same name.
	if l.attached != "" {
		if out, err := Run("ip", "link", "del", l.attached); err != nil {
			errs = append(errs, strings.TrimSpace(out))
		}
		l.attached = ""
	}
	for i := len(l.made) - 1; i >= 0; i-- {
		if out, err := Run("ip", "netns", "del", l.made[i]); err != nil {
			errs = append(errs, strings.TrimSpace(out))
		}
	}
	// Lowest first, so that 1 ≤ 2 ≤ 3 holds at every step.
	for _, k := range []string{"gc_thresh1", "gc_thresh2", "gc_thresh3"} {
		for path, old := range l.sysctls {
			if strings.HasSuffix(path, k) {
				if err := os.WriteFile(path, []byte(old), 0o644); err != nil {
					errs = append(errs, err.Error())
				}
			}
		}
	}
	l.sysctls = nil
	if len(errs) > 0 {
		return fmt.Errorf("remove namespaces: %s", strings.Join(errs, "; "))
	}
	return nil
}

// Cleanup removes leftover namespaces whose names start with prefix.
func Cleanup(prefix string) {
	out, _ := Run("ip", "netns", "list")
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 && strings.HasPrefix(f[0], prefix) {
			_, _ = Run("ip", "netns", "del", f[0])
		}
	}
}

// InNS runs fn on a thread inside the named namespace; sockets fn opens
// stay in that namespace.
func InNS[T any](name string, fn func() (T, error)) (T, error) { return netnsrun.In(name, fn) }

// AddNamespace makes an empty namespace (loopback up) that Close removes,
// for a host wired by other means, such as a pod's namespace that a CNI
// plugin plugs into its node.
func (l *Lab) AddNamespace(name string) (*Host, error) {
	h := &Host{Name: l.Prefix + name, Link: "eth0", parent: l}
	if err := l.addNS(h.Name); err != nil {
		return nil, err
	}
	return h, nil
}

// RemoveNamespace removes a namespace the lab made, before Close.
func (l *Lab) RemoveNamespace(h *Host) error {
	i := slices.Index(l.made, h.Name)
	if i < 0 {
		return fmt.Errorf("namespace %s is not the lab's", h.Name)
	}
	if _, err := Run("ip", "netns", "del", h.Name); err != nil {
		return err
	}
	l.made = slices.Delete(l.made, i, i+1)
	return nil
}

// HTTPClient is an HTTP client whose connections are dialled inside the
// host's namespace, as a process there would dial them.
func (h *Host) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{Timeout: timeout, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return InNS(h.Name, func() (net.Conn, error) { return (&net.Dialer{}).DialContext(ctx, network, addr) })
		}}}
}
