// Command kubelet is the upstream k8s.io/kubernetes/cmd/kubelet entry point,
// rebuilt from the Go module proxy: test/kubelet runs one per lab node, with
// containerd v2 (hack/tools/containerd), so the chart's DaemonSet and
// Deployment run as real pods from the real image.
package main

import (
	"context"
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kubelet/app"
)

func main() {
	command := app.NewKubeletCommand(context.Background())
	code := cli.Run(command)
	os.Exit(code)
}
