package chart

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr/testr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ironlb/ironlb/internal/app"
	"github.com/ironlb/ironlb/test/apiserver"
)

// checkMetricsAuth serves the metrics endpoint the way the speaker does,
// reviewing scrapes with the speaker's ServiceAccount (so the chart's
// RBAC must allow the reviews), and proves it answers only a token bound
// to the chart's metrics-reader ClusterRole, and only for /metrics.
func checkMetricsAuth(ctx context.Context, t *testing.T, env *apiserver.Env, c client.Client) {
	t.Helper()
	scfg, _, err := env.ServiceAccount(ctx, ns, "r0-speaker")
	if err != nil {
		t.Fatal(err)
	}
	hc, err := rest.HTTPClientFor(scfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector())
	if err := app.StartMetrics(ctx, app.MetricsOptions{
		Addr: addr, Pprof: true, Gatherer: reg, Config: scfg, HTTPClient: hc, Log: testr.New(t),
	}); err != nil {
		t.Fatal(err)
	}

	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "scraper"}}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "scraper"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "r0-metrics-reader"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: ns, Name: "scraper"}},
	}
	for _, o := range []client.Object{sa, binding} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
	}
	token := func(name string) string {
		cfg, _, err := env.ServiceAccount(ctx, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		return cfg.BearerToken
	}
	scraper, other := token("scraper"), token("r0-controller")

	web := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	get := func(path, auth string) (int, string, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+addr+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := web.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b), nil
	}
	// The server takes a moment to listen.
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, _, err := get("/metrics", ""); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("metrics server at %s: %v", addr, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, tc := range []struct {
		what, path, auth string
		code             int
		body             string
	}{
		{"no token", "/metrics", "", http.StatusUnauthorized, "Unauthorized"},
		{"a made-up token", "/metrics", "Bearer not-a-token", http.StatusUnauthorized, "Unauthorized"},
		{"another scheme", "/metrics", "Basic " + scraper, http.StatusUnauthorized, "Unauthorized"},
		{"a valid token without the role", "/metrics", "Bearer " + other, http.StatusForbidden, `may not get /metrics`},
		{"the metrics reader", "/metrics", "Bearer " + scraper, http.StatusOK, "# HELP"},
		{"the metrics reader, scheme in lower case (cached decision)", "/metrics", "bearer " + scraper, http.StatusOK, "# HELP"},
		{"the metrics reader on the profiler", "/debug/pprof/", "Bearer " + scraper, http.StatusForbidden, `may not get /debug/pprof/`},
		{"no token on the profiler", "/debug/pprof/", "", http.StatusUnauthorized, "Unauthorized"},
	} {
		code, body, err := get(tc.path, tc.auth)
		if err != nil {
			t.Fatalf("%s: %v", tc.what, err)
		}
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s: GET %s = %d %q, want %d with %q", tc.what, tc.path, code, firstLine(body), tc.code, tc.body)
		}
	}
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return fmt.Sprintf("%.120s", s)
}
