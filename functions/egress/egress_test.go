package egress

import (
	"net/netip"
	"testing"
)

// TestInward classifies addresses without connecting to any of them.
func TestInward(t *testing.T) {
	tests := []struct {
		addr string
		want string
	}{
		{"127.0.0.1", "a loopback"},
		{"127.9.9.9", "a loopback"},
		{"::1", "a loopback"},
		{"::ffff:127.0.0.1", "a loopback"},
		{"169.254.169.254", "a link-local"},
		{"fe80::1", "a link-local"},
		{"10.0.0.1", "a private"},
		{"172.16.5.4", "a private"},
		{"192.168.1.1", "a private"},
		{"fd00::1", "a private"},
		{"0.0.0.0", "an unspecified"},
		{"::", "an unspecified"},
		{"239.1.2.3", "a multicast"},
		{"100.64.0.1", "a shared (carrier-grade NAT)"},
		{"0.1.2.3", `a "this network"`},
		{"64:ff9b::a9fe:a9fe", "a NAT64"},
		{"8.8.8.8", ""},
		{"2001:4860:4860::8888", ""},
		{"172.32.0.1", ""},
	}
	for _, tc := range tests {
		t.Run(tc.addr, func(t *testing.T) {
			if got := Inward(netip.MustParseAddr(tc.addr)); got != tc.want {
				t.Errorf("Inward(%s) = %q, want %q", tc.addr, got, tc.want)
			}
		})
	}
}
