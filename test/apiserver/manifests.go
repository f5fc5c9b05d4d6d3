package apiserver

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	authenticationv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Helm runs bin/k8s/helm (built by `make helm`) in the repository root
// with throw-away helm home folders, and returns its standard output.
func Helm(args ...string) (string, error) {
	root, err := Root()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "bin", "k8s", "helm")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s not found: run `make helm` (it builds helm from source)", bin)
	}
	home, err := os.MkdirTemp("", "ironlb-helm-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(home)
	cmd := exec.Command(bin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("helm %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return out.String(), nil
}

// Apply server-side-applies every document of a multi-document manifest,
// the way `kubectl apply --server-side` does.
func Apply(ctx context.Context, c client.Client, manifest string) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifest), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return objs, err
		}
		if len(u.Object) == 0 {
			continue
		}
		if err := c.Patch(ctx, u, client.Apply, client.FieldOwner("ironlb-test"), client.ForceOwnership); err != nil {
			return objs, fmt.Errorf("apply %s %s: %w", u.GetKind(), u.GetName(), err)
		}
		objs = append(objs, u)
	}
}

// ServiceAccount returns a client config and a kubeconfig file's content
// that authenticate as a ServiceAccount, with a token from the TokenRequest
// API: what a pod running under that account gets.
func (e *Env) ServiceAccount(ctx context.Context, namespace, name string) (*rest.Config, []byte, error) {
	cs, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return nil, nil, err
	}
	tr, err := cs.CoreV1().ServiceAccounts(namespace).CreateToken(ctx, name, &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptrTo(int64(24 * 3600))},
	}, metav1.CreateOptions{})
	if err != nil {
		return nil, nil, fmt.Errorf("token for serviceaccount %s/%s: %w", namespace, name, err)
	}
	cfg := rest.AnonymousClientConfig(e.Config)
	cfg.BearerToken = tr.Status.Token
	kc := clientcmdapi.NewConfig()
	kc.Clusters["lab"] = &clientcmdapi.Cluster{Server: cfg.Host, CertificateAuthorityData: cfg.CAData}
	kc.AuthInfos[name] = &clientcmdapi.AuthInfo{Token: tr.Status.Token}
	kc.Contexts["lab"] = &clientcmdapi.Context{Cluster: "lab", AuthInfo: name, Namespace: namespace}
	kc.CurrentContext = "lab"
	data, err := clientcmd.Write(*kc)
	return cfg, data, err
}

func ptrTo[T any](v T) *T { return &v }
