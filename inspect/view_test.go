package inspect

import (
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/speaker/announce"
)

// testCluster: three Ready nodes, the speaker down on n3; pool "l2"
// announced in layer 2, pool "bgp" over BGP from zone a (n1, n2); web
// (l2), api (bgp, Local, endpoints on n2), pending (no address), foreign
// (another class).
func testCluster() *Cluster {
	node := func(name, zone string) corev1.Node {
		return corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"zone": zone}},
			Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}}}
	}
	speaker := func(node string, ready bool) corev1.Pod {
		st := corev1.ConditionFalse
		if ready {
			st = corev1.ConditionTrue
		}
		return corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "ironlb", Name: "speaker-" + node}, Spec: corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: st}}}}
	}
	svc := func(ns, name string, ip string, local bool) corev1.Service {
		s := corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
			Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer}}
		if local {
			s.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
		}
		if ip != "" {
			s.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: ip}}
		}
		return s
	}
	pending := svc("default", "pending", "", false)
	pending.Status.Conditions = []metav1.Condition{{Type: v1beta1.ServiceConditionIPAllocated, Status: metav1.ConditionFalse, Reason: "NoFreeAddress", Message: "pools l2, bgp are full"}}
	foreign := svc("default", "foreign", "198.18.0.9", false)
	foreign.Spec.LoadBalancerClass = ptr.To("example.com/other")
	t0 := metav1.NewTime(time.Unix(0, 0))
	return &Cluster{
		Filter: config.ClassFilter{Default: true},
		Objects: config.Objects{
			Pools: []v1beta1.IPAddressPool{
				{ObjectMeta: metav1.ObjectMeta{Name: "l2", CreationTimestamp: t0}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/28"}},
					Status: v1beta1.IPAddressPoolStatus{IPv4: &v1beta1.PoolUsage{Total: 16, Assigned: 1, Available: 15}}},
				{ObjectMeta: metav1.ObjectMeta{Name: "bgp", CreationTimestamp: t0}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.1.0/28"}}},
			},
			L2Advertisements: []v1beta1.L2Advertisement{{ObjectMeta: metav1.ObjectMeta{Name: "l2"}, Spec: v1beta1.L2AdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"l2"}}}},
			BGPAdvertisements: []v1beta1.BGPAdvertisement{{ObjectMeta: metav1.ObjectMeta{Name: "bgp"}, Spec: v1beta1.BGPAdvertisementSpec{IPAddressPools: []v1beta1.PoolName{"bgp"},
				NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"zone": "a"}}}}}},
		},
		Nodes:       []corev1.Node{node("n1", "a"), node("n2", "a"), node("n3", "b")},
		SpeakerPods: []corev1.Pod{speaker("n1", true), speaker("n2", true), speaker("n3", false)},
		Services:    []corev1.Service{svc("default", "web", "198.18.0.1", false), svc("default", "api", "198.18.1.1", true), pending, foreign},
		EndpointSlices: []discoveryv1.EndpointSlice{{
			ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "api-x", Labels: map[string]string{discoveryv1.LabelServiceName: "api"}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, NodeName: ptr.To("n2"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
		}},
		NodeStatuses: []v1beta1.BGPNodeStatus{{ObjectMeta: metav1.ObjectMeta{Name: "n2"}, Status: v1beta1.BGPNodeStatusStatus{PeerCount: 1, Established: 1,
			Peers: []v1beta1.BGPSessionStatus{{Name: "tor", Address: "198.18.2.1", State: "established"}}}}},
	}
}

func reasons(rs []NodeReason) map[string]string {
	out := map[string]string{}
	for _, r := range rs {
		out[r.Node] = r.Reason
	}
	return out
}

func TestStatus(t *testing.T) {
	v := NewView(testCluster())
	if len(v.Notes) != 0 {
		t.Fatalf("notes: %v", v.Notes)
	}
	l := v.Status("")
	var names []string
	for _, s := range l {
		names = append(names, s.Name)
	}
	if !slices.Equal(names, []string{"api", "pending", "web"}) {
		t.Fatalf("Services %v, want api, pending, web (foreign is another class's)", names)
	}
	api, pending, web := l[0], l[1], l[2]

	if len(web.Addresses) != 1 || web.Addresses[0].Pool != "l2" || web.Addresses[0].BGP != nil {
		t.Fatalf("web: %+v", web.Addresses)
	}
	l2 := web.Addresses[0].Layer2
	if len(l2.Announcing) != 1 || l2.Announcing[0] == "n3" {
		t.Fatalf("web announced by %v, want n1 or n2", l2.Announcing)
	}
	other := map[string]string{"n1": "n2", "n2": "n1"}[l2.Announcing[0]]
	if got, want := reasons(l2.Others), map[string]string{other: announce.WhyNotElected, "n3": announce.WhySpeakerDown}; !maps.Equal(got, want) {
		t.Errorf("web's other nodes %v, want %v", got, want)
	}

	b := api.Addresses[0].BGP
	if api.Addresses[0].Layer2 != nil || !slices.Equal(b.Announcing, []string{"n2"}) {
		t.Fatalf("api: %+v", api.Addresses[0])
	}
	if got, want := reasons(b.Others), map[string]string{"n1": announce.WhyNoLocalEndpoint, "n3": announce.WhySpeakerDown}; !maps.Equal(got, want) {
		t.Errorf("api's other nodes %v, want %v", got, want)
	}
	if len(b.Sessions) != 1 || b.Sessions[0].Established != 1 || b.Sessions[0].Peers[0].Name != "tor" {
		t.Errorf("api's sessions: %+v", b.Sessions)
	}
	if len(pending.Addresses) != 0 || pending.Allocated == nil || pending.Allocated.Reason != "NoFreeAddress" {
		t.Errorf("pending: %+v", pending)
	}
	if got := v.Status("elsewhere"); len(got) != 0 {
		t.Errorf("namespace elsewhere: %+v", got)
	}
}

func TestStatusWithoutSpeakerPods(t *testing.T) {
	c := testCluster()
	c.SpeakerPods, c.SpeakersUnknown = nil, "no access to list pods"
	v := NewView(c)
	if len(v.Notes) != 1 || !strings.Contains(v.Notes[0], "no access") {
		t.Fatalf("notes %v", v.Notes)
	}
	// n3's speaker is taken as running: n3 is now a candidate in layer 2.
	l2 := v.Status("default")[2].Addresses[0].Layer2
	for _, o := range l2.Others {
		if o.Reason == announce.WhySpeakerDown {
			t.Errorf("%s: %s", o.Node, o.Reason)
		}
	}
}

func TestWhy(t *testing.T) {
	v := NewView(testCluster())
	for _, tc := range []struct {
		name, verdict string
		findings      []string // each a substring of some finding
	}{
		{"web", VerdictAnnounced, []string{"announced over layer 2 by n", "no speaker has written"}},
		{"api", VerdictAnnounced, []string{"announced over BGP by n2"}},
		{"pending", VerdictPending, []string{"NoFreeAddress: pools l2, bgp are full", `candidate pool "l2": IPv4 15 of 16 free`, `candidate pool "bgp": no usage`}},
		{"foreign", VerdictNotOurs, []string{`spec.loadBalancerClass is "example.com/other"`}},
		{"nonesuch", VerdictNotFound, []string{"does not exist"}},
	} {
		e := v.Why("default", tc.name)
		if e.Verdict != tc.verdict {
			t.Errorf("%s: verdict %s, want %s (%v)", tc.name, e.Verdict, tc.verdict, e.Findings)
		}
		for _, f := range tc.findings {
			if !slices.ContainsFunc(e.Findings, func(s string) bool { return strings.Contains(s, f) }) {
				t.Errorf("%s: no finding with %q in %q", tc.name, f, e.Findings)
			}
		}
	}

	t.Run("not announced", func(t *testing.T) {
		c := testCluster()
		c.SpeakerPods[1].Status.Conditions[0].Status = corev1.ConditionFalse // n2: api's only endpoint node
		e := NewView(c).Why("default", "api")
		want := []string{"no node announces it over BGP: NoEligibleNode", "node n2: " + announce.WhySpeakerDown, "node n1: " + announce.WhyNoLocalEndpoint}
		if e.Verdict != VerdictNotAnnounced {
			t.Fatalf("verdict %s (%v)", e.Verdict, e.Findings)
		}
		for _, f := range want {
			if !slices.ContainsFunc(e.Findings, func(s string) bool { return strings.Contains(s, f) }) {
				t.Errorf("no finding with %q in %q", f, e.Findings)
			}
		}
	})
}

func TestSimulateDrain(t *testing.T) {
	v := NewView(testCluster())
	owner := v.Status("default")[2].Addresses[0].Layer2.Announcing[0]
	other := map[string]string{"n1": "n2", "n2": "n1"}[owner]

	d, err := v.SimulateDrain(owner)
	if err != nil {
		t.Fatal(err)
	}
	var web *Move
	for i := range d.Moves {
		if d.Moves[i].IP == "198.18.0.1" {
			web = &d.Moves[i]
		}
	}
	if web == nil || !slices.Equal(web.From, []string{owner}) || !slices.Equal(web.To, []string{other}) || web.Dark {
		t.Fatalf("draining %s: moves %+v, want web's address to %s", owner, d.Moves, other)
	}

	// Draining n2 evicts api's only endpoint: its address goes dark.
	d, err = v.SimulateDrain("n2")
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(d.Moves, func(m Move) bool { return m.IP == "198.18.1.1" })
	if i < 0 || !d.Moves[i].Dark || d.Moves[i].Reason != announce.ReasonNoLocalEndpoint || len(d.Notes) == 0 {
		t.Fatalf("draining n2: %+v", d)
	}

	// Draining n3 (speaker down, nothing on it) moves nothing.
	if d, err = v.SimulateDrain("n3"); err != nil || len(d.Moves) != 0 || d.Unchanged != 2 {
		t.Fatalf("draining n3: %+v, %v", d, err)
	}
	if _, err := v.SimulateDrain("nonesuch"); err == nil || !strings.Contains(err.Error(), `"nonesuch" not found`) {
		t.Fatalf("draining a node that does not exist: %v", err)
	}
	// The view is not changed by a simulation.
	if v.c.Nodes[0].Spec.Unschedulable || v.c.Nodes[1].Spec.Unschedulable || len(v.c.EndpointSlices[0].Endpoints) != 1 {
		t.Fatal("SimulateDrain modified the cluster it read")
	}
}

func TestPools(t *testing.T) {
	c := testCluster()
	c.Objects.Pools = append(c.Objects.Pools, v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "bad", CreationTimestamp: metav1.NewTime(time.Unix(60, 0))}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.8/29"}}})
	p := NewView(c).Pools()
	if len(p) != 3 || p[0].Name != "bad" || p[1].Name != "bgp" || p[2].Name != "l2" {
		t.Fatalf("pools %+v", p)
	}
	if p[2].IPv4 == nil || p[2].IPv4.Available != 15 {
		t.Errorf("l2's usage: %+v", p[2].IPv4)
	}
	if len(p[0].Problems) == 0 || !strings.Contains(p[0].Problems[0], "spec.addresses") {
		t.Errorf("the pool overlapping l2 has no problem on spec.addresses: %v", p[0].Problems)
	}
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		want    []string
		ns, out string
		err     string
	}{
		{args: []string{"status", "web", "-n", "prod", "-o", "json"}, want: []string{"status", "web"}, ns: "prod", out: "json"},
		{args: []string{"--namespace=prod", "why", "web"}, want: []string{"why", "web"}, ns: "prod", out: "table"},
		{args: []string{"pools", "-o", "wide"}, err: `-o "wide"`},
		{args: []string{"pools", "--bogus"}, err: "bogus"},
	} {
		o, err := parse(tc.args)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%v: error %v, want %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || !slices.Equal(o.args, tc.want) || o.namespace != tc.ns || o.output != tc.out {
			t.Errorf("%v: %+v, %v", tc.args, o, err)
		}
	}
}
