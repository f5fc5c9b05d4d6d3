//go:build tools

// Package tools pins MetalLB for the side-by-side comparison (issue 18,
// hack/peers.sh builds its controller and speaker into bin/peers/): a
// nested module, so MetalLB's dependencies never enter ironlb's. MetalLB
// v0.15.2 needs github.com/metallb/frr-k8s, pinned to v0.0.21, the
// newest the Go module proxy serves.
package tools

import (
	_ "go.universe.tf/metallb/controller"
	_ "go.universe.tf/metallb/speaker"
)
