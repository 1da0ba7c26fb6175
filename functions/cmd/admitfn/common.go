package main

import (
	"fmt"
	"os"

	"github.com/admitfn/admitfn/functions/policy"
	"github.com/admitfn/admitfn/functions/resolver"
	"github.com/admitfn/admitfn/functions/review"
)

// loadPolicy reads the policy file, or the embedded default when path is
// empty.
func loadPolicy(path string) (*policy.Policy, error) {
	if path == "" {
		return policy.Default(), nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := policy.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// newReviewer wires the policy to a registry resolver. Nothing here touches
// the network: lookups happen per review.
func newReviewer(p *policy.Policy) (*review.Reviewer, error) {
	res, err := resolver.New(p.Registry, resolver.WithUserAgent("admitfn/"+version))
	if err != nil {
		return nil, err
	}
	return review.New(p, res), nil
}
