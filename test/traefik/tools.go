//go:build tools

// Package traefik pins the ingress the real-cluster tests run in front of
// Knative Serving.
package traefik

import _ "github.com/traefik/traefik/v3/cmd/traefik"
