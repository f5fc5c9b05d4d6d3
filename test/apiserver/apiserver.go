// Package apiserver starts a real kube-apiserver and etcd for tests, with
// the ironlb CRDs installed. The binaries are built from source by
// `make k8s-binaries` into bin/k8s; nothing is downloaded at test time.
package apiserver

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ironlb/ironlb/config/v1beta1"
)

// The API server's Service (ClusterIP) ranges.
const (
	ServiceCIDRv4 = "10.96.0.0/16"
	ServiceCIDRv6 = "fd00:10:96::/112"
)

// Env is a running API server.
type Env struct {
	Config *rest.Config
	Client client.Client
	Scheme *runtime.Scheme
	env    *envtest.Environment
	// certDir holds certificates made here instead of by envtest.
	certDir string
}

// Root returns the repository root (the folder holding go.mod).
func Root() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", fmt.Errorf("no go.mod above the working directory")
		}
		dir = parent
	}
}

// BinDir returns where kube-apiserver and etcd are, failing with the make
// target that provides them when they are missing.
func BinDir() (string, error) {
	dir := os.Getenv("KUBEBUILDER_ASSETS")
	if dir == "" {
		root, err := Root()
		if err != nil {
			return "", err
		}
		dir = filepath.Join(root, "bin", "k8s")
	}
	for _, b := range []string{"kube-apiserver", "etcd"} {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("%s not found in %s: run `make k8s-binaries` (it builds kube-apiserver, etcd and kubectl from source)", b, dir)
		}
	}
	return dir, nil
}

// Scheme returns a scheme with the built-in kinds and ironlb's.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := v1beta1.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := apiextensionsv1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// Start starts a control plane for one test and stops it when the test
// ends. Service cluster IPs are dual-stack so dual-stack Services can be
// created.
func Start(t testing.TB) *Env {
	t.Helper()
	e, err := New()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := e.Stop(); err != nil {
			t.Logf("stop control plane: %v", err)
		}
	})
	return e
}

// New starts a control plane with the ironlb CRDs; the caller must Stop it.
func New() (*Env, error) { return start(options{crds: true}) }

// NewBare starts a control plane without the ironlb CRDs (for tests that
// install them the way an admin would).
func NewBare() (*Env, error) { return start(options{}) }

// NewOn is New with the API server serving on addr instead of loopback
// (its certificate names addr), for clients in other network namespaces,
// such as the kube-proxies of the nodes (test/datapath).
func NewOn(addr string) (*Env, error) { return start(options{crds: true, addr: addr}) }

// NewBareOn is NewBare with the API server serving on addr instead of
// loopback (its certificate names addr), for clients in other network
// namespaces, such as containers on a node's host network.
func NewBareOn(addr string) (*Env, error) { return start(options{addr: addr}) }

// NewForKubelets is NewBareOn for a cluster with real kubelets
// (test/kubelet): the ServiceAccount admission plugin, which envtest turns
// off, is on, so pods get the token volume a kubelet mounts, and pods must
// name a ServiceAccount that exists, as in any cluster.
func NewForKubelets(addr string) (*Env, error) {
	return start(options{addr: addr, serviceAccounts: true})
}

type options struct {
	crds            bool
	addr            string
	serviceAccounts bool
}

func start(o options) (*Env, error) {
	bin, err := BinDir()
	if err != nil {
		return nil, err
	}
	root, err := Root()
	if err != nil {
		return nil, err
	}
	env := &envtest.Environment{BinaryAssetsDirectory: bin}
	if o.crds {
		env.CRDDirectoryPaths = []string{filepath.Join(root, "charts", "ironlb", "crds")}
		env.ErrorIfCRDPathMissing = true
	}
	api := env.ControlPlane.GetAPIServer()
	if o.addr != "" {
		// envtest picks a loopback port unless given both.
		l, err := net.Listen("tcp", net.JoinHostPort(o.addr, "0"))
		if err != nil {
			return nil, fmt.Errorf("serve the API server on %s: %w", o.addr, err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		api.SecureServing.Address, api.SecureServing.Port = o.addr, strconv.Itoa(port)
	}
	api.Configure().Set("service-cluster-ip-range", ServiceCIDRv4+","+ServiceCIDRv6)
	e := &Env{Scheme: Scheme(), env: env}
	if o.serviceAccounts {
		api.Configure().Disable("disable-admission-plugins")
		// Pods dial the kubernetes Service's ClusterIP, the first address
		// of the Service range: the serving certificate must name it.
		if e.certDir, err = os.MkdirTemp("", "ironlb-apiserver-"); err != nil {
			return nil, err
		}
		kubernetesIP := netip.MustParsePrefix(ServiceCIDRv4).Addr().Next()
		ips := []net.IP{net.ParseIP(o.addr), net.IP(kubernetesIP.AsSlice())}
		if api.SecureServing.CA, err = writeServingCerts(e.certDir, ips); err != nil {
			os.RemoveAll(e.certDir)
			return nil, err
		}
		api.CertDir = e.certDir
	}
	cfg, err := env.Start()
	if err != nil {
		// Start may fail after etcd and the API server are up (a CRD
		// that does not install): stop them, or they outlive the test.
		_ = e.Stop()
		return nil, fmt.Errorf("start kube-apiserver and etcd from %s: %w", bin, err)
	}
	cfg.QPS, cfg.Burst = -1, 0
	e.Config = cfg
	if e.Client, err = client.New(cfg, client.Options{Scheme: e.Scheme}); err != nil {
		_ = e.Stop()
		return nil, err
	}
	return e, nil
}

// KubeConfig returns a kubeconfig for the admin user.
func (e *Env) KubeConfig() []byte { return e.env.KubeConfig }

// Stop stops the control plane.
func (e *Env) Stop() error {
	err := e.env.Stop()
	if e.certDir != "" {
		os.RemoveAll(e.certDir)
	}
	return err
}

// AddUser creates a user with the given groups and returns its config, for
// RBAC tests.
func (e *Env) AddUser(name string, groups ...string) (*rest.Config, error) {
	u, err := e.env.ControlPlane.AddUser(envtestUser(name, groups), nil)
	if err != nil {
		return nil, err
	}
	return u.Config(), nil
}
