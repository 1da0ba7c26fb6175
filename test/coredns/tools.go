//go:build tools

// Package coredns pins the cluster DNS the real-cluster tests run: Knative's
// autoscaler and activator find Services by name.
package coredns

import _ "github.com/coredns/coredns"
