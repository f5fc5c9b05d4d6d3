package netlab

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
)

// CutLink sets the host's LAN link down, as a pulled cable or a dead
// switch port would, and returns the function that plugs it back in.
//
// A link going down costs the host more than the link: the kernel drops
// every route through it (the default route too) and, with IPv6's
// keep_addr_on_down at 0, its global IPv6 addresses. restore brings the
// link up and puts back every address and main-table route the host had
// before the cut, then checks that nothing is missing, so a host can be
// cut and restored any number of times and stay the host it was.
func (h *Host) CutLink() (restore func() error, err error) {
	addrs, err := h.globalAddrs()
	if err != nil {
		return nil, err
	}
	routes, err := h.routes()
	if err != nil {
		return nil, err
	}
	if _, err := h.In("ip", "link", "set", h.Link, "down"); err != nil {
		return nil, err
	}
	return func() error {
		if _, err := h.In("ip", "link", "set", h.Link, "up"); err != nil {
			return err
		}
		now, err := h.globalAddrs()
		if err != nil {
			return err
		}
		for _, a := range addrs {
			if slices.Contains(now, a) {
				continue
			}
			args := []string{"ip", "addr", "add", a, "dev", h.Link}
			if strings.Contains(a, ":") {
				args = append(args, "nodad") // it was this host's before the cut
			}
			if _, err := h.In(args...); err != nil {
				return fmt.Errorf("%s: restore address %s: %w", h.Name, a, err)
			}
		}
		// Addresses first: a route through an IPv6 gateway needs the
		// prefix back.
		now, err = h.routes()
		if err != nil {
			return err
		}
		for _, r := range routes {
			if slices.Contains(now, r) {
				continue
			}
			w := strings.Fields(r) // the family first: "-4 default via ..."
			if _, err := h.In(append([]string{"ip", w[0], "route", "replace"}, w[1:]...)...); err != nil {
				return fmt.Errorf("%s: restore route %q: %w", h.Name, r, err)
			}
		}
		now, err = h.routes()
		if err != nil {
			return err
		}
		var missing []string
		for _, r := range routes {
			if !slices.Contains(now, r) {
				missing = append(missing, r)
			}
		}
		if len(missing) > 0 {
			return fmt.Errorf("%s: routes still missing after restoring its link: %q (now %q)", h.Name, missing, now)
		}
		return nil
	}, nil
}

// globalAddrs lists the link's global addresses as "addr/len".
func (h *Host) globalAddrs() ([]string, error) {
	out, err := h.In("ip", "-j", "addr", "show", "dev", h.Link)
	if err != nil {
		return nil, err
	}
	var links []struct {
		AddrInfo []struct {
			Local     string `json:"local"`
			PrefixLen int    `json:"prefixlen"`
			Scope     string `json:"scope"`
		} `json:"addr_info"`
	}
	if err := json.Unmarshal([]byte(out), &links); err != nil {
		return nil, fmt.Errorf("%s: ip -j addr: %w", h.Name, err)
	}
	var addrs []string
	for _, l := range links {
		for _, a := range l.AddrInfo {
			if a.Scope == "global" {
				addrs = append(addrs, fmt.Sprintf("%s/%d", a.Local, a.PrefixLen))
			}
		}
	}
	return addrs, nil
}

// routes lists the main table's IPv4 and IPv6 routes, each as the words
// `ip route replace` takes back. A multipath route's nexthop lines join
// their route.
func (h *Host) routes() ([]string, error) {
	var routes []string
	for _, family := range []string{"-4", "-6"} {
		out, err := h.In("ip", family, "route", "show", "table", "main")
		if err != nil {
			return nil, err
		}
		for _, line := range strings.Split(out, "\n") {
			switch {
			case strings.TrimSpace(line) == "":
			case (line[0] == ' ' || line[0] == '\t') && len(routes) > 0:
				routes[len(routes)-1] += " " + strings.TrimSpace(line)
			default:
				// "linkdown" is state, not a route attribute.
				routes = append(routes, family+" "+strings.Join(slices.DeleteFunc(strings.Fields(line), func(w string) bool { return w == "linkdown" }), " "))
			}
		}
	}
	return routes, nil
}
