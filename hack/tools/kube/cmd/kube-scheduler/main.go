// Command kube-scheduler is the upstream k8s.io/kubernetes/cmd/kube-scheduler
// entry point, rebuilt from the Go module proxy: it places the chart's
// Deployment and DaemonSet pods on the lab's real kubelets.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-scheduler/app"
)

func main() {
	command := app.NewSchedulerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
