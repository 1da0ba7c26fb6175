// Package httpx holds the HTTP checks every admission endpoint makes before
// it decodes a body: method, content type and size.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"runtime/debug"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"knative.dev/pkg/logging"
	kjson "sigs.k8s.io/json"
)

// Body limits. kube-apiserver accepts request bodies up to 3 MiB, so an
// ImageReview (the images of one pod) stays far below that; an
// AdmissionReview of an UPDATE carries the object and the old object, each
// up to that size, so it gets room for both and the envelope: refusing it
// would, under failurePolicy: Fail, deny the update.
const (
	MaxImageReview     = 3 << 20
	MaxAdmissionReview = 2*(3<<20) + 1<<20
)

// Error is a request problem with the HTTP status that reports it.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an Error.
func Errorf(code int, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// ReadJSONPost checks that r is a POST of application/json no larger than
// limit bytes and returns its body.
func ReadJSONPost(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *Error) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return nil, Errorf(http.StatusMethodNotAllowed, "method %s is not allowed: send the review with POST", r.Method)
	}
	// The apiserver sends exactly "application/json"; parse anything else.
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		mt, _, err := mime.ParseMediaType(ct)
		if err != nil || mt != "application/json" {
			return nil, Errorf(http.StatusUnsupportedMediaType, "content type %q is not supported: send application/json", ct)
		}
	}
	body, err := readBody(http.MaxBytesReader(w, r.Body, limit), r.ContentLength, limit)
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, Errorf(http.StatusRequestEntityTooLarge, "request body exceeds the %d-byte limit", limit)
		}
		return nil, Errorf(http.StatusBadRequest, "reading request body: %v", err)
	}
	if len(body) == 0 {
		return nil, Errorf(http.StatusBadRequest, "request body is empty: send a review")
	}
	return body, nil
}

// readBody reads a body of the announced length in one buffer of that
// size (io.ReadAll would grow one from 512 bytes), or to the end when the
// length is unknown or over the limit, where MaxBytesReader stops it.
func readBody(r io.Reader, length, limit int64) ([]byte, error) {
	if length <= 0 || length > limit {
		return io.ReadAll(r)
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	return body, nil
}

// WriteStatus replies with e as a metav1.Status, the error body
// kube-apiserver's clients decode and show.
func WriteStatus(w http.ResponseWriter, e *Error) {
	st := metav1.Status{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Status"},
		Status:   metav1.StatusFailure,
		Message:  e.Message,
		Reason:   Reason(e.Code),
		Code:     int32(e.Code),
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.Code)
	_ = json.NewEncoder(w).Encode(st)
}

// Reason is the metav1.StatusReason for an HTTP status code, for every
// answer admitfn gives that is not a decision.
func Reason(code int) metav1.StatusReason {
	switch code {
	case http.StatusInternalServerError:
		return metav1.StatusReasonInternalError
	case http.StatusMethodNotAllowed:
		return metav1.StatusReasonMethodNotAllowed
	case http.StatusUnsupportedMediaType:
		return metav1.StatusReasonUnsupportedMediaType
	case http.StatusRequestEntityTooLarge:
		return metav1.StatusReasonRequestEntityTooLarge
	case http.StatusUnauthorized:
		return metav1.StatusReasonUnauthorized
	default:
		return metav1.StatusReasonBadRequest
	}
}

// DecodeJSON decodes data as kube-apiserver does: field names match case
// sensitively ("Image" is not "image"), and a field given twice is an
// error. encoding/json would read both a case variant and the last of two
// duplicates, so a direct caller could make admitfn judge another value
// than the object holds.
func DecodeJSON(data []byte, v any) error {
	strict, err := kjson.UnmarshalStrict(data, v, kjson.DisallowDuplicateFields)
	if err != nil {
		return err
	}
	if len(strict) > 0 {
		return strict[0]
	}
	return nil
}

// Recovered turns a panic into an error, logged with its stack: a defect
// in judging one review must answer that review, not drop the connection
// (which the apiserver retries, and counts against the backend). Call it
// deferred, as `defer httpx.Recovered(ctx, func(err error) {...})`.
func Recovered(ctx context.Context, answer func(err error)) {
	v := recover()
	if v == nil {
		return
	}
	logging.FromContext(ctx).Errorw("panic while judging a review; answered as an internal error", "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
	answer(fmt.Errorf("admitfn could not judge this review: internal error (%v); it is logged", v))
}
