package e2e

import (
	"context"
	"flag"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/frr"
	"github.com/ironlb/ironlb/test/labkit"
)

const (
	routerASN = 64512
	nodeASN   = 64513
)

// bgpPool is routed, not on the LAN: only BGP makes it reachable.
var bgpPool = v1beta1.AddressRange("198.19.10.0/24")

var bgpOutage = flag.Duration("bgp-outage", 5*time.Second, "how long the API server is frozen in TestBGPEndToEnd (make chaos uses 60s)")

// startRouter runs FRR in the "router" host, peering with every node over
// eBGP, and makes it the nodes' default gateway (for the replies to
// clients behind it).
func (cl *cluster) startRouter(password string, bfd bool) *frr.Router {
	return cl.startFRR("router", password, func(n *frr.NeighborConf) { n.BFD = bfd })
}

// startFRR runs FRR on the LAN host name as a router peering with every
// node (with password, each neighbor adjusted by neighbor), and routes the
// nodes' default traffic through "router".
func (cl *cluster) startFRR(name, password string, neighbor func(*frr.NeighborConf)) *frr.Router {
	cl.t.Helper()
	if err := frr.Check(); err != nil {
		cl.t.Fatalf("BGP e2e needs FRR (make deps installs it): %v", err)
	}
	rtr := cl.lab.Hosts[name]
	var ns []frr.NeighborConf
	for name, h := range cl.lab.Hosts {
		if _, isNode := cl.speakers[name]; !isNode {
			continue
		}
		if _, err := h.In("ip", "route", "replace", "default", "via", cl.lab.Hosts["router"].IPv4.Addr().String()); err != nil {
			cl.t.Fatal(err)
		}
		n := frr.NeighborConf{Addr: h.IPv4.Addr(), ASN: nodeASN, Password: password}
		neighbor(&n)
		ns = append(ns, n)
	}
	r, err := frr.Start(rtr.Name, filepath.Join(cl.dir, "frr-"+name), frr.BGPConfig(routerASN, rtr.IPv4.Addr(), ns))
	if err != nil {
		cl.t.Fatal(err)
	}
	cl.t.Cleanup(func() {
		if cl.t.Failed() {
			cl.t.Logf("FRR logs of %s:\n%s", name, tail(r.Logs(), 3000))
		}
		r.Close()
	})
	return r
}

// bgpSetup creates the BGP configuration: a peer with its password in a
// Secret of the speakers' namespace, a pool and an advertisement with
// communities.
func (cl *cluster) bgpSetup(password string, peer func(*v1beta1.BGPPeerSpec)) {
	cl.t.Helper()
	objs := []client.Object{
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: speakerNamespace}},
		&corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: speakerNamespace, Name: "bgp-password"},
			Data: map[string][]byte{"password": []byte(password)}},
	}
	spec := v1beta1.BGPPeerSpec{
		MyASN: nodeASN, PeerASN: routerASN, PeerAddress: v1beta1.IPAddress(cl.lab.Hosts["router"].IPv4.Addr().String()),
		PasswordSecret: &v1beta1.SecretKeyRef{Namespace: speakerNamespace, Name: "bgp-password"},
	}
	if peer != nil {
		peer(&spec)
	}
	objs = append(objs,
		&v1beta1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "router"}, Spec: spec},
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "routed"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{bgpPool}}},
		&v1beta1.BGPAdvertisement{ObjectMeta: metav1.ObjectMeta{Name: "routed"}, Spec: v1beta1.BGPAdvertisementSpec{
			IPAddressPools: []v1beta1.PoolName{"routed"},
			Communities:    []v1beta1.CommunityValue{"64512:100", "large:64512:1:2"},
		}},
	)
	for _, o := range objs {
		if err := cl.c.Create(cl.ctx, o); err != nil {
			cl.t.Fatal(err)
		}
	}
}

// established counts the router's established sessions.
func established(r *frr.Router) (int, error) {
	ns, err := r.Neighbors()
	n := 0
	for _, nb := range ns {
		if nb.Established() {
			n++
		}
	}
	return n, err
}

func (cl *cluster) nodeAddrs(names ...string) []netip.Addr {
	var out []netip.Addr
	for _, n := range names {
		out = append(out, cl.lab.Hosts[n].IPv4.Addr())
	}
	return out
}

func within(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// TestBGPEndToEnd runs the speakers against a real FRR router: a wrong
// password never establishes, the right one (a Secret update) does; a
// Service's address reaches FRR from all three nodes (ECMP) with its
// communities; a client behind the router reaches the Service; the node
// status and the Service condition say so; externalTrafficPolicy Local
// narrows the next hops to the endpoint's node; deleting the Service
// withdraws the route.
func TestBGPEndToEnd(t *testing.T) {
	cl := newCluster(t, "node1", "node2", "node3")
	rtr := cl.startRouter("s3cret", false)
	cl.bgpSetup("wrong", nil)

	time.Sleep(5 * time.Second) // GoBGP dials ~2 s after being configured
	if n, err := established(rtr); err != nil || n != 0 {
		t.Fatalf("%d sessions established with a wrong password (%v)", n, err)
	}
	var sec corev1.Secret
	if err := cl.c.Get(cl.ctx, types.NamespacedName{Namespace: speakerNamespace, Name: "bgp-password"}, &sec); err != nil {
		t.Fatal(err)
	}
	sec.Data["password"] = []byte("s3cret")
	if err := cl.c.Update(cl.ctx, &sec); err != nil {
		t.Fatal(err)
	}
	if _, err := frr.Poll(within(t, 20*time.Second), 100*time.Millisecond, func() (bool, error) {
		n, err := established(rtr)
		return n == 3, err
	}); err != nil {
		t.Fatalf("sessions not established after the password was fixed: %v", err)
	}

	ip := cl.service("web")
	assigned := time.Now()
	prefix := netip.PrefixFrom(ip, 32)
	d, err := rtr.WaitRoute(within(t, 10*time.Second), prefix, frr.NextHops(cl.nodeAddrs("node1", "node2", "node3")...))
	if err != nil {
		t.Fatalf("%s not in FRR with 3 next hops: %v", prefix, err)
	}
	t.Logf("IP assigned -> ECMP route with 3 next hops in FRR's RIB: %s (route seen %s after polling began)", time.Since(assigned), d)
	paths, err := rtr.BGPPrefix(prefix)
	if err != nil || len(paths) != 3 {
		t.Fatalf("FRR has %d paths for %s (%v), want 3", len(paths), prefix, err)
	}
	for _, p := range paths {
		if p.Communities != "64512:100" || p.LargeCommunities != "64512:1:2" {
			t.Errorf("path from %s: communities %q large %q, want 64512:100 and 64512:1:2", p.From, p.Communities, p.LargeCommunities)
		}
	}

	// A client behind the router reaches a listener on the nodes.
	client2, err := cl.lab.AddBehind("client2", "router", netip.MustParsePrefix("203.0.113.0/30"))
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"node1", "node2", "node3"} {
		if err := labkit.ServePods(cl.ctx, cl.lab.Hosts[n], n, ip); err != nil {
			t.Fatal(err)
		}
	}
	body, err := labkit.Get(client2, ip, 3*time.Second)
	if err != nil || !strings.HasPrefix(body, "hello from node") {
		t.Fatalf("client behind the router: GET http://%s/ = %q, %v", ip, body, err)
	}

	// The API server freezes: sessions and routes stay as they are.
	before, err := rtr.Neighbors()
	if err != nil {
		t.Fatal(err)
	}
	// A client behind the router pings throughout.
	pings := startPing(t, client2, ip, 10*time.Millisecond)
	thaw := cl.freezeAPIServer()
	checks := 0
	for end := time.Now().Add(*bgpOutage); time.Now().Before(end); time.Sleep(250 * time.Millisecond) {
		nh, err := rtr.Routes(frr.IPv4)
		if err != nil || len(nh[prefix]) != 3 {
			t.Fatalf("during the API outage FRR has next hops %v for %s (%v)", nh[prefix], prefix, err)
		}
		checks++
	}
	thaw()
	if sent, lost, _ := pings.Stop(); lost > 0 || sent < int(*bgpOutage/(20*time.Millisecond)) {
		t.Errorf("during the API outage %d of %d pings from behind the router were lost", lost, sent)
	} else {
		logRecord(t, "API server frozen %s (SIGSTOP): the router had the 3 next hops in all %d checks of its RIB; %d pings 10 ms apart from a client behind the router, none lost", *bgpOutage, checks, sent)
	}

	cl.waitAnnounced("web", metav1.ConditionTrue, "BGP from 3 nodes (node1, node2, node3)")
	cl.waitNodeStatus("node1", func(st v1beta1.BGPNodeStatusStatus) bool {
		return st.Established == 1 && st.Prefixes == 1 && len(st.Peers) == 1 &&
			st.Peers[0].State == "established" && st.Peers[0].PrefixesSent == 1 && st.Peers[0].Since != nil
	})

	// A peer in a VRF node1 lacks: node1 says so in its status, by
	// condition and session, and its working session stays up (checked
	// with the others below); deleting the peer clears the condition.
	ghost := &v1beta1.BGPPeer{ObjectMeta: metav1.ObjectMeta{Name: "ghost"}, Spec: v1beta1.BGPPeerSpec{
		MyASN: nodeASN, PeerASN: routerASN, PeerAddress: "198.18.0.250", VRF: "fabric",
		NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"kubernetes.io/hostname": "node1"}}},
	}}
	if err := cl.c.Create(cl.ctx, ghost); err != nil {
		t.Fatal(err)
	}
	cl.waitNodeStatus("node1", func(st v1beta1.BGPNodeStatusStatus) bool {
		c := meta.FindStatusCondition(st.Conditions, v1beta1.ConditionPeersConfigured)
		return st.Established == 1 && c != nil && c.Status == metav1.ConditionFalse && c.Reason == v1beta1.ReasonVRFNotFound &&
			strings.Contains(c.Message, "node node1") && strings.Contains(c.Message, `peer "ghost": VRF "fabric" does not exist`)
	})
	if err := cl.c.Delete(cl.ctx, ghost); err != nil {
		t.Fatal(err)
	}
	cl.waitNodeStatus("node1", func(st v1beta1.BGPNodeStatusStatus) bool {
		c := meta.FindStatusCondition(st.Conditions, v1beta1.ConditionPeersConfigured)
		return st.Established == 1 && len(st.Peers) == 1 && c != nil && c.Status == metav1.ConditionTrue
	})

	// externalTrafficPolicy Local: only the endpoint's node.
	var svc corev1.Service
	if err := cl.c.Get(cl.ctx, types.NamespacedName{Namespace: "default", Name: "web"}, &svc); err != nil {
		t.Fatal(err)
	}
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	if err := cl.c.Update(cl.ctx, &svc); err != nil {
		t.Fatal(err)
	}
	cl.endpoints("web", "node2")
	if _, err := rtr.WaitRoute(within(t, 10*time.Second), prefix, frr.NextHops(cl.nodeAddrs("node2")...)); err != nil {
		t.Fatalf("with ETP Local the route should point at node2 only: %v", err)
	}
	cl.endpoints("web", "node3")
	if _, err := rtr.WaitRoute(within(t, 10*time.Second), prefix, frr.NextHops(cl.nodeAddrs("node3")...)); err != nil {
		t.Fatalf("the route did not follow the endpoint to node3: %v", err)
	}

	// Nothing of the above (a Service changing, its policy, the API
	// outage) reset a session.
	after, err := rtr.Neighbors()
	if err != nil {
		t.Fatal(err)
	}
	for a, nb := range before {
		if after[a].Connections != nb.Connections || !after[a].Established() {
			t.Errorf("session with %s: %d connections before, %d after (%s)", a, nb.Connections, after[a].Connections, after[a].State)
		}
	}

	if err := cl.c.Delete(cl.ctx, &svc); err != nil {
		t.Fatal(err)
	}
	if _, err := rtr.WaitRoute(within(t, 10*time.Second), prefix, func(nh []netip.Addr) bool { return len(nh) == 0 }); err != nil {
		t.Fatalf("route not withdrawn after the Service was deleted: %v", err)
	}
}

// waitNodeStatus waits until node's BGPNodeStatus satisfies ok.
func (cl *cluster) waitNodeStatus(node string, ok func(v1beta1.BGPNodeStatusStatus) bool) {
	cl.t.Helper()
	var st v1beta1.BGPNodeStatus
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if err := cl.c.Get(cl.ctx, types.NamespacedName{Name: node}, &st); err == nil && ok(st.Status) {
			return
		}
	}
	cl.t.Fatalf("BGPNodeStatus %s: %+v", node, st.Status)
}
