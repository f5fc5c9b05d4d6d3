//go:build tools

// Package tools pins containerd v2 for hack/k8s-binaries.sh, which builds
// its daemon, runc shim and ctr from this module: the lab's nodes run real
// kubelets on containerd (test/kubelet). Kubernetes 1.35 was the last
// release to support containerd 1.x, which is what Debian 12 ships.
package tools

import (
	_ "github.com/containerd/containerd/v2/cmd/containerd"
	_ "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2"
	_ "github.com/containerd/containerd/v2/cmd/ctr"
)
