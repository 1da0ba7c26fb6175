// Package gctune chooses garbage collector settings for `admitfn serve`.
//
// A review allocates about 12 KB and keeps nothing, while the live heap is
// a few MiB, so with Go's default GOGC=100 the collector runs every few
// hundred reviews and takes a sizeable share of the CPU (and of the p99).
// Letting the heap grow to 3.5 times the live data buys most of that back.
// Most of the live heap is what package init builds and never frees
// (loggers' samplers, compiled regexps, protobuf registries: about 3 MiB
// after the signature verifiers were linked), so every step of GOGC costs
// RSS in proportion to it. Measured with test/bench on 2026-12-05, two
// runs each: GOGC=400 peaked at 55.2/54.8 MiB under load for 0.61×/0.60×
// the floor's throughput (40.0/41.9 µs of server CPU per review), GOGC=250
// at 47.2/46.5 MiB for 0.59×/0.67× (41.4/43.3 µs): the same rate within the noise
// for 8 MiB less. Against GOGC=100, 2026-11-23: 10–15% more reviews per
// second. A soft memory limit below the container's keeps the growth from
// ever costing an OOM kill.
package gctune

import (
	"fmt"
	"runtime/debug"
	"strconv"
	"strings"
)

// Percent is the GC percent serve uses when GOGC is not set.
const Percent = 250

// limitShare is the part of the container's memory limit given to the Go
// heap as its soft limit; the rest is for stacks, the binary and slack.
const limitShare = 0.9

// cgroup files holding the container's memory limit: v2, then v1.
var limitFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// Settings are the collector settings to apply. A zero field leaves the
// runtime's own value (from GOGC or GOMEMLIMIT, or Go's default).
type Settings struct {
	// Percent is the GC percent (debug.SetGCPercent).
	Percent int
	// Limit is the soft memory limit in bytes (debug.SetMemoryLimit).
	Limit int64
	// Why says where the settings come from, for the start-up log.
	Why string
}

// Choose decides the settings: GOGC and GOMEMLIMIT, when set, are left to
// the runtime; otherwise GC percent 400 and 90% of the cgroup's memory
// limit. getenv and readFile are os.Getenv and os.ReadFile outside tests.
func Choose(getenv func(string) string, readFile func(string) ([]byte, error)) Settings {
	var s Settings
	var why []string
	if v := getenv("GOGC"); v != "" {
		why = append(why, "GOGC="+v+" from the environment")
	} else {
		s.Percent = Percent
		why = append(why, fmt.Sprintf("GOGC=%d", Percent))
	}
	switch v := getenv("GOMEMLIMIT"); {
	case v != "":
		why = append(why, "GOMEMLIMIT="+v+" from the environment")
	default:
		limit, file := containerLimit(readFile)
		if limit == 0 {
			why = append(why, "no memory limit (no cgroup limit found)")
			break
		}
		s.Limit = int64(float64(limit) * limitShare)
		why = append(why, fmt.Sprintf("memory limit %d MiB (%.0f%% of %s)", s.Limit>>20, limitShare*100, file))
	}
	s.Why = strings.Join(why, ", ")
	return s
}

// containerLimit reads the cgroup's memory limit, 0 when there is none.
func containerLimit(readFile func(string) ([]byte, error)) (int64, string) {
	for _, f := range limitFiles {
		b, err := readFile(f)
		if err != nil {
			continue
		}
		v := strings.TrimSpace(string(b))
		n, err := strconv.ParseInt(v, 10, 64)
		// "max" (v2) and a page-rounded huge number (v1) both mean no
		// limit.
		if err != nil || n <= 0 || n >= 1<<50 {
			return 0, ""
		}
		return n, f
	}
	return 0, ""
}

// Apply sets s on the runtime.
func (s Settings) Apply() {
	if s.Percent != 0 {
		debug.SetGCPercent(s.Percent)
	}
	if s.Limit != 0 {
		debug.SetMemoryLimit(s.Limit)
	}
}
