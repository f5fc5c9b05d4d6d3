package labkit

import (
	"context"
	"net/netip"
	"testing"

	"github.com/ironlb/ironlb/test/apiserver"
	"github.com/ironlb/ironlb/test/netlab"
)

// BedConfig says what NewBed builds.
type BedConfig struct {
	// Prefix names the namespaces; LAN and LAN6 are their networks.
	Prefix    string
	LAN, LAN6 netip.Prefix
	// APIOn is this host's address on the LAN, where the API server
	// serves, as a control-plane host next to the nodes.
	APIOn netip.Prefix
	// Nodes get a Node object; Others are hosts only (clients, routers).
	Nodes, Others []string
	// APIServer starts the API server on an address (apiserver.NewBareOn,
	// apiserver.NewForKubelets, ...).
	APIServer func(addr string) (*apiserver.Env, error)
}

// NewBed builds a LAN of hosts, attaches this host to it, starts the API
// server there and registers the nodes; t's cleanup removes it all.
func NewBed(t testing.TB, c BedConfig) (*netlab.Lab, *apiserver.Env) {
	t.Helper()
	if err := netlab.Check(); err != nil {
		t.Fatal(err)
	}
	l, err := netlab.New(c.Prefix, c.LAN, c.LAN6, 11, append(append([]string{}, c.Nodes...), c.Others...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := l.Close(); err != nil {
			t.Error(err)
		}
	})
	if err := l.AttachThisHost(c.APIOn); err != nil {
		t.Fatal(err)
	}
	env, err := c.APIServer(c.APIOn.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	for _, n := range c.Nodes {
		if err := CreateNode(context.Background(), env.Client, n, l.Hosts[n]); err != nil {
			t.Fatal(err)
		}
	}
	return l, env
}
