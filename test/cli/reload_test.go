package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/api/imagepolicy/v1alpha1"

	"github.com/admitfn/admitfn/functions/metrics/metricstest"
	"github.com/admitfn/admitfn/test/internal/harness"
)

// mountedConfigMap lays out a folder the way the kubelet mounts a
// ConfigMap: the key is a symlink through ..data, which points at a
// timestamped folder and is swapped atomically on update.
type mountedConfigMap struct {
	dir string
	gen int
}

func (m *mountedConfigMap) update(t *testing.T, key, content string) {
	t.Helper()
	m.gen++
	ts := fmt.Sprintf("..2026_11_23_00_00_%02d.%d", m.gen, m.gen)
	if err := os.MkdirAll(filepath.Join(m.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, ts, key), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(m.dir, key)
	if _, err := os.Lstat(link); os.IsNotExist(err) {
		if err := os.Symlink(filepath.Join("..data", key), link); err != nil {
			t.Fatal(err)
		}
	}
}

const policyHead = "apiVersion: policy.admitfn.dev/v1alpha1\nkind: ImagePolicy\n"

// TestPolicyHotReload swaps the mounted policy the way the kubelet does
// while reviews keep coming: none fails, the new policy takes over, and a
// broken one leaves the last good one in force.
func TestPolicyHotReload(t *testing.T) {
	t.Parallel()
	cm := &mountedConfigMap{dir: t.TempDir()}
	cm.update(t, "policy.yaml", policyHead+"metadata: {name: first}\nspec:\n  rules:\n  - name: no-latest\n    tags: {denyLatest: true, denyUntagged: true}\n")
	p := startServe(t, "--policy", filepath.Join(cm.dir, "policy.yaml"), "--reload-interval", "50ms", "--handlers", "imagepolicy")

	// busybox:1.36 is allowed by the first policy and denied by the second.
	judge := func(image string) (allowed bool, policyName string, err error) {
		resp, err := http.Post(p.url+"/imagepolicy", "application/json", bytes.NewReader(harness.ImageReview("default", image)))
		if err != nil {
			return false, "", err
		}
		defer resp.Body.Close()
		var out v1alpha1.ImageReview
		if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != http.StatusOK || out.Kind != "ImageReview" {
			return false, "", fmt.Errorf("status %d, decode error %v", resp.StatusCode, err)
		}
		return out.Status.Allowed, out.Status.AuditAnnotations["policy"], nil
	}
	var reviews, failures atomic.Int64
	var firstFailure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, _, err := judge("busybox:1.36"); err != nil {
					failures.Add(1)
					firstFailure.CompareAndSwap(nil, err.Error())
				}
				reviews.Add(1)
			}
		}()
	}
	waitUntil := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting until %s", what)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if allowed, name, err := judge("busybox:1.36"); err != nil || !allowed || name != "first" {
		t.Fatalf("before the swap: allowed %v by %q, %v", allowed, name, err)
	}

	cm.update(t, "policy.yaml", policyHead+"metadata: {name: second}\nspec:\n  rules:\n  - name: no-latest\n    tags: {denyLatest: true, denyUntagged: true}\n  - name: no-busybox\n    repositories: {deny: [busybox]}\n")
	waitUntil("the second policy is in force", func() bool { allowed, name, _ := judge("busybox:1.36"); return !allowed && name == "second" })

	cm.update(t, "policy.yaml", policyHead+"metadata: {name: broken}\nspec:\n  rules:\n  - name: no-busybox\n    repositories: {deny: [busybox]}\n    nonroot: true\n")
	waitUntil("the broken policy is rejected", func() bool { return reloads(t, p.url, "failure") == 1 })
	if allowed, name, err := judge("busybox:1.36"); err != nil || allowed || name != "second" {
		t.Errorf("after a broken update: allowed %v by %q, %v; want the second policy still in force", allowed, name, err)
	}
	close(stop)
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Errorf("%d of %d reviews failed during the reloads; first: %v", n, reviews.Load(), firstFailure.Load())
	}
	if success, failure := reloads(t, p.url, "success"), reloads(t, p.url, "failure"); success != 1 || failure != 1 {
		t.Errorf("reload counts: %v successes, %v failures; want one of each", success, failure)
	}
	logs := p.stderr.String()
	for _, want := range []string{`"message":"policy reloaded"`, `"message":"new policy rejected; the last good policy stays in force"`, `unknown field \"spec.rules[0].nonroot\"`, `"message":"decision"`} {
		if !strings.Contains(logs, want) {
			t.Errorf("logs lack %s", want)
		}
	}
	t.Logf("%d reviews during two reloads, none failed", reviews.Load())
}

// reloads is admitfn_policy_reloads_total{result=result}, from /metrics.
func reloads(t *testing.T, url, result string) float64 {
	t.Helper()
	return metricstest.Value(metricstest.Get(t, http.DefaultClient, url+"/metrics"), "admitfn_policy_reloads_total", map[string]string{"result": result})
}

// TestLogLevelFromMountedConfigMap changes loglevel.admitfn in a mounted
// logging ConfigMap and expects request details at debug to appear.
func TestLogLevelFromMountedConfigMap(t *testing.T) {
	t.Parallel()
	cm := &mountedConfigMap{dir: t.TempDir()}
	cm.update(t, "loglevel.admitfn", "info")
	p := startServe(t, "--logging-config", cm.dir, "--reload-interval", "50ms", "--handlers", "imagepolicy")
	post := func() {
		resp, err := http.Post(p.url+"/imagepolicy", "application/json", bytes.NewReader(harness.ImageReview("default", "nginx:1.17.1")))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
	}
	post()
	if strings.Contains(p.stderr.String(), `"message":"request"`) {
		t.Fatal("request details logged at info level")
	}
	cm.update(t, "loglevel.admitfn", "debug")
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), `"message":"request"`) {
		if time.Now().After(deadline) {
			t.Fatalf("after loglevel.admitfn=debug no request details were logged:\n%s", p.stderr.String())
		}
		post()
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDecisionLogSampling sends a burst of reviews and counts the decision
// lines: by default zap's sampling (knative.dev/pkg's production logger)
// keeps, per second, the first 100 and every 100th after them; a logging
// ConfigMap with "sampling": null keeps every one.
func TestDecisionLogSampling(t *testing.T) {
	t.Parallel()
	const burst, workers = 400, 4
	for _, c := range []struct {
		name      string
		zapConfig string // "" starts without --logging-config
		sampled   bool
	}{
		{"default: sampled", "", true},
		{`"sampling": null: every decision`, `{"level": "info", "encoding": "json", "outputPaths": ["stderr"], "sampling": null}`, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			args := []string{"--handlers", "imagepolicy"}
			if c.zapConfig != "" {
				cm := &mountedConfigMap{dir: t.TempDir()}
				cm.update(t, "zap-logger-config", c.zapConfig)
				args = append(args, "--logging-config", cm.dir)
			}
			p := startServe(t, args...)
			client := &http.Client{Timeout: 10 * time.Second}
			start := time.Now()
			var wg sync.WaitGroup
			for range workers {
				wg.Go(func() {
					for range burst / workers {
						resp, err := client.Post(p.url+"/imagepolicy", "application/json", bytes.NewReader(harness.ImageReview("default", "nginx:1.17.1")))
						if err != nil {
							t.Error(err)
							return
						}
						resp.Body.Close()
					}
				})
			}
			wg.Wait()
			took := time.Since(start)
			p.stop(t)
			got := strings.Count(p.stderr.String(), `"message":"decision"`)
			want, most := burst, burst
			if c.sampled {
				// The sampler counts in one-second windows from the first
				// line; a slow machine spreads the burst over more of them.
				windows := int(took/time.Second) + 1
				want, most = min(burst, 100), windows*(100+burst/100)
				if most >= burst {
					t.Fatalf("the burst took %v: %d windows of sampling could keep all %d lines, so this run cannot show it", took, windows, burst)
				}
			}
			if got < want || got > most {
				t.Errorf("%d decision lines for %d reviews in %v, want %d to %d", got, burst, took, want, most)
			}
		})
	}
}
