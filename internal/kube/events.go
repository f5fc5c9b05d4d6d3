package kube

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/rest"
)

// maxNote is the API server's limit on an Event's note.
const maxNote = 1024

// Recorder writes events.k8s.io/v1 Events in the background, so a caller
// never waits on the API server. client-go's recorder (tools/events) would
// do, but it links the clientset and with it every API group; and the
// speaker's Events follow its conditions, which are written only when
// they change, so its series and spam filtering have nothing to do.
type Recorder struct {
	client     *rest.RESTClient
	scheme     *runtime.Scheme
	controller string
	instance   string
	log        logr.Logger
	queue      chan *eventsv1.Event
}

// NewRecorder returns a recorder reporting as controller (instance: the
// host name). Events are written once Run runs.
func NewRecorder(cs *Clients, controller string, log logr.Logger) *Recorder {
	host, _ := os.Hostname()
	return &Recorder{client: cs.Events, scheme: cs.Scheme, controller: controller, instance: controller + "-" + host, log: log, queue: make(chan *eventsv1.Event, 1000)}
}

// Eventf records an Event about regarding (related may be nil). It never
// blocks: when the API server is slow and 1,000 Events wait, further ones
// are dropped (and logged).
func (r *Recorder) Eventf(regarding, related runtime.Object, eventtype, reason, action, note string, args ...any) {
	ref, err := r.reference(regarding)
	if err != nil {
		r.log.Error(err, "event not recorded", "reason", reason)
		return
	}
	now := time.Now()
	ev := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{
			Name:      fmt.Sprintf("%s.%x", ref.Name, now.UnixNano()),
			Namespace: ref.Namespace,
		},
		EventTime:           metav1.NewMicroTime(now),
		ReportingController: r.controller,
		ReportingInstance:   r.instance,
		Action:              action,
		Reason:              reason,
		Regarding:           ref,
		Note:                fmt.Sprintf(note, args...),
		Type:                eventtype,
	}
	if ev.Namespace == "" {
		ev.Namespace = metav1.NamespaceDefault
	}
	if len(ev.Note) > maxNote {
		ev.Note = ev.Note[:maxNote]
	}
	if related != nil {
		if rel, err := r.reference(related); err == nil {
			ev.Related = &rel
		}
	}
	select {
	case r.queue <- ev:
	default:
		r.log.Info("event dropped: too many waiting to be written", "regarding", ref.Namespace+"/"+ref.Name, "reason", reason)
	}
}

func (r *Recorder) reference(obj runtime.Object) (corev1.ObjectReference, error) {
	m, err := meta.Accessor(obj)
	if err != nil {
		return corev1.ObjectReference{}, err
	}
	gvks, _, err := r.scheme.ObjectKinds(obj)
	if err != nil {
		return corev1.ObjectReference{}, err
	}
	apiVersion, kind := gvks[0].ToAPIVersionAndKind()
	return corev1.ObjectReference{
		APIVersion: apiVersion, Kind: kind, Namespace: m.GetNamespace(), Name: m.GetName(),
		UID: m.GetUID(), ResourceVersion: m.GetResourceVersion(),
	}, nil
}

// Run writes queued Events until ctx ends, each tried three times.
func (r *Recorder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-r.queue:
			var err error
			for try := range 3 {
				if try > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(time.Duration(try) * time.Second):
					}
				}
				if err = r.client.Post().Namespace(ev.Namespace).Resource("events").Body(ev).Do(ctx).Error(); err == nil {
					break
				}
			}
			if err != nil {
				r.log.Error(err, "event not recorded", "regarding", ev.Regarding.Namespace+"/"+ev.Regarding.Name, "reason", ev.Reason)
			}
		}
	}
}
