// Package reload watches mounted configuration. A ConfigMap volume is
// updated by the kubelet with an atomic symlink swap (..data points at a new
// timestamped folder), which file-event watchers see as events on other
// paths; reading the content through the path on a short interval follows
// every form of update, swaps included, at the cost of one small read.
package reload

import (
	"context"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
)

// PollFrom calls read every interval and changed with each value that
// differs from the last one, starting from last: the value the caller
// loaded, so a change between that load and the first poll is not lost
// (a baseline read by the poller itself would swallow it). Failed reads
// are reported through failed and do not move the baseline.
func PollFrom(ctx context.Context, interval time.Duration, last string, read func() (string, error), changed func(string), failed func(error)) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		v, err := read()
		if err != nil {
			failed(err)
			continue
		}
		if v != last {
			last = v
			changed(v)
		}
	}
}

// File reads a file through its path (following symlinks).
func File(path string) func() (string, error) {
	return func() (string, error) {
		b, err := os.ReadFile(path)
		return string(b), err
	}
}

// Dir reads a mounted ConfigMap folder as key → value, leaving out the
// kubelet's dot-entries.
func Dir(dir string) (map[string]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			if info, statErr := os.Stat(filepath.Join(dir, e.Name())); statErr == nil && info.IsDir() {
				continue
			}
			return nil, err
		}
		m[e.Name()] = string(b)
	}
	return m, nil
}

// DirString renders Dir's map in a stable form for Poll to compare.
func DirString(dir string) func() (string, error) {
	return func() (string, error) {
		m, err := Dir(dir)
		if err != nil {
			return "", err
		}
		return Render(m), nil
	}
}

// Render is Dir's map in a stable form, to compare one read with the next.
func Render(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		b.WriteString(k + "\x00" + m[k] + "\x00")
	}
	return b.String()
}
