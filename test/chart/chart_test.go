// Package chart tests the Helm chart the way an admin uses it: helm lint
// and template, then a server-side apply of the rendered manifests to a
// real API server, and the controller run under the chart's own
// ServiceAccount to prove its RBAC is enough, and no more.
package chart

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/ironlb/ironlb/config"
	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/controller"
	"github.com/ironlb/ironlb/internal/app"
	"github.com/ironlb/ironlb/test/apiserver"
)

const ns = "ironlb-system"

func helm(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return apiserver.Helm(args...)
}

var nonDefault = []string{
	"--set", "controller.replicas=3", "--set", "controller.defaultClass=false", "--set", "controller.workers=4",
	"--set", "controller.logLevel=debug", "--set", "image.tag=test", "--set", "controller.podDisruptionBudget.enabled=false",
	"--set", "serviceAccounts.controller.name=lb-ctl",
}

func TestLintAndTemplate(t *testing.T) {
	for _, args := range [][]string{nil, nonDefault, {"--set", "metrics.serviceMonitor.enabled=true"}} {
		if out, err := helm(t, append([]string{"lint", "--strict", "charts/ironlb"}, args...)...); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		if _, err := helm(t, append([]string{"template", "x", "charts/ironlb", "--namespace", ns}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	// Prometheus Operator users get a ServiceMonitor for each component.
	out, err := helm(t, "template", "x", "charts/ironlb", "--namespace", ns, "--set", "metrics.serviceMonitor.enabled=true")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"name: x-controller\n", "name: x-speaker\n"} {
		if !strings.Contains(out, "kind: ServiceMonitor\nmetadata:\n  "+name) {
			t.Errorf("no ServiceMonitor %s", strings.TrimSpace(name))
		}
	}
	// values.schema.json turns typos and nonsense into errors at install.
	for _, bad := range [][]string{
		{"--set", "controller.replicas=0"},
		{"--set", "controller.logLevel=loud"},
		{"--set", "controller.replica=2"},
		{"--set", "image.pullPolicy=Sometimes"},
	} {
		if _, err := helm(t, append([]string{"template", "x", "charts/ironlb"}, bad...)...); err == nil {
			t.Errorf("helm template %v accepted", bad)
		}
	}
}

func apply(ctx context.Context, t *testing.T, c client.Client, manifest string) []*unstructured.Unstructured {
	t.Helper()
	objs, err := apiserver.Apply(ctx, c, manifest)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

func TestApplyAndRunUnderChartRBAC(t *testing.T) {
	env, err := apiserver.NewBare()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := env.Client
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}); err != nil {
		t.Fatal(err)
	}
	for i, args := range [][]string{nil, nonDefault} {
		manifest, err := helm(t, append([]string{"template", fmt.Sprintf("r%d", i), "charts/ironlb", "--namespace", ns, "--include-crds"}, args...)...)
		if err != nil {
			t.Fatal(err)
		}
		objs := apply(ctx, t, c, manifest)
		if len(objs) < 10 {
			t.Fatalf("only %d objects rendered", len(objs))
		}
	}
	// Every CRD becomes Established.
	deadline := time.Now().Add(20 * time.Second)
	for {
		var crds apiextensionsv1.CustomResourceDefinitionList
		wantCRDs := chartCRDs(t)
		if err := c.List(ctx, &crds); err != nil {
			t.Fatal(err)
		}
		established := 0
		for _, crd := range crds.Items {
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established++
				}
			}
		}
		if established == len(crds.Items) && len(crds.Items) == wantCRDs {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d CRDs established", established, len(crds.Items))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The controller, impersonating the chart's ServiceAccount, does its
	// whole job: lease, config status, finalizer, allocation, events.
	cfg, _, err := env.ServiceAccount(ctx, ns, "r0-controller")
	if err != nil {
		t.Fatal(err)
	}
	app.TuneRESTConfig(cfg)
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme: env.Scheme, Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		LeaderElection: true, LeaderElectionID: "ironlb-controller", LeaderElectionNamespace: ns,
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := controller.Setup(mgr, controller.Options{Filter: config.ClassFilter{Default: true}}); err != nil {
		t.Fatal(err)
	}
	go func() { _ = mgr.Start(ctx) }()
	pool := &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/30"}}}
	if err := c.Create(ctx, pool); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
			Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80)}}},
	}
	if err := c.Create(ctx, svc); err != nil {
		t.Fatal(err)
	}
	eventually(t, func() string {
		_ = c.Get(ctx, types.NamespacedName{Namespace: "default", Name: "web"}, svc)
		if len(svc.Status.LoadBalancer.Ingress) != 1 || svc.Annotations[v1beta1.AnnotationAllocatedFrom] != "p" {
			return fmt.Sprintf("service status %+v annotations %v", svc.Status, svc.Annotations)
		}
		_ = c.Get(ctx, types.NamespacedName{Name: "p"}, pool)
		if len(pool.Finalizers) == 0 || len(pool.Status.Conditions) == 0 || pool.Status.Assigned != 1 {
			return fmt.Sprintf("pool %+v %+v", pool.Finalizers, pool.Status)
		}
		// Leader election records its change as a core Event in the
		// lease's namespace (forbidden before the Role allowed it).
		var evs corev1.EventList
		_ = c.List(ctx, &evs, client.InNamespace(ns))
		for _, e := range evs.Items {
			if e.Reason == "LeaderElection" {
				return ""
			}
		}
		return fmt.Sprintf("no LeaderElection Event in %s among %d", ns, len(evs.Items))
	})

	// And no more than its job.
	sac, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	forbidden := []struct {
		what string
		do   func() error
	}{
		{"update a Service's spec", func() error {
			s := svc.DeepCopy()
			s.Spec.Selector = map[string]string{"app": "evil"}
			return sac.Update(ctx, s)
		}},
		{"delete a Service", func() error { return sac.Delete(ctx, svc.DeepCopy()) }},
		{"read Secrets", func() error { return sac.List(ctx, &corev1.SecretList{}) }},
		{"read Pods", func() error { return sac.List(ctx, &corev1.PodList{}) }},
		{"create a pool", func() error {
			return sac.Create(ctx, &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.9.0/30"}}})
		}},
		{"write a lease in another namespace", func() error {
			u := &unstructured.Unstructured{}
			u.SetAPIVersion("coordination.k8s.io/v1")
			u.SetKind("Lease")
			u.SetNamespace("default")
			u.SetName("x")
			return sac.Create(ctx, u)
		}},
	}
	for _, f := range forbidden {
		if err := f.do(); !apierrors.IsForbidden(err) {
			t.Errorf("the controller's ServiceAccount may %s (err %v)", f.what, err)
		}
	}

	// The speaker's account: reads what it must, writes only Service
	// status, nothing else.
	scfg, _, err := env.ServiceAccount(ctx, ns, "r0-speaker")
	if err != nil {
		t.Fatal(err)
	}
	spk, err := client.New(scfg, client.Options{Scheme: env.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range []client.ObjectList{&corev1.NodeList{}, &corev1.ServiceList{}, &discoveryv1.EndpointSliceList{}, &v1beta1.L2AdvertisementList{}, &v1beta1.BGPPeerList{}} {
		if err := spk.List(ctx, l); err != nil {
			t.Errorf("speaker cannot list %T: %v", l, err)
		}
	}
	// BGP passwords: Secrets of its own namespace only.
	if err := spk.List(ctx, &corev1.SecretList{}, client.InNamespace(ns)); err != nil {
		t.Errorf("speaker cannot read the Secrets of its namespace: %v", err)
	}
	if err := spk.Create(ctx, &v1beta1.BGPNodeStatus{ObjectMeta: metav1.ObjectMeta{Name: "n1"}}); err != nil {
		t.Errorf("speaker cannot create its BGPNodeStatus: %v", err)
	}
	patched := svc.DeepCopy()
	patched.Status.Conditions = append(patched.Status.Conditions, metav1.Condition{Type: v1beta1.ServiceConditionAnnounced, Status: metav1.ConditionTrue, Reason: "Layer2", Message: "test", LastTransitionTime: metav1.Now()})
	if err := spk.Status().Patch(ctx, patched, client.StrategicMergeFrom(svc)); err != nil {
		t.Errorf("speaker cannot write its Service condition: %v", err)
	}
	for _, f := range []struct {
		what string
		do   func() error
	}{
		{"update a Service's spec", func() error {
			s := svc.DeepCopy()
			_ = c.Get(ctx, client.ObjectKeyFromObject(s), s)
			s.Spec.Selector = map[string]string{"app": "evil"}
			return spk.Update(ctx, s)
		}},
		{"read Secrets cluster-wide", func() error { return spk.List(ctx, &corev1.SecretList{}) }},
		{"read a Secret of another namespace", func() error {
			return spk.Get(ctx, types.NamespacedName{Namespace: "default", Name: "other"}, &corev1.Secret{})
		}},
		{"write BGP password Secrets", func() error {
			return spk.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "evil"}})
		}},
		{"change a pool", func() error {
			p := pool.DeepCopy()
			_ = c.Get(ctx, client.ObjectKeyFromObject(p), p)
			p.Spec.AvoidBuggyIPs = true
			return spk.Update(ctx, p)
		}},
		{"label a node", func() error {
			var n corev1.Node
			n.Name = "x"
			return spk.Create(ctx, &n)
		}},
	} {
		if err := f.do(); !apierrors.IsForbidden(err) {
			t.Errorf("the speaker's ServiceAccount may %s (err %v)", f.what, err)
		}
	}

	checkMetricsAuth(ctx, t, env, c)
}

// chartCRDs counts the CRD manifests the chart ships.
func chartCRDs(t *testing.T) int {
	t.Helper()
	files, err := filepath.Glob("../../charts/ironlb/crds/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no CRDs in charts/ironlb/crds (%v)", err)
	}
	return len(files)
}

func eventually(t *testing.T, cond func() string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	var last string
	for time.Now().Before(deadline) {
		if last = cond(); last == "" {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal(last)
}
