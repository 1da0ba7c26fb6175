// Package config holds the Kubernetes manifests `ko apply -f config/`
// deploys, and embeds the webhook registrations (webhooks/) for
// `admitfn webhook-config`, which fills in the Service's URL.
package config

import "embed"

// Webhooks holds webhooks/500-validating.yaml and webhooks/510-mutating.yaml.
//
//go:embed webhooks/*.yaml
var Webhooks embed.FS
