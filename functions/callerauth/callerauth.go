// Package callerauth lets only callers that hold one of admitfn's bearer
// tokens reach its admission endpoints.
//
// Behind Knative's ingress, TLS ends before admitfn, so a client
// certificate cannot say who is asking; a Knative Service is reachable at
// its external URL by default. kube-apiserver can send a bearer token to
// both kinds of backend: the ImagePolicyWebhook kubeconfig's user, and for
// validating and mutating webhooks the kubeconfig of a
// WebhookAdmissionConfiguration. The tokens are read from a mounted Secret
// folder, one token per file, so a rotation adds the new token beside the
// old one, moves the apiserver over, then removes the old one: no moment
// when the apiserver's token is not accepted.
package callerauth

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"path/filepath"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	"github.com/admitfn/admitfn/functions/internal/httpx"
	"github.com/admitfn/admitfn/functions/reload"
)

// Tokens is the set of accepted tokens, read from a folder. It is safe for
// concurrent use; Watch replaces the set while requests are checked.
type Tokens struct {
	dir string
	set atomic.Pointer[[][]byte]
	// loaded is the folder as Load read it (reload.Render): Watch's
	// starting point, so a change between Load and the first poll is not
	// missed.
	loaded string
}

// Load reads dir: every file in it whose name does not start with a dot
// (the kubelet's own entries in a Secret volume) holds one token, spaces
// and line ends around it ignored. A folder with no token is an error: an
// endpoint no one can call is a misconfiguration, not a policy.
func Load(dir string) (*Tokens, error) {
	files, err := reload.Dir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading caller tokens from %s: %w", dir, err)
	}
	set, err := parse(dir, files)
	if err != nil {
		return nil, err
	}
	t := &Tokens{dir: dir, loaded: reload.Render(files)}
	t.set.Store(&set)
	return t, nil
}

// parse reads the tokens out of the folder's files (reload.Dir).
func parse(dir string, files map[string]string) ([][]byte, error) {
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var set [][]byte
	for _, name := range names {
		tok := strings.TrimSpace(files[name])
		if tok == "" {
			continue
		}
		if strings.ContainsAny(tok, " \t\r\n\x00") {
			return nil, fmt.Errorf("caller token file %s holds more than one word: one token per file", filepath.Join(dir, name))
		}
		set = append(set, []byte(tok))
	}
	if len(set) == 0 {
		return nil, fmt.Errorf("%s holds no caller token: put one token per file (a Secret mounted as a volume)", dir)
	}
	return set, nil
}

// Valid reports whether presented is one of the tokens. Every token is
// compared in constant time, so the answer's timing does not tell which
// one, or how much of one, matched.
func (t *Tokens) Valid(presented string) bool {
	ok := 0
	p := []byte(presented)
	for _, tok := range *t.set.Load() {
		ok |= subtle.ConstantTimeCompare(tok, p)
	}
	return ok == 1
}

// Refusal says why a request was refused: "missing" (no bearer token) or
// "invalid" (a token that is not accepted).
type Refusal string

// Refusals.
const (
	Missing Refusal = "missing"
	Invalid Refusal = "invalid"
)

// Require wraps next: a request without an accepted token gets 401 and a
// metav1.Status, and next never sees it — no decision, no event, no
// registry call. refused is told of each refusal.
func (t *Tokens) Require(next http.Handler, refused func(Refusal)) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok, found := bearer(r.Header.Get("Authorization"))
		if found && t.Valid(tok) {
			next.ServeHTTP(w, r)
			return
		}
		why, msg := Missing, "a bearer token is required: only kube-apiserver, configured with admitfn's caller token, may ask"
		if found {
			why, msg = Invalid, "the bearer token is not accepted"
		}
		if refused != nil {
			refused(why)
		}
		w.Header().Set("WWW-Authenticate", `Bearer realm="admitfn"`)
		httpx.WriteStatus(w, httpx.Errorf(http.StatusUnauthorized, "%s", msg))
	})
}

// bearer extracts the token of an "Authorization: Bearer <token>" header;
// the scheme is case-insensitive (RFC 7235).
func bearer(header string) (string, bool) {
	scheme, tok, ok := strings.Cut(header, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

// Watch re-reads the folder every interval until ctx ends and puts each
// changed set in force. A set that cannot be read, or holds no token,
// keeps the previous one and is reported to failed.
func (t *Tokens) Watch(ctx context.Context, interval time.Duration, changed func(count int), failed func(error)) {
	// Poll reads, then calls changed, in one goroutine: changed parses the
	// files the poll just read.
	var last map[string]string
	read := func() (string, error) {
		files, err := reload.Dir(t.dir)
		if err != nil {
			return "", fmt.Errorf("reading caller tokens from %s: %w", t.dir, err)
		}
		last = files
		return reload.Render(files), nil
	}
	reload.PollFrom(ctx, interval, t.loaded, read, func(string) {
		set, err := parse(t.dir, last)
		if err != nil {
			failed(err)
			return
		}
		t.set.Store(&set)
		changed(len(set))
	}, failed)
}
