// Package expiring bounds maps of entries that expire: the small caches
// of pull Secrets and credential plugins' answers.
package expiring

import "time"

// MakeRoom makes room in m for one more entry when it holds max: the
// expired entries (until(v) not after now) go first, then any others
// until it holds fewer than max; a dropped entry is read again when next
// asked for.
func MakeRoom[V any](m map[string]V, max int, now time.Time, until func(V) time.Time) {
	if len(m) < max {
		return
	}
	for k, v := range m {
		if !now.Before(until(v)) {
			delete(m, k)
		}
	}
	for k := range m {
		if len(m) < max {
			break
		}
		delete(m, k)
	}
}
