package main

import (
	"fmt"
	"os"

	"github.com/admitfn/admitfn/functions/policy"
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
