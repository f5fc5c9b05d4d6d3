// Command pause is the sandbox process of the lab's pods (test/kubelet):
// containerd starts one per pod to hold its namespaces, as the upstream
// pause image does; that image is in a registry these machines cannot
// reach, so `hack/k8s-binaries.sh` builds this one. It waits for SIGINT or
// SIGTERM and reaps the children it inherits as a pod's PID 1.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
