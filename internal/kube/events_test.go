package kube

import (
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestEventf: an Event names its object by kind and version (which the
// typed objects a watch decodes do not carry), is cut to the API
// server's limit, and a full queue drops instead of blocking the caller.
func TestEventf(t *testing.T) {
	s, err := Scheme()
	if err != nil {
		t.Fatal(err)
	}
	r := &Recorder{scheme: s, controller: "ironlb-speaker", instance: "ironlb-speaker-h", log: logr.Discard(), queue: make(chan *eventsv1.Event, 2)}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web", UID: "u1", ResourceVersion: "7"}}
	r.Eventf(svc, nil, corev1.EventTypeWarning, "AddressConflict", "Announce", "%s answers for %s", "aa:bb", strings.Repeat("x", 2000))
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}
	r.Eventf(node, svc, corev1.EventTypeNormal, "Announcing", "Announce", "ok")
	r.Eventf(node, nil, corev1.EventTypeNormal, "Announcing", "Announce", "dropped") // queue full: must not block

	ev := <-r.queue
	want := corev1.ObjectReference{APIVersion: "v1", Kind: "Service", Namespace: "shop", Name: "web", UID: "u1", ResourceVersion: "7"}
	if ev.Regarding != want || ev.Namespace != "shop" || ev.Type != corev1.EventTypeWarning || ev.Reason != "AddressConflict" || ev.Action != "Announce" {
		t.Errorf("event = %+v", ev)
	}
	if len(ev.Note) != maxNote || !strings.HasPrefix(ev.Note, "aa:bb answers for xxx") {
		t.Errorf("note: %d bytes, %.30q", len(ev.Note), ev.Note)
	}
	if !strings.HasPrefix(ev.Name, "web.") || ev.ReportingController != "ironlb-speaker" || ev.EventTime.IsZero() {
		t.Errorf("name %q, controller %q, time %v", ev.Name, ev.ReportingController, ev.EventTime)
	}
	ev = <-r.queue
	if ev.Namespace != metav1.NamespaceDefault || ev.Regarding.Kind != "Node" || ev.Related == nil || ev.Related.Name != "web" {
		t.Errorf("cluster-scoped event = %+v", ev)
	}
	if len(r.queue) != 0 {
		t.Error("the third event was queued beyond the queue's capacity")
	}
}
