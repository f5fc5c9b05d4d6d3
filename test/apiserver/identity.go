package apiserver

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Grant makes ServiceAccount kube-system/sa, bound to each of the cluster
// roles, as an installer binds a cluster's components (kube-proxy to
// system:node-proxier, ...). It may be called again.
func (e *Env) Grant(ctx context.Context, sa string, roles ...string) error {
	acct := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: metav1.NamespaceSystem, Name: sa}}
	if err := e.Client.Create(ctx, acct); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("serviceaccount kube-system/%s: %w", sa, err)
	}
	for _, role := range roles {
		crb := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "lab:" + sa + ":" + strings.TrimPrefix(role, "system:")},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: metav1.NamespaceSystem, Name: sa}},
		}
		if err := e.Client.Create(ctx, crb); err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("clusterrolebinding %s: %w", crb.Name, err)
		}
	}
	return nil
}

// WriteKubeconfig writes a kubeconfig of ServiceAccount namespace/sa to
// dir/sa.kubeconfig (ServiceAccount) and returns its path.
func (e *Env) WriteKubeconfig(ctx context.Context, dir, namespace, sa string) (string, error) {
	_, data, err := e.ServiceAccount(ctx, namespace, sa)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, sa+".kubeconfig")
	return path, os.WriteFile(path, data, 0o600)
}
