package e2e

import (
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ethernet"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/test/netlab"
)

// answerers broadcasts one ARP request for ip from the client and returns
// every MAC that answers within window: more than one means two nodes
// announce the address.
func (cl *cluster) answerers(ip netip.Addr, window time.Duration) (map[string]bool, error) {
	return clientARP(cl, func(c *arp.Client, ifi *net.Interface) (map[string]bool, error) {
		req, err := arp.NewPacket(arp.OperationRequest, ifi.HardwareAddr, cl.lab.Hosts["client"].IPv4.Addr(), ethernet.Broadcast, ip)
		if err != nil {
			return nil, err
		}
		if err := c.WriteTo(req, ethernet.Broadcast); err != nil {
			return nil, err
		}
		_ = c.SetReadDeadline(time.Now().Add(window))
		got := map[string]bool{}
		for {
			p, _, err := c.Read()
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					return got, nil
				}
				continue // not an ARP packet we can parse
			}
			if p.Operation == arp.OperationReply && p.SenderIP == ip {
				got[p.SenderHardwareAddr.String()] = true
			}
		}
	})
}

// partition cuts the mesh between node and the other nodes in both
// directions (blackhole routes to the node addresses; ARP with the client
// still works), or heals it.
func (cl *cluster) partition(node string, cut bool) {
	cl.t.Helper()
	verb := "add"
	if !cut {
		verb = "del"
	}
	for name, h := range cl.lab.Hosts {
		if name == node || name == "client" {
			continue
		}
		a := cl.lab.Hosts[node]
		for _, step := range []struct {
			in *netlab.Host
			to netip.Addr
		}{{a, h.IPv4.Addr()}, {h, a.IPv4.Addr()}} {
			if _, err := step.in.In("ip", "route", verb, "blackhole", step.to.String()+"/32"); err != nil {
				cl.t.Fatal(err)
			}
		}
	}
}

// TestL2PartitionHeal: while one node is cut off from the others both
// sides announce (each thinks the other dead); once the partition heals
// only one node answers again within about one detection period.
func TestL2PartitionHeal(t *testing.T) {
	cl := newCluster(t, "node1", "node2", "node3")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	ip := cl.service("web")
	owner := cl.waitOwner(ip, 10*time.Second, "")
	time.Sleep(time.Second)

	cl.partition(owner, true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		got, err := cl.answerers(ip, 100*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("during the partition %s answered by %v, want the cut-off owner and a node of the other side", ip, got)
		}
	}

	healed := time.Now()
	cl.partition(owner, false)
	lastDouble := healed
	for time.Since(healed) < 3*time.Second {
		got, err := cl.answerers(ip, 40*time.Millisecond)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) > 1 {
			lastDouble = time.Now()
		}
	}
	d := lastDouble.Sub(healed)
	t.Logf("after the partition healed two nodes answered for %s during %s", ip, d)
	// One detection period is 500 ms (timeout 400 ms + interval); the
	// bound leaves room for a loaded CI machine.
	if d > time.Second {
		t.Errorf("two nodes answered for %s for %s after the partition healed", ip, d)
	}
	if got, err := cl.answerers(ip, 200*time.Millisecond); err != nil || len(got) != 1 {
		t.Fatalf("after the heal %s answered by %v (%v), want exactly one node", ip, got, err)
	}
}

// TestL2AddressConflict: a foreign host already holds the address. The
// probe sees it, nothing is announced, the Service says so with the
// foreign MAC (condition and Warning Event); once the host lets go, the
// address is announced after the probe's backoff.
func TestL2AddressConflict(t *testing.T) {
	cl := newCluster(t, "node1", "node2")
	cl.l2Setup("198.18.0.200-198.18.0.220")
	foreign := cl.lab.Hosts["client"]
	const taken = "198.18.0.215"
	if _, err := foreign.In("ip", "addr", "add", taken+"/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "clash", Annotations: map[string]string{v1beta1.AnnotationLoadBalancerIPs: taken}},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "clash"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(8080)}}},
	}
	if err := cl.c.Create(cl.ctx, s); err != nil {
		t.Fatal(err)
	}
	if ip := cl.waitIP("clash"); ip.String() != taken {
		t.Fatalf("got %s, requested %s", ip, taken)
	}
	cl.waitAnnounced("clash", metav1.ConditionFalse, "AddressConflict")
	cl.waitAnnounced("clash", metav1.ConditionFalse, foreign.MAC.String())
	// The foreign host is the client itself, which does not answer its
	// own request: any answer is a node announcing despite the conflict.
	got, err := cl.answerers(netip.MustParseAddr(taken), 300*time.Millisecond)
	if err != nil || len(got) != 0 {
		t.Fatalf("%s answered by %v (%v) although another host holds it", taken, got, err)
	}
	var evs eventsv1.EventList
	found := false
	for deadline := time.Now().Add(5 * time.Second); !found && time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if err := cl.c.List(cl.ctx, &evs, client.InNamespace("default")); err != nil {
			t.Fatal(err)
		}
		for _, e := range evs.Items {
			if e.Regarding.Name == "clash" && e.Type == corev1.EventTypeWarning && e.Reason == "AddressConflict" && strings.Contains(e.Note, foreign.MAC.String()) {
				found = true
			}
		}
	}
	if !found {
		t.Error("no Warning Event AddressConflict naming the foreign MAC")
	}

	if _, err := foreign.In("ip", "addr", "del", taken+"/24", "dev", "eth0"); err != nil {
		t.Fatal(err)
	}
	// The probe is retried with a backoff (1 s doubling, ±50%).
	cl.waitAnnouncedWithin("clash", metav1.ConditionTrue, "announced by node", 20*time.Second)
	if o, err := cl.owner(netip.MustParseAddr(taken)); err != nil || o == "client" {
		t.Fatalf("after the conflict ended %s is answered by %q (%v)", taken, o, err)
	}
}

// TestL2InterfaceAppearsLater: an L2Advertisement names an interface the
// node does not have yet; once it appears (a link event) the address is
// announced on it at once, without waiting for the periodic retry.
func TestL2InterfaceAppearsLater(t *testing.T) {
	cl := newCluster(t, "node1", "node2")
	if err := cl.c.Create(cl.ctx, &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "late"},
		Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.240-198.18.0.245"}}}); err != nil {
		t.Fatal(err)
	}
	if err := cl.c.Create(cl.ctx, &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "late"},
		Spec: v1beta1.L2AdvertisementSpec{
			Interfaces:    []string{"lan2"},
			NodeSelectors: []metav1.LabelSelector{{MatchLabels: map[string]string{"kubernetes.io/hostname": "node1"}}},
		}}); err != nil {
		t.Fatal(err)
	}
	ip := cl.service("late")
	time.Sleep(time.Second) // the speaker tried, and failed: no lan2 yet
	if _, err := cl.resolve(ip, 300*time.Millisecond); err == nil {
		t.Fatal("announced on an interface that does not exist")
	}
	added := time.Now()
	mac, err := cl.lab.AddLink("node1", "lan2")
	if err != nil {
		t.Fatal(err)
	}
	var got net.HardwareAddr
	for time.Since(added) < 10*time.Second {
		if got, err = cl.resolve(ip, 100*time.Millisecond); err == nil {
			break
		}
	}
	d := time.Since(added)
	if err != nil {
		t.Fatalf("%s not announced after lan2 appeared: %v", ip, err)
	}
	if got.String() != mac.String() {
		t.Fatalf("%s answered by %s, want lan2's MAC %s", ip, got, mac)
	}
	t.Logf("announced on lan2 %s after it appeared", d)
	// The retry runs every 5 s: faster than that is the link event.
	if d > 3*time.Second {
		t.Errorf("announced only %s after the interface appeared", d)
	}
}
