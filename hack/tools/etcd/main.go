// Command etcd is the upstream go.etcd.io/etcd/server/v3 entry point
// (server/main.go), rebuilt from the Go module proxy for envtest.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
