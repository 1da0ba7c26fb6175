// Package readcap bounds how many bytes a registry lookup may read, counted
// while the bytes arrive rather than after: every response body that passes
// through Transport is charged to the Budget carried by its request's
// context, and a read past the budget fails with *ExceededError.
//
// A registry is not trusted to be small. Anyone who may push to a
// repository can put a 100 MiB config, a manifest with 100,000 layers or a
// referrers list of every artifact ever pushed beside an image; what admitfn
// reads of them must stay within a few MiB per lookup however they are
// shaped, and the declared sizes (Content-Length, descriptor sizes) are the
// pusher's words, so they are checked but never relied on.
package readcap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
)

// Budget is how many bytes one lookup may still read. It is safe for
// concurrent use: a lookup may read several bodies at once.
type Budget struct {
	limit int64
	used  atomic.Int64
}

// New returns a budget of limit bytes.
func New(limit int64) *Budget { return &Budget{limit: limit} }

// charge takes n bytes, or reports that the budget would be exceeded.
func (b *Budget) charge(n int64) error {
	if b.used.Add(n) > b.limit {
		return &ExceededError{Limit: b.limit}
	}
	return nil
}

// fits reports whether n more bytes would fit.
func (b *Budget) fits(n int64) bool { return b.used.Load()+n <= b.limit }

// ExceededError is a read that would take a lookup past its budget.
type ExceededError struct {
	// Limit is the budget in bytes.
	Limit int64
	// Declared is set when the response announced its size up front and
	// was refused before a byte of it was read.
	Declared int64
}

func (e *ExceededError) Error() string {
	if e.Declared > 0 {
		return fmt.Sprintf("the registry announced %d bytes, past the %s admitfn reads for one image", e.Declared, Size(e.Limit))
	}
	return fmt.Sprintf("the registry's answers ran past the %s admitfn reads for one image", Size(e.Limit))
}

// Size writes n bytes for a person: "4 MiB", "64 KiB", "512 bytes".
func Size(n int64) string {
	switch {
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d bytes", n)
}

// IsExceeded reports whether err is, or wraps, an *ExceededError.
func IsExceeded(err error) bool {
	var e *ExceededError
	return errors.As(err, &e)
}

type ctxKey struct{}

// With returns ctx carrying b: the bodies of requests made with it are
// charged to b.
func With(ctx context.Context, b *Budget) context.Context {
	return context.WithValue(ctx, ctxKey{}, b)
}

// from returns the budget ctx carries, or nil.
func from(ctx context.Context) *Budget {
	b, _ := ctx.Value(ctxKey{}).(*Budget)
	return b
}

// Transport charges every response body to the budget of its request's
// context. A request without a budget is passed through unchanged.
type Transport struct {
	Next http.RoundTripper
}

// RoundTrip implements http.RoundTripper.
func (t Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	b := from(req.Context())
	resp, err := t.Next.RoundTrip(req)
	if err != nil || b == nil {
		return resp, err
	}
	// A body announced past what is left is refused unread: nothing the
	// lookup could do with it would stay within the budget.
	if resp.ContentLength > 0 && !b.fits(resp.ContentLength) {
		resp.Body.Close()
		return nil, &ExceededError{Limit: b.limit, Declared: resp.ContentLength}
	}
	resp.Body = &chargedBody{body: resp.Body, budget: b}
	return resp, nil
}

// chargedBody charges each read to a budget.
type chargedBody struct {
	body   io.ReadCloser
	budget *Budget
	err    error
}

func (c *chargedBody) Read(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.body.Read(p)
	if n > 0 {
		if cerr := c.budget.charge(int64(n)); cerr != nil {
			c.err = cerr
			return 0, cerr
		}
	}
	return n, err
}

func (c *chargedBody) Close() error { return c.body.Close() }
