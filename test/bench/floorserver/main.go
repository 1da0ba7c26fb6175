// Command floorserver is the cold-start floor of test/bench: a Go net/http
// server with nothing else in it, answering every request with the same
// ImageReview. It takes admitfn's serve arguments (only --listen counts),
// so the bench starts both the same way.
package main

import (
	"flag"
	"io"
	"net/http"
	"os"
)

// reply is what admitfn answers for the bench's payload.
const reply = `{"kind":"ImageReview","apiVersion":"imagepolicy.k8s.io/v1alpha1","metadata":{},"spec":{},"status":{"allowed":true,"reason":"allowed by policy \"default\"","auditAnnotations":{"decision":"allowed","policy":"default"}}}` + "\n"

func main() {
	fs := flag.NewFlagSet("floorserver", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:8080", "address to listen on")
	fs.String("handlers", "", "ignored")
	fs.Parse(os.Args[2:]) // after "serve"
	http.ListenAndServe(*listen, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, reply)
	}))
}
