package readcap

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
)

// TestTransport: bodies are charged to the budget of their request's
// context as they are read, one budget across several bodies; a body
// announced past what is left is refused unread; a request without a
// budget passes untouched.
func TestTransport(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := 600
		if r.URL.Path == "/big" {
			n = 5000
		}
		if r.URL.Query().Get("chunked") != "" {
			w.(http.Flusher).Flush() // no Content-Length: the size is learnt by reading
		} else {
			w.Header().Set("Content-Length", strconv.Itoa(n))
		}
		w.Write([]byte(strings.Repeat("x", n)))
	}))
	defer srv.Close()
	client := &http.Client{Transport: Transport{Next: http.DefaultTransport}}
	get := func(ctx context.Context, path string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return len(b), err
	}
	ctx := With(context.Background(), New(1000))
	if n, err := get(ctx, "/small"); err != nil || n != 600 {
		t.Fatalf("first body within the budget: %d, %v", n, err)
	}
	if _, err := get(ctx, "/small?chunked=1"); !IsExceeded(err) {
		t.Errorf("second body, read past what is left: %v, want the budget exceeded", err)
	}
	if _, err := get(With(context.Background(), New(1000)), "/big"); !IsExceeded(err) || !strings.Contains(err.Error(), "announced 5000 bytes") {
		t.Errorf("a body announced past the budget: %v, want it refused unread", err)
	}
	if n, err := get(context.Background(), "/big"); err != nil || n != 5000 {
		t.Errorf("no budget: %d, %v; want the body whole", n, err)
	}
}

func TestSize(t *testing.T) {
	t.Parallel()
	for n, want := range map[int64]string{1 << 20: "1 MiB", 64 << 10: "64 KiB", 1000: "1000 bytes", 3<<20 + 1: "3145729 bytes"} {
		if got := Size(n); got != want {
			t.Errorf("Size(%d) = %q, want %q", n, got, want)
		}
	}
}
