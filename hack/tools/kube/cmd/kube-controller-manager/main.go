// Command kube-controller-manager is the upstream
// k8s.io/kubernetes/cmd/kube-controller-manager entry point, rebuilt from the
// Go module proxy: the lab and the e2e tests run it for the EndpointSlice
// controller (and node IPAM), so EndpointSlices are made by Kubernetes from
// Pods, never by test code.
package main

import (
	"os"
	_ "time/tzdata" // for CronJob time zone support

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-controller-manager/app"
)

func main() {
	command := app.NewControllerManagerCommand()
	code := cli.Run(command)
	os.Exit(code)
}
