//go:build tools

// Knative Serving's commands, built with ko into the loopback registry for
// the real-cluster tests (test/cluster): the control plane and the
// queue-proxy sidecar of every Revision.
package knative

import (
	_ "knative.dev/serving/cmd/activator"
	_ "knative.dev/serving/cmd/autoscaler"
	_ "knative.dev/serving/cmd/controller"
	_ "knative.dev/serving/cmd/queue"
	_ "knative.dev/serving/cmd/webhook"
)
