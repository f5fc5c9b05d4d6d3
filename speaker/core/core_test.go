package core

import (
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ironlb/ironlb/bgp"
	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/speaker/announce"
)

// The test cluster: three nodes, a pool announced in layer 2 (one on
// eth1 only), one over BGP, one by nothing.
const (
	l2Pool    = "198.18.10.0/28"
	eth1Pool  = "198.18.11.0/28"
	bgpPool   = "198.18.20.0/28"
	plainPool = "198.18.30.0/28"
)

var nodeNames = []string{"n1", "n2", "n3"}

func objs() config.Objects {
	at := func(name string) metav1.ObjectMeta {
		return metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(1000, 0))}
	}
	pool := func(name, cidr string) v1beta1.IPAddressPool {
		return v1beta1.IPAddressPool{ObjectMeta: at(name), Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{v1beta1.AddressRange(cidr)}}}
	}
	return config.Objects{
		Pools: []v1beta1.IPAddressPool{pool("l2", l2Pool), pool("eth1", eth1Pool), pool("bgp", bgpPool), pool("plain", plainPool)},
		L2Advertisements: []v1beta1.L2Advertisement{
			{ObjectMeta: at("l2"), Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"l2"}}},
			{ObjectMeta: at("eth1"), Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"eth1"}, Interfaces: []string{"eth1"}}},
		},
		BGPPeers: []v1beta1.BGPPeer{{ObjectMeta: at("r1"), Spec: v1beta1.BGPPeerSpec{MyASN: 64512, PeerASN: 64513, PeerAddress: "10.0.0.254"}}},
		BGPAdvertisements: []v1beta1.BGPAdvertisement{
			{ObjectMeta: at("bgp"), Spec: v1beta1.BGPAdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"bgp"}}},
		},
	}
}

func parse(t *testing.T, o config.Objects) *config.Config {
	t.Helper()
	cfg, problems := config.Parse(o)
	if len(problems) > 0 {
		t.Fatalf("test configuration: %v", problems)
	}
	return cfg
}

func node(name string, mutate ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"name": name}}}
	n.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}
	n.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "10.0.0." + name[1:]}}
	for _, m := range mutate {
		m(n)
	}
	return n
}

func svc(name, ip string, mutate ...func(*Service)) *Service {
	s := &Service{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: name, Generation: 1}, IPs: []netip.Addr{netip.MustParseAddr(ip)}}
	for _, m := range mutate {
		m(s)
	}
	return s
}

func local(s *Service) { s.Local = true }

func slice(svcName string, nodes ...string) *discoveryv1.EndpointSlice {
	es := &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "ns", Name: svcName + "-x",
		Labels: map[string]string{discoveryv1.LabelServiceName: svcName}}}
	for _, n := range nodes {
		ready := true
		es.Endpoints = append(es.Endpoints, discoveryv1.Endpoint{NodeName: &n, Conditions: discoveryv1.EndpointConditions{Ready: &ready}})
	}
	return es
}

func allAlive(names ...string) map[string]bool {
	out := map[string]bool{}
	for _, n := range names {
		out[n] = true
	}
	return out
}

// cluster is one pass of every node over the same view.
type cluster struct {
	t      *testing.T
	in     Inputs // Self is set per node
	states map[string]State
	acts   map[string]Actions
}

func newCluster(t *testing.T, in Inputs) *cluster {
	if in.Config == nil {
		in.Config = parse(t, objs())
	}
	if in.Nodes == nil {
		for _, n := range nodeNames {
			in.Nodes = append(in.Nodes, node(n))
		}
	}
	if in.Alive == nil {
		in.Alive = allAlive(nodeNames...)
	}
	if in.Interfaces == nil {
		in.Interfaces = []string{"eth0"}
	}
	in.Settled = true
	in.Filter.Default = true
	return &cluster{t: t, in: in, states: map[string]State{}, acts: map[string]Actions{}}
}

// pass runs Step on every node whose speaker is alive.
func (c *cluster) pass() *cluster {
	c.acts = map[string]Actions{}
	for _, n := range nodeNames {
		if !c.in.Alive[n] {
			continue
		}
		in := c.in
		in.Self = n
		c.states[n], c.acts[n] = Step(c.states[n], in)
	}
	return c
}

// l2Owners lists the nodes given ip on some interface.
func (c *cluster) l2Owners(ip netip.Addr) (owners []string, ifaces []string) {
	for _, n := range nodeNames {
		for iface, u := range c.acts[n].L2 {
			if slices.Contains(u.IPs, ip) {
				owners = append(owners, n)
				ifaces = append(ifaces, iface)
			}
		}
	}
	return owners, ifaces
}

// owner is the one node given ip in layer 2.
func (c *cluster) owner(ip netip.Addr) string {
	c.t.Helper()
	owners, _ := c.l2Owners(ip)
	if len(owners) != 1 {
		c.t.Fatalf("%s is given to %v, want exactly one node", ip, owners)
	}
	return owners[0]
}

// verdicts collects every node's report: key → node → condition.
func (c *cluster) verdicts(wire func(node string) Wire) map[string]map[string]metav1.Condition {
	out := map[string]map[string]metav1.Condition{}
	for n, act := range c.acts {
		if act.Report == nil {
			continue
		}
		for _, v := range act.Report.Report(wire(n)) {
			if out[v.Key] == nil {
				out[v.Key] = map[string]metav1.Condition{}
			}
			out[v.Key][n] = v.Condition
		}
	}
	return out
}

// onWire: every node answers for what it was given.
func (c *cluster) onWire(node string) Wire {
	w := Wire{Announcing: map[netip.Addr]bool{}}
	for _, u := range c.acts[node].L2 {
		for _, ip := range u.IPs {
			w.Announcing[ip] = true
		}
	}
	return w
}

func ip(s string) netip.Addr { return netip.MustParseAddr(s) }

// TestReport covers every reason of the Announced condition, and that
// exactly one node writes it per Service.
func TestReport(t *testing.T) {
	excluded := func(n *corev1.Node) { n.Labels[ExcludeLabel] = "" }
	tests := []struct {
		name     string
		in       Inputs
		wire     func(c *cluster, node string) Wire
		key      string
		reason   string
		status   metav1.ConditionStatus
		writer   string // "" = the layer-2 owner
		contains string
	}{
		{name: "layer 2: the owner reports it once on the wire", key: "ns/a",
			in:     Inputs{Services: []*Service{svc("a", "198.18.10.1")}},
			reason: ReasonLayer2, status: metav1.ConditionTrue, contains: "198.18.10.1 on all interfaces (ARP)"},
		{name: "layer 2 on a named interface", key: "ns/a",
			in:     Inputs{Services: []*Service{svc("a", "198.18.11.1")}},
			reason: ReasonLayer2, status: metav1.ConditionTrue, contains: "198.18.11.1 on eth1 (ARP)"},
		{name: "BGP: the first announcing node reports", key: "ns/b",
			in:     Inputs{Services: []*Service{svc("b", "198.18.20.1")}},
			reason: ReasonBGP, status: metav1.ConditionTrue, writer: "n1", contains: "BGP from 3 nodes (n1, n2, n3)"},
		{name: "BGP skips a cordoned node while another can announce", key: "ns/b",
			in: Inputs{Services: []*Service{svc("b", "198.18.20.1")},
				Nodes: []*corev1.Node{node("n1", func(n *corev1.Node) { n.Spec.Unschedulable = true }), node("n2"), node("n3")}},
			reason: ReasonBGP, status: metav1.ConditionTrue, writer: "n2", contains: "BGP from 2 nodes (n2, n3)"},
		{name: "no advertisement: the lowest alive node reports", key: "ns/c",
			in:     Inputs{Services: []*Service{svc("c", "198.18.30.1")}},
			reason: announce.ReasonNoAdvertisement, status: metav1.ConditionFalse, writer: "n1"},
		{name: "no advertisement, n1's speaker dead: n2 reports", key: "ns/c",
			in:     Inputs{Services: []*Service{svc("c", "198.18.30.1")}, Alive: allAlive("n2", "n3")},
			reason: announce.ReasonNoAdvertisement, status: metav1.ConditionFalse, writer: "n2"},
		{name: "every node excluded", key: "ns/a",
			in:     Inputs{Services: []*Service{svc("a", "198.18.10.1")}, Nodes: []*corev1.Node{node("n1", excluded), node("n2", excluded), node("n3", excluded)}},
			reason: announce.ReasonNoEligibleNode, status: metav1.ConditionFalse, writer: "n1"},
		{name: "externalTrafficPolicy Local without endpoints", key: "ns/a",
			in:     Inputs{Services: []*Service{svc("a", "198.18.10.1", local)}},
			reason: announce.ReasonNoLocalEndpoint, status: metav1.ConditionFalse, writer: "n1"},
		{name: "externalTrafficPolicy Local: the endpoint's node owns it", key: "ns/a",
			in:     Inputs{Services: []*Service{svc("a", "198.18.10.1", local)}, EndpointSlices: []*discoveryv1.EndpointSlice{slice("a", "n3")}},
			reason: ReasonLayer2, status: metav1.ConditionTrue, writer: "n3", contains: "announced by node n3"},
		{name: "another host claims the address", key: "ns/a",
			in: Inputs{Services: []*Service{svc("a", "198.18.10.1")}},
			wire: func(c *cluster, node string) Wire {
				return Wire{Announcing: map[netip.Addr]bool{}, Conflicts: map[netip.Addr]net.HardwareAddr{ip("198.18.10.1"): {2, 0, 0, 0, 0, 1}}}
			},
			reason: ReasonAddressConflict, status: metav1.ConditionFalse, contains: "MAC 02:00:00:00:00:01"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t, tt.in).pass()
			wire := c.onWire
			if tt.wire != nil {
				wire = func(n string) Wire { return tt.wire(c, n) }
			}
			got := c.verdicts(wire)[tt.key]
			if len(got) != 1 {
				t.Fatalf("%s: reported by %v, want exactly one node", tt.key, got)
			}
			writer := tt.writer
			if writer == "" {
				writer = c.owner(tt.in.Services[0].IPs[0])
			}
			cond, ok := got[writer]
			if !ok {
				t.Fatalf("%s reported by %v, want %s", tt.key, got, writer)
			}
			if cond.Reason != tt.reason || cond.Status != tt.status || !strings.Contains(cond.Message, tt.contains) {
				t.Errorf("got %s %s %q, want %s %s containing %q", cond.Status, cond.Reason, cond.Message, tt.status, tt.reason, tt.contains)
			}
		})
	}
}

// Before its address is on the wire, the owner says nothing (it is still
// probing); a conflict ends once the address is answered again.
func TestReportPendingAndConflictOver(t *testing.T) {
	c := newCluster(t, Inputs{Services: []*Service{svc("a", "198.18.10.1")}}).pass()
	a := ip("198.18.10.1")
	owner := c.owner(a)
	pub := c.acts[owner].Report
	if v := pub.Report(Wire{}); len(v) != 0 {
		t.Errorf("before the wire: %v, want no verdict", v)
	}
	mac := net.HardwareAddr{2, 0, 0, 0, 0, 1}
	w := Wire{Announcing: map[netip.Addr]bool{a: true}, Conflicts: map[netip.Addr]net.HardwareAddr{a: mac}}
	if over := pub.Over(w); !slices.Equal(over, []netip.Addr{a}) {
		t.Errorf("Over = %v, want %v: it is answered again", over, a)
	}
	if v := pub.Report(w); len(v) != 1 || v[0].Condition.Reason != ReasonLayer2 {
		t.Errorf("answered again: %v, want Layer2", v)
	}
	// A conflict on an address another node owns is over for this one.
	w = Wire{Conflicts: map[netip.Addr]net.HardwareAddr{ip("198.18.10.9"): mac}}
	if over := pub.Over(w); len(over) != 1 {
		t.Errorf("Over = %v, want the address not ours", over)
	}
}

// TestStepMoves covers every way an address enters or leaves a node.
func TestStepMoves(t *testing.T) {
	var many []*Service
	for i := 1; i <= 14; i++ {
		many = append(many, svc("s"+strconv.Itoa(i), "198.18.10."+strconv.Itoa(i)))
	}
	t.Run("one owner per address, the same plan everywhere", func(t *testing.T) {
		c := newCluster(t, Inputs{Services: many}).pass()
		for _, s := range many {
			c.owner(s.IPs[0])
		}
	})
	t.Run("the owner's speaker dies: failover, no probe", func(t *testing.T) {
		c := newCluster(t, Inputs{Services: many}).pass()
		a := many[0].IPs[0]
		old := c.owner(a)
		c.in.Alive = allAlive(nodeNames...)
		delete(c.in.Alive, old)
		c.pass()
		now := c.owner(a)
		if now == old {
			t.Fatalf("%s stays with the dead %s", a, old)
		}
		if cause := c.acts[now].L2["eth0"].Takeover[a]; cause != "failover" {
			t.Errorf("takeover cause %q, want failover", cause)
		}
		if c.acts[now].Reassert {
			t.Error("a node died: nothing to reassert")
		}
	})
	t.Run("a node becomes Ready: rebalance, the old owner yields", func(t *testing.T) {
		notReady := func(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }
		c := newCluster(t, Inputs{Services: many, Nodes: []*corev1.Node{node("n1"), node("n2"), node("n3", notReady)}}).pass()
		before := map[netip.Addr]string{}
		for _, s := range many {
			before[s.IPs[0]] = c.owner(s.IPs[0])
		}
		c.in.Nodes = []*corev1.Node{node("n1"), node("n2"), node("n3")}
		c.pass()
		moved := 0
		for a, was := range before {
			now := c.owner(a)
			if now == was {
				if _, taken := c.acts[now].L2["eth0"].Takeover[a]; taken {
					t.Errorf("%s stays on %s but counts as a takeover", a, now)
				}
				continue
			}
			moved++
			if cause := c.acts[now].L2["eth0"].Takeover[a]; cause != "rebalance" {
				t.Errorf("%s: %s → %s, takeover cause %q, want rebalance", a, was, now, cause)
			}
			// The old owner keeps answering until the new one does.
			if !c.acts[was].L2["eth0"].Yield(was)(a) {
				t.Errorf("%s: %s does not yield it to %s", a, was, now)
			}
		}
		if moved == 0 {
			t.Fatal("no address moved to the new node: the fixture does not exercise a rebalance")
		}
		for n, act := range c.acts {
			if act.Reassert {
				t.Errorf("%s: reasserts, but no speaker came back", n)
			}
		}
	})
	t.Run("a peer's speaker comes back: reassert", func(t *testing.T) {
		c := newCluster(t, Inputs{Services: many, Alive: allAlive("n1", "n2")}).pass()
		c.in.Alive = allAlive(nodeNames...)
		c.pass()
		for _, n := range []string{"n1", "n2"} {
			if !c.acts[n].Reassert {
				t.Errorf("%s: a peer came back, want a reassert", n)
			}
		}
		if c.pass(); c.acts["n1"].Reassert {
			t.Error("reasserts again on the next pass")
		}
	})
	t.Run("a restarted speaker takes over what the condition says is announced", func(t *testing.T) {
		announced := svc("a", "198.18.10.1", func(s *Service) {
			s.Announced = &metav1.Condition{Status: metav1.ConditionTrue, Reason: ReasonLayer2}
		})
		for _, tc := range []struct {
			s        *Service
			takeover bool
		}{{announced, true}, {svc("a", "198.18.10.1"), false}} {
			c := newCluster(t, Inputs{Services: []*Service{tc.s}}).pass()
			owner := c.owner(tc.s.IPs[0])
			if _, got := c.acts[owner].L2["eth0"].Takeover[tc.s.IPs[0]]; got != tc.takeover {
				t.Errorf("announced %v: takeover %v, want %v", tc.s.Announced != nil, got, tc.takeover)
			}
			// Once planned, the previous plan decides, not the condition.
			c.pass()
			if _, got := c.acts[owner].L2["eth0"].Takeover[tc.s.IPs[0]]; got {
				t.Error("second pass: takeover of an address already ours")
			}
		}
	})
	t.Run("an interface given nothing any more releases", func(t *testing.T) {
		c := newCluster(t, Inputs{Services: []*Service{svc("a", "198.18.11.1")}}).pass()
		owner := c.owner(ip("198.18.11.1"))
		c.in.Services = nil
		c.pass()
		u, ok := c.acts[owner].L2["eth1"]
		if !ok || len(u.IPs) != 0 {
			t.Errorf("eth1 after the Service went: %+v (present %v), want an empty set", u, ok)
		}
		c.pass()
		if _, ok := c.acts[owner].L2["eth1"]; ok {
			t.Error("eth1 released twice")
		}
	})
	t.Run("until the mesh settles, layer 2 is left alone and BGP goes on", func(t *testing.T) {
		c := newCluster(t, Inputs{Services: []*Service{svc("a", "198.18.10.1"), svc("b", "198.18.20.1")}, BGP: true})
		c.in.Settled = false
		c.pass()
		for n, act := range c.acts {
			if act.L2 != nil || act.Report != nil {
				t.Errorf("%s: L2 %v report %v before the mesh settled", n, act.L2, act.Report)
			}
			if act.BGP == nil || len(act.BGP.Desired.Routes) != 1 {
				t.Errorf("%s: BGP %+v, want the route", n, act.BGP)
			}
			if c.states[n].planned {
				t.Errorf("%s: planned before the mesh settled", n)
			}
		}
	})
	t.Run("another load balancer's Service is neither announced nor reported", func(t *testing.T) {
		other := "example.com/other"
		c := newCluster(t, Inputs{Services: []*Service{svc("a", "198.18.10.1", func(s *Service) { s.Class = &other })}}).pass()
		if owners, _ := c.l2Owners(ip("198.18.10.1")); len(owners) != 0 {
			t.Errorf("announced by %v", owners)
		}
		if v := c.verdicts(c.onWire); len(v) != 0 {
			t.Errorf("reported: %v", v)
		}
	})
}

func TestStepBGP(t *testing.T) {
	withPassword := func(ns string) config.Objects {
		o := objs()
		o.BGPPeers[0].Spec.PasswordSecret = &v1beta1.SecretKeyRef{Namespace: ns, Name: "bgp"}
		return o
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "ironlb", Name: "bgp"}, Data: map[string][]byte{"password": []byte("s3cret")}}
	tests := []struct {
		name     string
		objs     config.Objects
		secrets  []*corev1.Secret
		nodes    []*corev1.Node
		peers    int
		problem  string // of peer r1
		err      string
		password string
	}{
		{name: "a peer and a route", objs: objs(), peers: 1},
		{name: "password from the Secret", objs: withPassword("ironlb"), secrets: []*corev1.Secret{secret}, peers: 1, password: "s3cret"},
		{name: "password Secret missing", objs: withPassword("ironlb"), problem: "passwordSecret ironlb/bgp: not found"},
		{name: "password Secret elsewhere", objs: withPassword("default"), secrets: []*corev1.Secret{secret}, problem: `must be in the speaker's namespace "ironlb"`},
		{name: "this node unknown", objs: objs(), nodes: []*corev1.Node{node("n2")}, err: `node "n1" not found`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := Inputs{Self: "n1", Config: parse(t, tt.objs), Nodes: tt.nodes, BGP: true, Filter: config.ClassFilter{Default: true}, Namespace: "ironlb", Secrets: tt.secrets,
				Services: []*Service{svc("b", "198.18.20.1")}, Alive: allAlive(nodeNames...), Settled: true}
			if in.Nodes == nil {
				in.Nodes = []*corev1.Node{node("n1"), node("n2")}
			}
			_, act := Step(State{}, in)
			b := act.BGP
			switch {
			case tt.err != "":
				if b.Err == nil || !strings.Contains(b.Err.Error(), tt.err) {
					t.Fatalf("Err %v, want %q", b.Err, tt.err)
				}
				return
			case b.Err != nil:
				t.Fatal(b.Err)
			}
			if got := b.Problems["r1"]; !strings.Contains(got, tt.problem) || (tt.problem == "") != (got == "") {
				t.Errorf("problem %q, want %q", got, tt.problem)
			}
			if len(b.Desired.Peers) != tt.peers || b.Selected != 1 {
				t.Fatalf("peers %v selected %d, want %d of 1", b.Desired.Peers, b.Selected, tt.peers)
			}
			if tt.peers == 0 {
				if b.Announced != 0 {
					t.Errorf("announced %d with no session", b.Announced)
				}
				return
			}
			if p := b.Desired.Peers[0]; p.Password != tt.password || p.Address != ip("10.0.0.254") || p.MyASN != 64512 {
				t.Errorf("peer %+v", p)
			}
			if b.Desired.RouterID != ip("10.0.0.1") || b.Announced != 1 ||
				len(b.Desired.Routes) != 1 || b.Desired.Routes[0].Prefix != netip.MustParsePrefix("198.18.20.1/32") {
				t.Errorf("router ID %s, announced %d, routes %v", b.Desired.RouterID, b.Announced, b.Desired.Routes)
			}
		})
	}
}

func TestNodeStatus(t *testing.T) {
	act := &BGPAction{Selected: 2, Announced: 5, Problems: map[string]string{"r2": "passwordSecret x/y: not found", "": "bad aggregation"}}
	since := time.Unix(1000, 0)
	st := NodeStatus("n1", act, []bgp.PeerStatus{{Name: "r1", Address: ip("10.0.0.254"), State: "established", Since: since}})
	var names []string
	for _, p := range st.Peers {
		names = append(names, p.Name+"="+p.State)
	}
	if got := strings.Join(names, ","); got != "(node)=error,r1=established,r2=error" || st.PeerCount != 2 || st.Prefixes != 5 || st.Established != 1 {
		t.Errorf("status %+v (peers %s)", st, got)
	}
	st = NodeStatus("n1", &BGPAction{Err: errNode}, nil)
	if len(st.Peers) != 1 || st.Peers[0].Error != errNode.Error() {
		t.Errorf("a node-wide error: %+v", st)
	}
	if st := NodeStatus("n1", nil, nil); st.PeerCount != 0 || len(st.Peers) != 0 {
		t.Errorf("no BGP: %+v", st)
	}
}

var errNode = func() error { _, err := selfNode(nil, "n1"); return err }()

// TestPeersConfiguredCondition: True while every selected peer runs,
// False with the first left-out peer's reason and a message naming the
// node and each such peer.
func TestPeersConfiguredCondition(t *testing.T) {
	vrfErr := `peer "blue": VRF "blue" does not exist on this node`
	tests := []struct {
		name        string
		act         *BGPAction
		sessions    []bgp.PeerStatus
		status      metav1.ConditionStatus
		reason      string
		msgHas      []string
		noCondition bool
	}{
		{name: "all running", act: &BGPAction{Selected: 1}, sessions: []bgp.PeerStatus{{Name: "r1", State: "established"}},
			status: metav1.ConditionTrue, reason: v1beta1.ReasonAllPeersConfigured, msgHas: []string{"node n1"}},
		{name: "missing VRF first", act: &BGPAction{Selected: 2, Problems: map[string]string{"r2": "passwordSecret x/y: not found"}},
			sessions: []bgp.PeerStatus{{Name: "blue", State: "idle", Error: vrfErr, Reason: v1beta1.ReasonVRFNotFound}},
			status:   metav1.ConditionFalse, reason: v1beta1.ReasonVRFNotFound, msgHas: []string{"node n1 leaves out", vrfErr, "passwordSecret x/y"}},
		{name: "core problem only", act: &BGPAction{Selected: 1, Problems: map[string]string{"r2": "passwordSecret x/y: not found"}},
			status: metav1.ConditionFalse, reason: v1beta1.ReasonPeerConfigError, msgHas: []string{"passwordSecret x/y"}},
		{name: "no peer selects the node", act: &BGPAction{}, noCondition: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := NodeStatus("n1", tc.act, tc.sessions)
			c := meta.FindStatusCondition(st.Conditions, v1beta1.ConditionPeersConfigured)
			if tc.noCondition {
				if c != nil {
					t.Fatalf("condition %+v, want none", c)
				}
				return
			}
			if c == nil || c.Status != tc.status || c.Reason != tc.reason {
				t.Fatalf("condition %+v, want %s %s", c, tc.status, tc.reason)
			}
			for _, m := range tc.msgHas {
				if !strings.Contains(c.Message, m) {
					t.Errorf("message %q lacks %q", c.Message, m)
				}
			}
		})
	}
}
