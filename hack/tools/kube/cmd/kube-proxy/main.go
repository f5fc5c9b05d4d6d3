// Command kube-proxy is the upstream k8s.io/kubernetes/cmd/kube-proxy entry
// point, rebuilt from the Go module proxy: the lab and the e2e tests run one
// per node, so traffic to an announced address lands on real Service
// forwarding.
package main

import (
	"os"

	"k8s.io/component-base/cli"
	_ "k8s.io/component-base/logs/json/register"          // for JSON log format registration
	_ "k8s.io/component-base/metrics/prometheus/clientgo" // for client metric registration
	_ "k8s.io/component-base/metrics/prometheus/version"  // for version metric registration
	"k8s.io/kubernetes/cmd/kube-proxy/app"
)

func main() {
	command := app.NewProxyCommand()
	code := cli.Run(command)
	os.Exit(code)
}
