package resolver

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	"github.com/admitfn/admitfn/functions/egress"
	"github.com/admitfn/admitfn/functions/imagefacts"
	"github.com/admitfn/admitfn/functions/imageref"
	"github.com/admitfn/admitfn/functions/readcap"
)

// failure turns a lookup's error into facts: "the registry says it does
// not exist" (a fact), "the registry refused admitfn" (decided by
// onRegistryUnauthorized), "the registry could not be asked" (decided by
// onRegistryError), or "the registry served something admitfn will not
// judge" (Facts.Malformed: a verdict, since whoever pushed the image caused
// it). The error says what kind of failure it was, and never the
// underlying network error: a reason goes back to whoever asked, and raw
// errors would tell them about hosts and ports admitfn can see. The detail
// goes to the failure log.
func (r *Resolver) failure(level imagefacts.Level, ref imageref.Ref, err error) imagefacts.Facts {
	switch kind, words := classify(err); kind {
	case failNotFound:
		return imagefacts.Facts{Level: level, NotFound: true}
	case failUnauthorized, failAnswered:
		return imagefacts.Facts{Level: level, Unauthorized: kind == failUnauthorized, Err: fmt.Errorf("looking up %s: the registry answered %s", ref.String(), words)}
	case failMalformed:
		r.onFailure(ref.String(), err)
		return imagefacts.Facts{Level: level, Malformed: errors.New(words)}
	default:
		r.onFailure(ref.String(), err)
		return imagefacts.Facts{Level: level, Err: &LookupError{Image: ref.String(), Registry: ref.Registry, Kind: words, detail: err}}
	}
}

// LookupError is a lookup that got no answer from the registry.
type LookupError struct {
	Image, Registry string
	// Kind says what went wrong, in words fit for a denial's reason.
	Kind   string
	detail error
}

// Error is the kind alone: the rule's reason already names the image and
// the registry.
func (e *LookupError) Error() string { return e.Kind }

// Unwrap returns the underlying error, for errors.Is and errors.As.
func (e *LookupError) Unwrap() error { return e.detail }

// failKind sorts the errors of a lookup.
type failKind int

const (
	// failUnreachable: no answer (refused, reset, timed out, not TLS…).
	failUnreachable failKind = iota
	// failNotFound: the registry answered that it has no such thing.
	failNotFound
	// failUnauthorized: 401 or 403.
	failUnauthorized
	// failAnswered: any other error status.
	failAnswered
	// failMalformed: the registry answered, with something admitfn will
	// not judge (not JSON, of another kind, too large, too many parts).
	failMalformed
)

// classify sorts err and names it in words fit for a denial's reason. It
// reads error types only, never message text.
func classify(err error) (failKind, string) {
	var (
		terr     *transport.Error
		refused  *egress.RefusedError
		plain    *PlainHTTPError
		shape    *shapeError
		dnsErr   *net.DNSError
		netErr   net.Error
		certErr  *tls.CertificateVerificationError
		recErr   tls.RecordHeaderError
		authErr  x509.UnknownAuthorityError
		hostErr  x509.HostnameError
		invalErr x509.CertificateInvalidError
		syntax   *json.SyntaxError
		typeErr  *json.UnmarshalTypeError
		exceeded *readcap.ExceededError
	)
	switch {
	case errors.As(err, &exceeded):
		return failMalformed, exceeded.Error()
	case errors.As(err, &shape):
		return failMalformed, shape.Error()
	case errors.As(err, &terr):
		return classifyStatus(terr)
	case errors.As(err, &refused):
		return failUnreachable, fmt.Sprintf("resolves to %s address, which admitfn does not connect to; list the registry under spec.registry.internal if it is yours", refused.Kind)
	case errors.As(err, &plain):
		return failUnreachable, "is reached over plain HTTP, which the policy does not allow: list it under spec.registry.insecure"
	case errors.As(err, &dnsErr):
		return failUnreachable, "has a name that could not be resolved"
	case errors.Is(err, syscall.ECONNREFUSED):
		return failUnreachable, "refused the connection"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return failUnreachable, "closed the connection"
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, context.Canceled), errors.As(err, &netErr) && netErr.Timeout():
		return failUnreachable, "did not answer within the registry timeout"
	case errors.As(err, &certErr), errors.As(err, &authErr), errors.As(err, &hostErr), errors.As(err, &invalErr):
		return failUnreachable, "presented a certificate that is not trusted for its name"
	case errors.As(err, &recErr):
		return failUnreachable, "did not speak TLS"
	case errors.As(err, &netErr):
		return failUnreachable, "could not be reached"
	case errors.As(err, &syntax), errors.As(err, &typeErr):
		return failMalformed, "the registry served a manifest or config that is not valid JSON of its kind"
	}
	// The registry answered (every way of not answering is above), and
	// go-containerregistry refused what it said: a digest that does not
	// match, a media type it does not read, a schema 1 manifest. Whoever
	// pushed the image made it so.
	return failMalformed, "the registry served a manifest or config admitfn cannot read"
}

// classifyStatus sorts an error status and quotes the registry's own
// words; the rest of err is go-containerregistry retelling its pings.
func classifyStatus(terr *transport.Error) (failKind, string) {
	if terr.StatusCode == http.StatusNotFound {
		return failNotFound, ""
	}
	var msgs []string
	for _, d := range terr.Errors {
		if d.Code == transport.ManifestUnknownErrorCode || d.Code == transport.NameUnknownErrorCode || d.Code == transport.BlobUnknownErrorCode {
			return failNotFound, ""
		}
		msgs = append(msgs, fmt.Sprintf("%s: %s", d.Code, d.Message))
	}
	what := fmt.Sprintf("%d %s", terr.StatusCode, http.StatusText(terr.StatusCode))
	if len(msgs) > 0 {
		what += " (" + strings.Join(msgs, "; ") + ")"
	}
	if terr.StatusCode == http.StatusUnauthorized || terr.StatusCode == http.StatusForbidden {
		return failUnauthorized, what
	}
	return failAnswered, what
}

// PlainHTTPError is a request over plain HTTP to a registry the policy
// does not list as insecure.
type PlainHTTPError struct{ Host string }

func (e *PlainHTTPError) Error() string {
	return fmt.Sprintf("refusing plain HTTP to %s: list it under spec.registry.insecure to allow it", e.Host)
}

// schemeGuard refuses plain HTTP to registries the policy does not list as
// insecure. go-containerregistry falls back to HTTP on its own for loopback
// and private addresses; a policy must opt in to that.
type schemeGuard struct {
	next     http.RoundTripper
	insecure func(host string) bool
}

func (g schemeGuard) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !g.insecure(req.URL.Host) {
		return nil, &PlainHTTPError{Host: req.URL.Host}
	}
	return g.next.RoundTrip(req)
}
