// Package webhook is what every admission endpoint shares, written once:
// the checks on the HTTP request (method, content type, size), decoding
// the review, one policy snapshot and one budget per request, panic
// recovery and telling the observers. An endpoint is an Admitter — a path
// and a decision for a decoded review — and a Codec for its wire format
// (ImageReview, AdmissionReview); Handler joins them.
package webhook

import (
	"context"
	"net/http"
	"time"

	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/observe"
	"github.com/admitfn/admitfn/functions/review"
)

// Admitter decides one decoded review.
type Admitter[Req, Resp any] interface {
	// Path is where the endpoint is mounted.
	Path() string
	// Admit decides req by the snapshot's policy within b. It returns the
	// answer and the record the observers are told of (Handler left
	// empty: nothing to tell). Its duration is measured here.
	Admit(ctx context.Context, s review.Snapshot, b review.Budget, req Req) (Resp, observe.Record)
}

// Codec reads and writes one wire format.
type Codec[Req, Resp any] interface {
	// Limit bounds the request body.
	Limit() int64
	// Decode reads a review. On failure the request it returns holds
	// what could be read (a uid, a version) for Refuse.
	Decode(body []byte) (Req, *httpx.Error)
	// Reply writes the answer to req.
	Reply(w http.ResponseWriter, req Req, resp Resp)
	// Refuse answers input that cannot be judged (a zero req when the
	// body could not be read at all).
	Refuse(w http.ResponseWriter, req Req, e *httpx.Error)
	// Broken answers a review whose judging failed (a panic): what the
	// format's client should meet when admitfn has a defect.
	Broken(w http.ResponseWriter, req Req, err error)
}

// Endpoint is an admission endpoint ready to mount.
type Endpoint interface {
	http.Handler
	Path() string
}

// Handler serves a with c, judging with rv's policy snapshot and telling
// obs of each decision.
func Handler[Req, Resp any](a Admitter[Req, Resp], c Codec[Req, Resp], rv *review.Reviewer, obs observe.Observer) Endpoint {
	return handler[Req, Resp]{admitter: a, codec: c, reviewer: rv, observer: obs}
}

type handler[Req, Resp any] struct {
	admitter Admitter[Req, Resp]
	codec    Codec[Req, Resp]
	reviewer *review.Reviewer
	observer observe.Observer
}

func (h handler[Req, Resp]) Path() string { return h.admitter.Path() }

func (h handler[Req, Resp]) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, herr := httpx.ReadJSONPost(w, r, h.codec.Limit())
	if herr != nil {
		var none Req
		h.codec.Refuse(w, none, herr)
		return
	}
	req, herr := h.codec.Decode(body)
	if herr != nil {
		h.codec.Refuse(w, req, herr)
		return
	}
	// The budget starts before the snapshot is taken: the apiserver's
	// clock runs from when it sent the request.
	b := h.reviewer.BudgetFor(r.URL.Query().Get("timeout"))
	resp, err := h.admit(r.Context(), h.reviewer.Snapshot(), b, req)
	if err != nil {
		h.codec.Broken(w, req, err)
		return
	}
	h.codec.Reply(w, req, resp)
}

// admit is Admit with a panic turned into an error (logged with its
// stack), and the record told to the observers.
func (h handler[Req, Resp]) admit(ctx context.Context, s review.Snapshot, b review.Budget, req Req) (resp Resp, err error) {
	defer httpx.Recovered(ctx, func(e error) { err = e })
	start := time.Now()
	resp, rec := h.admitter.Admit(ctx, s, b, req)
	if rec.Handler != "" && h.observer != nil {
		if rec.Duration == 0 {
			rec.Duration = time.Since(start)
		}
		h.observer.Decided(ctx, rec)
	}
	return resp, nil
}
