package chart

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/config/v1beta1"
	"github.com/ironlb/ironlb/inspect"
	"github.com/ironlb/ironlb/speaker/announce"
	"github.com/ironlb/ironlb/test/apiserver"
)

// TestKubectlIronlbUnderChartRBAC runs the built plugin as kubectl runs
// it (`kubectl ironlb`, found on the PATH) against a real API server,
// under a ServiceAccount bound to nothing but the chart's read-only
// <release>-inspect ClusterRole: a cluster of three Ready nodes, the
// speaker Pod Ready on two, one layer-2 Service. It reads what the
// speakers would do, simulates a drain, and can change nothing.
func TestKubectlIronlbUnderChartRBAC(t *testing.T) {
	root, err := apiserver.Root()
	if err != nil {
		t.Fatal(err)
	}
	plugin := filepath.Join(root, "bin", "kubectl-ironlb")
	kubectl := filepath.Join(root, "bin", "k8s", "kubectl")
	for _, bin := range []string{plugin, kubectl} {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("%s not found: run `make build k8s-binaries`", bin)
		}
	}
	env, err := apiserver.New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = env.Stop() })
	ctx := context.Background()
	c := env.Client
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}))
	manifest, err := helm(t, "template", "r0", "charts/ironlb", "--namespace", ns, "--show-only", "templates/inspect-rbac.yaml")
	must(err)
	apply(ctx, t, c, manifest)
	var role rbacv1.ClusterRole
	must(c.Get(ctx, client.ObjectKey{Name: "r0-inspect"}, &role))
	for _, r := range role.Rules {
		if !slices.Equal(r.Verbs, []string{"get", "list"}) {
			t.Fatalf("the inspect ClusterRole grants %v on %v: it must only read", r.Verbs, r.Resources)
		}
	}
	// A second role without pods: the plugin says it cannot tell which
	// speakers run, and goes on.
	noPods := role.DeepCopy()
	noPods.ObjectMeta = metav1.ObjectMeta{Name: "inspect-no-pods"}
	for i := range noPods.Rules {
		noPods.Rules[i].Resources = slices.DeleteFunc(noPods.Rules[i].Resources, func(r string) bool { return r == "pods" })
	}
	must(c.Create(ctx, noPods))
	kubeconfigs := map[string]string{}
	for sa, roleName := range map[string]string{"viewer": "r0-inspect", "nopods": "inspect-no-pods"} {
		must(c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: sa}}))
		must(c.Create(ctx, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: sa},
			RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: roleName},
			Subjects: []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: sa}}}))
		path, err := env.WriteKubeconfig(ctx, t.TempDir(), ns, sa)
		must(err)
		kubeconfigs[sa] = path
	}

	// The cluster: n1-n3 Ready, speakers Ready on n1 and n2 only.
	for _, n := range []string{"n1", "n2", "n3"} {
		node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: n}}
		must(c.Create(ctx, node))
		node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastHeartbeatTime: metav1.Now(), LastTransitionTime: metav1.Now()}}
		must(c.Status().Update(ctx, node))
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "speaker-" + n, Labels: map[string]string{
			"app.kubernetes.io/name": "ironlb", "app.kubernetes.io/instance": "r0", "app.kubernetes.io/component": "speaker"}},
			Spec: corev1.PodSpec{NodeName: n, AutomountServiceAccountToken: ptr.To(false), Containers: []corev1.Container{{Name: "speaker", Image: "ironlb"}}}}
		must(c.Create(ctx, pod))
		ready := corev1.ConditionTrue
		if n == "n3" {
			ready = corev1.ConditionFalse
		}
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: ready}}
		must(c.Status().Update(ctx, pod))
	}
	must(c.Create(ctx, &v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "lan"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.0.0/28"}}}))
	must(c.Create(ctx, &v1beta1.L2Advertisement{ObjectMeta: metav1.ObjectMeta{Name: "lan"}}))
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web"}, Spec: corev1.ServiceSpec{
		Type: corev1.ServiceTypeLoadBalancer, Selector: map[string]string{"app": "web"},
		Ports: []corev1.ServicePort{{Port: 80, TargetPort: intstr.FromInt32(80), Protocol: corev1.ProtocolTCP}}}}
	must(c.Create(ctx, svc))
	svc.Status.LoadBalancer.Ingress = []corev1.LoadBalancerIngress{{IP: "198.18.0.1"}}
	must(c.Status().Update(ctx, svc))
	must(c.Create(ctx, &discoveryv1.EndpointSlice{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "web-1", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Endpoints:   []discoveryv1.Endpoint{{Addresses: []string{"10.0.0.1"}, NodeName: ptr.To("n1"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}}}))

	run := func(sa string, args ...string) (stdout, stderr string) {
		t.Helper()
		cmd := exec.CommandContext(ctx, kubectl, append([]string{"ironlb"}, args...)...)
		cmd.Env = append(os.Environ(), "KUBECONFIG="+kubeconfigs[sa], "PATH="+filepath.Dir(plugin)+":"+os.Getenv("PATH"))
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("kubectl ironlb %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), errOut.String())
		}
		return out.String(), errOut.String()
	}

	out, errOut := run("viewer", "status", "-A", "-o", "json")
	var l struct{ Items []inspect.ServiceStatus }
	must(json.Unmarshal([]byte(out), &l))
	if len(l.Items) != 1 || len(l.Items[0].Addresses) != 1 || l.Items[0].Addresses[0].Layer2 == nil {
		t.Fatalf("status: %s", out)
	}
	l2 := l.Items[0].Addresses[0].Layer2
	if len(l2.Announcing) != 1 || l2.Announcing[0] == "n3" {
		t.Fatalf("web announced by %v, want n1 or n2: %s", l2.Announcing, out)
	}
	owner := l2.Announcing[0]
	other := map[string]string{"n1": "n2", "n2": "n1"}[owner]
	if !slices.Contains(l2.Others, inspect.NodeReason{Node: "n3", Reason: announce.WhySpeakerDown}) ||
		!slices.Contains(l2.Others, inspect.NodeReason{Node: other, Reason: announce.WhyNotElected}) {
		t.Fatalf("other nodes' reasons: %+v", l2.Others)
	}
	if errOut != "" {
		t.Fatalf("stderr with every read allowed: %s", errOut)
	}

	out, _ = run("viewer", "simulate-drain", owner, "-o", "yaml")
	if !strings.Contains(out, "ip: 198.18.0.1") || !strings.Contains(out, "- "+other) {
		t.Fatalf("draining %s should move 198.18.0.1 to %s:\n%s", owner, other, out)
	}
	out, _ = run("viewer", "why", "web", "-n", "default")
	if !strings.Contains(out, "default/web: Announced") || !strings.Contains(out, "announced over layer 2 by "+owner) {
		t.Fatalf("why:\n%s", out)
	}
	out, _ = run("viewer", "pools")
	if !strings.Contains(out, "NAME") || !strings.Contains(out, "lan") {
		t.Fatalf("pools:\n%s", out)
	}
	out, _ = run("viewer", "status", "-A")
	t.Logf("kubectl ironlb status -A:\n%s", out)
	if !strings.Contains(out, "NAMESPACE") || !strings.Contains(out, "198.18.0.1") {
		t.Fatalf("status table:\n%s", out)
	}
	out, _ = run("viewer", "simulate-drain", owner)
	t.Logf("kubectl ironlb simulate-drain %s:\n%s", owner, out)
	out, _ = run("viewer", "status", "web", "-n", "default")
	t.Logf("kubectl ironlb status web:\n%s", out)
	if !strings.Contains(out, "layer2: "+owner) || !strings.Contains(out, "n3: "+announce.WhySpeakerDown) {
		t.Fatalf("status web:\n%s", out)
	}

	// Without access to pods: a note, and every Ready node taken as running.
	out, errOut = run("nopods", "status", "-A", "-o", "json")
	if !strings.Contains(errOut, "note: no access to list pods") || !strings.Contains(out, "198.18.0.1") {
		t.Fatalf("without pods: %s / %s", out, errOut)
	}

	// The role reads and nothing more.
	cfg, _, err := env.ServiceAccount(ctx, ns, "viewer")
	must(err)
	viewer, err := client.New(cfg, client.Options{Scheme: env.Scheme})
	must(err)
	for _, obj := range []client.Object{
		&corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "x"}, Spec: corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 1}}}},
		&v1beta1.IPAddressPool{ObjectMeta: metav1.ObjectMeta{Name: "x"}, Spec: v1beta1.IPAddressPoolSpec{Addresses: []v1beta1.AddressRange{"198.18.1.0/28"}}},
	} {
		if err := viewer.Create(ctx, obj); !apierrors.IsForbidden(err) {
			t.Fatalf("the inspect role created a %T: %v", obj, err)
		}
	}
}
