//go:build e2e && cluster

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/admitfn/admitfn/test/internal/harness"
)

// wakeUp is one first pod create with validating at zero, and what its
// time was made of, read from the woken pod's container log (the runtime
// stamps each line in nanoseconds): until admitfn's process
// printed its first line (the activator's hold while the autoscaler
// scales up, the pod is created, scheduled, its sandbox made and its
// containers started), until admitfn said it serves (its own start),
// and until the answer (queue-proxy's readiness, the activator's probe
// and forwarding, the review itself).
type wakeUp struct {
	total, toExec, start, toAnswer time.Duration
}

// wakeUps measures n wake-ups of validating: each waits for it to be at
// zero, creates a pod (a dry run, refused for its :latest image volume as
// the first wake-up step is), and reads the woken pod's logs.
func wakeUps(t *testing.T, c *cluster, n int, create func(name, image, volumeImage string) (time.Duration, error)) []wakeUp {
	t.Helper()
	var out []wakeUp
	for i := range n {
		waitAtZero(t, c, "validating", 120*time.Second)
		sent := time.Now()
		took, err := create(fmt.Sprintf("wake-%d", i), "busybox:1.36", "nginx:latest")
		wantForbidden(t, err, `admission webhook "workloads.validating.admitfn.dev" denied the request`, "spec.volumes[0].image.reference")
		w := wakeUp{total: took}
		pods := servicePods(t, c, "validating")
		if len(pods) == 0 {
			t.Fatalf("wake-up %d: validating has no pod after answering", i)
		}
		newest := pods[0]
		for _, p := range pods[1:] {
			if p.CreationTimestamp.After(newest.CreationTimestamp.Time) {
				newest = p
			}
		}
		// The kubelet's own log file of the container (the apiserver here
		// has no credentials for the kubelet's log endpoint): CRI lines,
		// "<RFC 3339 time> <stream> <tag> <message>".
		logFile := filepath.Join(c.node.dir, "logs", fmt.Sprintf("admitfn_%s_%s", newest.Name, newest.UID), "admitfn", "0.log")
		var raw []byte
		harness.WaitFor(t, 10*time.Second, logFile+" to have admitfn's serving line", func() error {
			var err error
			if raw, err = os.ReadFile(logFile); err != nil {
				return err
			}
			if !strings.Contains(string(raw), " serving ") {
				return fmt.Errorf("no serving line yet")
			}
			return nil
		})
		logs := string(raw)
		var first, serving time.Time
		for _, line := range strings.Split(strings.TrimSpace(logs), "\n") {
			stamp, rest, ok := strings.Cut(line, " ")
			at, perr := time.Parse(time.RFC3339Nano, stamp)
			if !ok || perr != nil {
				continue
			}
			if first.IsZero() {
				first = at
			}
			if serving.IsZero() && strings.Contains(rest, " serving ") {
				serving = at
			}
		}
		if first.IsZero() || serving.IsZero() {
			t.Fatalf("wake-up %d: %s's log has no first line or no serving line:\n%s", i, newest.Name, logs)
		}
		w.toExec, w.start, w.toAnswer = first.Sub(sent), serving.Sub(first), sent.Add(took).Sub(serving)
		t.Logf("wake-up %d: %s = %s to admitfn's first line + %s admitfn's start + %s to the answer",
			i, msText(w.total), msText(w.toExec), msText(w.start), msText(w.toAnswer))
		out = append(out, w)
	}
	return out
}

// percentiles logs p50 and p95 of each part of the wake-ups.
func percentiles(t *testing.T, ws []wakeUp) {
	t.Helper()
	part := func(name string, f func(wakeUp) time.Duration) {
		ds := make([]time.Duration, len(ws))
		for i, w := range ws {
			ds[i] = f(w)
		}
		sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
		t.Logf("%s: p50 %s, p95 %s (%d wake-ups)", name, msText(ds[len(ds)/2]), msText(percentile(ds, 95)), len(ds))
	}
	part("first pod create from zero", func(w wakeUp) time.Duration { return w.total })
	part("  to admitfn's first line (autoscaler, pod, schedule, sandbox, exec)", func(w wakeUp) time.Duration { return w.toExec })
	part("  admitfn's start (exec to serving)", func(w wakeUp) time.Duration { return w.start })
	part("  to the answer (queue-proxy ready, activator, review)", func(w wakeUp) time.Duration { return w.toAnswer })
}

func msText(d time.Duration) string { return fmt.Sprintf("%.0f ms", ms(d)) }
