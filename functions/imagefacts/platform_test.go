package imagefacts

import (
	"testing"
)

// TestMayRun checks the node-platform rule against what containerd's
// default matcher (platforms.Only) accepts, widened to every variant where
// the policy names none.
func TestMayRun(t *testing.T) {
	t.Parallel()
	p := func(s string) Platform {
		t.Helper()
		x, err := ParsePlatform(s)
		if err != nil {
			t.Fatal(err)
		}
		return x
	}
	tests := []struct {
		node, child string
		want        bool
	}{
		{"linux/amd64", "linux/amd64", true},
		{"linux/amd64", "linux/386", true}, // containerd falls back to 386
		{"linux/amd64", "linux/i386", true},
		{"linux/amd64", "linux/x86_64", true},
		{"linux/amd64", "linux/amd64/v3", true}, // a v3 node may be meant
		{"linux/amd64/v2", "linux/amd64/v3", false},
		{"linux/amd64/v2", "linux/amd64/v1", true},
		{"linux/amd64/v2", "linux/amd64", true},
		{"linux/amd64", "linux/arm64", false},
		{"linux/amd64", "windows/amd64", false},
		{"linux/amd64", "unknown/unknown", false}, // attestation manifests
		{"linux/arm64", "linux/arm64", true},
		{"linux/arm64", "linux/aarch64", true},
		{"linux/arm64", "linux/arm64/v8", true},
		{"linux/arm64", "linux/arm/v7", true}, // 32-bit arm on arm64
		{"linux/arm64", "linux/arm/v8", true},
		{"linux/arm64", "linux/arm", true},
		{"linux/arm64", "linux/arm64/v9", true},
		{"linux/arm64/v8", "linux/arm64/v9", false},
		{"linux/arm64", "linux/amd64", false},
		{"linux/arm/v7", "linux/arm/v6", true},
		{"linux/arm/v7", "linux/arm/v5", true},
		{"linux/arm/v6", "linux/arm/v7", false},
		{"linux/arm/v7", "linux/arm", true},    // arm is arm/v7
		{"linux/arm/v6", "linux/armhf", false}, // armhf is arm/v7
		{"linux/arm/v6", "linux/armel", true},
		{"linux/s390x", "linux/s390x", true},
		{"linux/riscv64", "linux/riscv64/rva23", true},
		{"LINUX/AMD64", "linux/amd64", true},
	}
	for _, tt := range tests {
		t.Run(tt.node+" runs "+tt.child, func(t *testing.T) {
			if got := p(tt.node).MayRun(p(tt.child)); got != tt.want {
				t.Errorf("%s.MayRun(%s) = %v, want %v", tt.node, tt.child, got, tt.want)
			}
		})
	}
}
