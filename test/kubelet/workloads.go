package kubelet

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/test/proc"
)

// WaitWorkloads waits until every DaemonSet in namespace has a ready pod
// on each of its scheduled nodes and every Deployment all its replicas
// ready, and returns how long that took; on timeout the error says, per
// pod that is not ready, why (Diagnose).
func WaitWorkloads(ctx context.Context, c client.Client, namespace string, nodes map[string]*Node, timeout time.Duration) (time.Duration, error) {
	start := time.Now()
	for {
		var ds appsv1.DaemonSetList
		var dep appsv1.DeploymentList
		if err := c.List(ctx, &ds, client.InNamespace(namespace)); err != nil {
			return 0, err
		}
		if err := c.List(ctx, &dep, client.InNamespace(namespace)); err != nil {
			return 0, err
		}
		var state []string
		done := len(ds.Items)+len(dep.Items) > 0
		for _, d := range ds.Items {
			want := d.Status.DesiredNumberScheduled
			state = append(state, fmt.Sprintf("DaemonSet %s: %d of %d ready", d.Name, d.Status.NumberReady, want))
			done = done && want == int32(len(nodes)) && d.Status.NumberReady == want
		}
		for _, d := range dep.Items {
			want := int32(1)
			if d.Spec.Replicas != nil {
				want = *d.Spec.Replicas
			}
			state = append(state, fmt.Sprintf("Deployment %s: %d of %d ready", d.Name, d.Status.ReadyReplicas, want))
			done = done && d.Status.ReadyReplicas == want
		}
		if done {
			return time.Since(start), nil
		}
		if time.Since(start) > timeout || ctx.Err() != nil {
			return 0, fmt.Errorf("the pods of namespace %s not ready after %s: %s\n%s", namespace, timeout, strings.Join(state, "; "), Diagnose(ctx, c, namespace, nodes))
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// Diagnose says, for each pod of namespace that is not ready or has
// restarted (a liveness probe that fails restarts a container that may be
// ready again between restarts), where it came from (its owner and
// container, the chart's workload), what its containers' state and last
// termination were, what the kubelet reported (Unhealthy, BackOff, Failed
// events) and its last log lines; and which node component has stopped.
// "" if all is well.
func Diagnose(ctx context.Context, c client.Client, namespace string, nodes map[string]*Node) string {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
		return err.Error()
	}
	var events corev1.EventList
	_ = c.List(ctx, &events, client.InNamespace(namespace))
	var out []string
	for _, p := range pods.Items {
		if podReady(&p) && restarts(&p) == 0 {
			continue
		}
		out = append(out, diagnosePod(ctx, c, &p, events.Items, nodes))
	}
	names := make([]string, 0, len(nodes))
	for name := range nodes {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		if msg := nodes[name].Problems(); msg != "" {
			out = append(out, "node "+name+": "+msg)
		}
	}
	return strings.Join(out, "\n")
}

// diagnosePod is Diagnose of one pod.
func diagnosePod(ctx context.Context, c client.Client, p *corev1.Pod, events []corev1.Event, nodes map[string]*Node) string {
	owner := ownerOf(ctx, c, p)
	lines := []string{fmt.Sprintf("pod %s/%s (%s) on node %q: %s", p.Namespace, p.Name, owner, p.Spec.NodeName, p.Status.Phase)}
	for _, cond := range p.Status.Conditions {
		if cond.Status != corev1.ConditionTrue && cond.Message != "" {
			lines = append(lines, fmt.Sprintf("  %s: %s", cond.Type, cond.Message))
		}
	}
	for _, cs := range p.Status.ContainerStatuses {
		lines = append(lines, fmt.Sprintf("  container %s: %s, %d restarts%s", cs.Name, stateOf(cs.State), cs.RestartCount, lastOf(cs.LastTerminationState)))
	}
	for _, e := range events {
		// No DNS server runs in the lab: every pod gets that one.
		if e.InvolvedObject.UID == p.UID && e.Type == corev1.EventTypeWarning && e.Reason != "MissingClusterDNS" {
			lines = append(lines, fmt.Sprintf("  event %s (x%d): %s", e.Reason, max(e.Count, 1), e.Message))
		}
	}
	if n, ok := nodes[p.Spec.NodeName]; ok {
		lines = append(lines, indent(n.PodLogs(p.Namespace, p.Name, 5)))
	}
	return strings.Join(lines, "\n")
}

// Watch reports, until ctx ends, each pod of namespace once whenever it
// restarts or stops being ready (Diagnose of it), and each node component
// that stops: a cluster would go on quietly, the lab says what happened.
func Watch(ctx context.Context, c client.Client, namespace string, nodes map[string]*Node, every time.Duration, report func(string)) {
	seen := map[string]string{} // pod → its last reported state
	stopped := map[string]bool{}
	proc.Poll(ctx, every, func() {
		var pods corev1.PodList
		if err := c.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
			return
		}
		var events corev1.EventList
		_ = c.List(ctx, &events, client.InNamespace(namespace))
		for _, p := range pods.Items {
			state := fmt.Sprintf("ready %t restarts %d", podReady(&p), restarts(&p))
			was, known := seen[p.Name]
			seen[p.Name] = state
			bad := !podReady(&p) || restarts(&p) > 0
			// A pod that was never ready yet is starting, not failing.
			if bad && known && state != was && p.DeletionTimestamp == nil {
				report(diagnosePod(ctx, c, &p, events.Items, nodes))
			}
		}
		for name, n := range nodes {
			if msg := n.Problems(); msg != "" && !stopped[name] && ctx.Err() == nil {
				stopped[name] = true
				report("node " + name + ": " + msg)
			}
		}
	})
}

// ownerOf names the workload a pod belongs to: its DaemonSet, or the
// Deployment of its ReplicaSet.
func ownerOf(ctx context.Context, c client.Client, p *corev1.Pod) string {
	if len(p.OwnerReferences) == 0 {
		return "no owner"
	}
	ref := p.OwnerReferences[0]
	if ref.Kind == "ReplicaSet" {
		var rs appsv1.ReplicaSet
		if err := c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: ref.Name}, &rs); err == nil && len(rs.OwnerReferences) > 0 {
			ref = rs.OwnerReferences[0]
		}
	}
	return ref.Kind + "/" + ref.Name
}

func restarts(p *corev1.Pod) int32 {
	var n int32
	for _, cs := range p.Status.ContainerStatuses {
		n += cs.RestartCount
	}
	return n
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func stateOf(s corev1.ContainerState) string {
	switch {
	case s.Running != nil:
		return "running since " + s.Running.StartedAt.Format(time.TimeOnly)
	case s.Waiting != nil:
		return fmt.Sprintf("waiting (%s: %s)", s.Waiting.Reason, s.Waiting.Message)
	case s.Terminated != nil:
		return fmt.Sprintf("terminated (%s, exit %d: %s)", s.Terminated.Reason, s.Terminated.ExitCode, strings.TrimSpace(s.Terminated.Message))
	}
	return "not started"
}

func lastOf(s corev1.ContainerState) string {
	if s.Terminated == nil {
		return ""
	}
	return fmt.Sprintf("; last ended %s, exit %d", s.Terminated.Reason, s.Terminated.ExitCode)
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n  ")
}

// PodTimes says, per pod of namespace, when its kubelet started its
// container and when its readiness probe first passed, counted from the
// pod's creation (the API's timestamps have 1 s resolution).
func PodTimes(ctx context.Context, c client.Client, namespace string) []string {
	var pods corev1.PodList
	if err := c.List(ctx, &pods, client.InNamespace(namespace)); err != nil {
		return []string{err.Error()}
	}
	var out []string
	for _, p := range pods.Items {
		created := p.CreationTimestamp.Time
		started, ready := "?", "?"
		for _, cs := range p.Status.ContainerStatuses {
			if cs.State.Running != nil {
				started = cs.State.Running.StartedAt.Sub(created).String()
			}
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
				ready = cond.LastTransitionTime.Sub(created).String()
			}
		}
		out = append(out, fmt.Sprintf("pod %s (%s) on %s: container started %s, Ready %s after the pod's creation", p.Name, ownerOf(ctx, c, &p), p.Spec.NodeName, started, ready))
	}
	sort.Strings(out)
	return out
}
