package metrics

import (
	"os"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// appendRuntime writes the Go runtime and process gauges under the names
// client_golang's collectors use, so existing dashboards find them.
// Figures the platform cannot give (no /proc) are left out.
func appendRuntime(b []byte, start time.Time) []byte {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms) // stops the world for microseconds, once per scrape
	gauge := func(b []byte, name, help, typ string, v float64) []byte {
		b = appendHeader(b, name, help, typ)
		return appendSample(b, name, nil, nil, v)
	}
	b = gauge(b, "go_goroutines", "Number of goroutines that currently exist.", "gauge", float64(runtime.NumGoroutine()))
	b = gauge(b, "go_memstats_heap_alloc_bytes", "Number of heap bytes allocated and currently in use.", "gauge", float64(ms.HeapAlloc))
	b = gauge(b, "go_memstats_sys_bytes", "Number of bytes obtained from system.", "gauge", float64(ms.Sys))
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		b = gauge(b, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter", cpu.Seconds())
	}
	if rss, ok := residentBytes(); ok {
		b = gauge(b, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge", float64(rss))
	}
	b = gauge(b, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge", float64(start.Unix()))
	return b
}

// residentBytes reads the resident set size from /proc/self/statm.
func residentBytes() (int64, bool) {
	data, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(data))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseInt(f[1], 10, 64)
	if err != nil {
		return 0, false
	}
	return pages * int64(os.Getpagesize()), true
}
