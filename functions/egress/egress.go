// Package egress decides which addresses admitfn may connect to when it
// asks registries about images.
//
// An image reference is chosen by whoever creates the pod (or, without
// caller authentication, whoever reaches admitfn), and a rule that resolves
// tags makes admitfn connect to the registry the reference names. Left
// alone, that lets a reference aim admitfn inward: at the node
// (127.0.0.1), the cloud metadata service (169.254.169.254), or any pod or
// Service on a private address. So a connection to an inward address is
// refused unless the policy lists the registry as internal, and the check
// is made on the address actually dialled, after name resolution: a public
// name that resolves inward is refused too, and so is a redirect inward.
package egress

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// RefusedError is a connection the guard did not open.
type RefusedError struct {
	// Host is the host:port that was dialled.
	Host string
	// Kind says what kind of inward address it resolved to.
	Kind string
	// Addr is that address (for logs, not for callers).
	Addr netip.Addr
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("%s resolves to %s address %s, which admitfn does not connect to", e.Host, e.Kind, e.Addr)
}

// inwardPrefixes are the ranges beyond the ones netip classifies itself.
func inwardPrefixes() []struct {
	prefix netip.Prefix
	kind   string
} {
	return []struct {
		prefix netip.Prefix
		kind   string
	}{
		{netip.MustParsePrefix("0.0.0.0/8"), "a \"this network\""},
		{netip.MustParsePrefix("100.64.0.0/10"), "a shared (carrier-grade NAT)"},
		{netip.MustParsePrefix("192.0.0.0/24"), "a protocol-assignment"},
		{netip.MustParsePrefix("198.18.0.0/15"), "a benchmarking"},
		{netip.MustParsePrefix("240.0.0.0/4"), "a reserved"},
		{netip.MustParsePrefix("64:ff9b::/96"), "a NAT64"},
		{netip.MustParsePrefix("64:ff9b:1::/48"), "a NAT64"},
	}
}

// Inward says what kind of inward address a is, or "" for an address on
// the outside.
func Inward(a netip.Addr) string {
	a = a.Unmap()
	switch {
	case !a.IsValid():
		return "an invalid"
	case a.IsLoopback():
		return "a loopback"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		return "a link-local"
	case a.IsPrivate():
		return "a private"
	case a.IsUnspecified():
		return "an unspecified"
	case a.IsMulticast(), a.IsInterfaceLocalMulticast():
		return "a multicast"
	}
	for _, p := range inwardPrefixes() {
		if p.prefix.Contains(a) {
			return p.kind
		}
	}
	return ""
}

// DialContext returns a dial function for an http.Transport that refuses
// inward addresses for every host:port that internal does not accept.
func DialContext(internal func(hostport string) bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	base := net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		if internal(addr) {
			return base.DialContext(ctx, network, addr)
		}
		d := base
		d.Control = func(_, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return &RefusedError{Host: addr, Kind: "an unparsable"}
			}
			if kind := Inward(ap.Addr()); kind != "" {
				return &RefusedError{Host: addr, Kind: kind, Addr: ap.Addr()}
			}
			return nil
		}
		return d.DialContext(ctx, network, addr)
	}
}
