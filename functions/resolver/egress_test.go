package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"

	"github.com/admitfn/admitfn/functions/egress"
	"github.com/admitfn/admitfn/functions/imagefacts"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/registrytest"
)

// countingListener accepts connections on a loopback address and counts
// them, answering nothing.
func countingListener(t *testing.T, addr string) (hostport string, accepted *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	accepted = &atomic.Int32{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	return ln.Addr().String(), accepted
}

// TestLookupsCannotBeAimedInward names a loopback listener in references,
// directly and through a name that resolves to it: no connection reaches
// it, and the error says why without the address. Listed as internal, the
// same registry is contacted.
func TestLookupsCannotBeAimedInward(t *testing.T) {
	t.Parallel()
	addr, accepted := countingListener(t, "127.0.0.1:0")
	_, port, _ := net.SplitHostPort(addr)
	for _, image := range []string{addr + "/probe:1", "localhost:" + port + "/probe:1"} {
		t.Run(image, func(t *testing.T) {
			r, err := New(settings(), WithKeychain(authn.NewMultiKeychain()))
			if err != nil {
				t.Fatal(err)
			}
			for _, level := range []imagefacts.Level{imagefacts.LevelDigest, imagefacts.LevelConfig} {
				f := r.Resolve(context.Background(), ref(t, image), level)
				var le *LookupError
				if !errors.As(f.Err, &le) || !strings.Contains(le.Kind, "a loopback address, which admitfn does not connect to") {
					t.Fatalf("Resolve(%s) = %+v, want a refusal naming the kind of address", image, f)
				}
				if strings.Contains(f.Err.Error(), "127.0.0.1") {
					t.Errorf("the error %q names the address it refused", f.Err)
				}
			}
		})
	}
	if n := accepted.Load(); n != 0 {
		t.Fatalf("%d connections reached the loopback listener, want none", n)
	}

	s := settings()
	s.Internal = []imageref.HostPattern{mustHostPattern(t, addr)}
	r, err := New(s, WithKeychain(authn.NewMultiKeychain()))
	if err != nil {
		t.Fatal(err)
	}
	if f := r.Resolve(context.Background(), ref(t, addr+"/probe:1"), imagefacts.LevelDigest); f.Err == nil {
		t.Fatalf("the listener answers nothing, yet Resolve = %+v", f)
	}
	if accepted.Load() == 0 {
		t.Error("a registry listed as internal was not contacted")
	}
}

// TestRedirectInwardIsRefused follows a registry's redirect (as to blob
// storage) to a loopback address the policy does not list.
func TestRedirectInwardIsRefused(t *testing.T) {
	t.Parallel()
	target, accepted := countingListener(t, "127.0.0.2:0")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://"+target+"/blob", http.StatusTemporaryRedirect)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	s := settings()
	s.Internal = []imageref.HostPattern{mustHostPattern(t, ln.Addr().String())}
	client := &http.Client{Transport: NewTransport(s)}
	_, err = client.Get(fmt.Sprintf("http://%s/v2/", ln.Addr()))
	var refused *egress.RefusedError
	if !errors.As(err, &refused) || refused.Kind != "a loopback" {
		t.Fatalf("GET through a redirect inward = %v, want it refused", err)
	}
	if n := accepted.Load(); n != 0 {
		t.Errorf("%d connections reached the redirect's target", n)
	}
}

// TestPanicInALookupIsAFailure: a panic inside the shared lookup (where
// singleflight would re-raise it in a goroutine nothing can recover) is a
// failed lookup, not the end of the process. The failure log, called
// inside the lookup, plays the defect.
func TestPanicInALookupIsAFailure(t *testing.T) {
	t.Parallel()
	reg := registrytest.New(t)
	img := reg.Ref("app", ":v1")
	reg.Stop()
	r, err := New(settings(reg.Host()), WithKeychain(authn.NewMultiKeychain()),
		WithFailureLog(func(string, error) { panic("defect") }))
	if err != nil {
		t.Fatal(err)
	}
	f := r.Resolve(context.Background(), ref(t, img), imagefacts.LevelDigest)
	if f.Err == nil || !strings.Contains(f.Err.Error(), "internal error (defect)") {
		t.Errorf("Resolve = %+v, want a failure naming the internal error", f)
	}
}
