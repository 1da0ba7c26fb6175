// Command etcd is etcd's server, built from go.etcd.io/etcd/server/v3 so the
// e2e tests need no download other than Go modules.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
