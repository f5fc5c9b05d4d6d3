package speaker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/go-logr/logr"
	"github.com/vishvananda/netlink"

	"github.com/ironlb/ironlb/l2"
)

// announcerSet keeps one announcer per interface, created on first use
// and forgotten when it stops for good (its interface went away), so that
// a later pass creates it anew once the interface is back.
type announcerSet struct {
	ctx    context.Context // the announcers' Run context; set before use
	create func(iface string) (*l2.Announcer, error)
	onStop func()
	log    logr.Logger

	mu     sync.Mutex
	byName map[string]*l2.Announcer
}

func (s *announcerSet) get(iface string) (*l2.Announcer, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if a, ok := s.byName[iface]; ok {
		return a, nil
	}
	a, err := s.create(iface)
	if err != nil {
		return nil, fmt.Errorf("interface %q: %w", iface, err)
	}
	s.byName[iface] = a
	go func() {
		err := a.Run(s.ctx)
		_ = a.Close()
		s.mu.Lock()
		if s.byName[iface] == a {
			delete(s.byName, iface)
		}
		s.mu.Unlock()
		if s.ctx.Err() == nil {
			s.log.Error(err, "announcer stopped; it is recreated when the interface is usable again", "interface", iface)
			s.onStop()
		}
	}()
	return a, nil
}

func (s *announcerSet) all() []*l2.Announcer {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*l2.Announcer, 0, len(s.byName))
	for _, a := range s.byName {
		out = append(out, a)
	}
	return out
}

// announcing counts the distinct addresses answered on any interface.
func (s *announcerSet) announcing() int { return len(announcingOn(s.all())) }

// announcingOn is the set of addresses anns answer for now.
func announcingOn[A Announcer](anns []A) map[netip.Addr]bool {
	out := map[netip.Addr]bool{}
	for _, a := range anns {
		for _, ip := range a.Announcing() {
			out[ip] = true
		}
	}
	return out
}

// watchLinks calls changed with the name of every link that changes, so
// an interface that appears or comes up later is announced on without
// waiting for the retry.
func watchLinks(ctx context.Context, log logr.Logger, changed func(iface string)) {
	opts := netlink.LinkSubscribeOptions{ErrorCallback: func(err error) {
		log.V(1).Info("link updates", "error", err.Error())
	}}
	updates := make(chan netlink.LinkUpdate, 64)
	if err := netlink.LinkSubscribeWithOptions(updates, ctx.Done(), opts); err != nil {
		log.Error(err, "cannot watch links; interfaces are retried periodically")
		return
	}
	for {
		select {
		case <-ctx.Done():
			return
		case u, ok := <-updates:
			if !ok {
				return
			}
			changed(u.Attrs().Name)
		}
	}
}

// interfaceOf finds the interface holding ip.
func interfaceOf(ip netip.Addr) ([]string, error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for _, ifi := range ifs {
		addrs, err := ifi.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr() == ip {
				return []string{ifi.Name}, nil
			}
		}
	}
	return nil, fmt.Errorf("no interface holds the node address %s", ip)
}
