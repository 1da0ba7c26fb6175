// Command bench measures admitfn side by side with a floor on this machine
// and prints one table with the targets beside the figures. `make bench`
// runs it after the Go benchmarks.
//
// Everything runs on loopback, bounded in time: the floor is a Go HTTP
// server that answers every ImageReview with the same bytes, driven by the
// same load generator with the same payload as admitfn.
package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/admitfn/admitfn/test/internal/harness"
)

var payload = []byte(`{"apiVersion":"imagepolicy.k8s.io/v1alpha1","kind":"ImageReview","spec":{"containers":[{"image":"nginx:1.17.1"},{"image":"busybox:1.36"}],"namespace":"default"}}`)

func main() {
	duration := flag.Duration("duration", 5*time.Second, "length of each load run")
	workers := flag.Int("workers", 32, "concurrent connections of the load generator")
	rounds := flag.Int("rounds", 3, "load runs of each server, alternating; the table shows medians")
	soak := flag.Duration("soak", 0, "also run a soak at half the maximum rate for this long")
	ko := flag.String("ko", "", "ko binary: also build the image with ko.yaml and report its size")
	creates := flag.Int("pod-creates", 0, "also time this many pod creations through real kube-apiservers with and without admitfn's webhook and ImagePolicyWebhook backend (needs `make tools`)")
	flag.Parse()

	bin, floorBin, cleanup, err := build()
	if cleanup != nil {
		defer cleanup()
	}
	if err != nil {
		fail(err)
	}

	var rows []row
	// The floor is a process of its own, like admitfn: served from inside
	// this one it would share the load generator's runtime and cores
	// differently, and beat any separate process (0.57× it, against 0.68×
	// the same floor as a process, measured here on 2026-11-23).
	floor, _, err := start(floorBin)
	if err != nil {
		fail(err)
	}
	defer floor.stop()
	admitfn, _, err := start(bin)
	if err != nil {
		fail(err)
	}
	defer admitfn.stop()
	if err := sameReply(floor.url, admitfn.url); err != nil {
		fail(err)
	}

	floorMax, admMax := paired(*rounds,
		func() result { return load(floor, *workers, *duration, 0) },
		func() result { return load(admitfn, *workers, *duration, 0) })
	// The servers and the load generator share the cores, so a rate ratio
	// is (floor's CPU + generator's) / (admitfn's + generator's) per review:
	// the CPU rows say which part differs.
	cpuFor08 := (floorMax.serverCPU+floorMax.loadCPU)*10/8 - admMax.loadCPU
	rows = append(rows,
		row{fmt.Sprintf("floor: max throughput (median of %d runs of %s)", *rounds, *duration), fmt.Sprintf("%.0f req/s", floorMax.rate), "", ""},
		row{"admitfn: max throughput", fmt.Sprintf("%.0f req/s", admMax.rate), fmt.Sprintf("%.2f× floor", admMax.rate/floorMax.rate), check(admMax.rate/floorMax.rate >= 0.8, "≥ 0.8× floor")},
		row{"CPU per review at max rate, floor: server / load generator", fmt.Sprintf("%s / %s", us(floorMax.serverCPU), us(floorMax.loadCPU)), "", ""},
		row{"CPU per review at max rate, admitfn: server / load generator", fmt.Sprintf("%s / %s", us(admMax.serverCPU), us(admMax.loadCPU)),
			fmt.Sprintf("server %.2f× floor", float64(admMax.serverCPU)/float64(floorMax.serverCPU)), fmt.Sprintf("(0.8× floor needs admitfn's server ≤ %s)", us(cpuFor08))},
	)
	half := admMax.rate / 2
	floorHalf, admHalf := paired(*rounds,
		func() result { return load(floor, *workers, *duration, floorMax.rate/2) },
		func() result { return load(admitfn, *workers, *duration, half) })
	rows = append(rows,
		row{fmt.Sprintf("floor at %.0f req/s: p50 / p99", floorMax.rate/2), fmt.Sprintf("%s / %s", ms(floorHalf.p50), ms(floorHalf.p99)), "", ""},
		row{fmt.Sprintf("admitfn at %.0f req/s: p50 / p99", half), fmt.Sprintf("%s / %s", ms(admHalf.p50), ms(admHalf.p99)),
			fmt.Sprintf("p99 %.2f× floor", float64(admHalf.p99)/float64(floorHalf.p99)), check(admHalf.p99 <= 2*time.Millisecond, "p99 ≤ 2 ms")},
		row{"admitfn: errors under load", fmt.Sprint(admMax.errors + admHalf.errors), "", check(admMax.errors+admHalf.errors == 0, "0")},
		row{"admitfn: peak RSS under load", mib(admitfn.peakRSS()), "", check(admitfn.peakRSS() <= 50<<20, "≤ 50 MiB")},
	)
	admitfn.stop()
	floor.stop()

	creds, err := withCredentials(filepath.Dir(bin))
	if err != nil {
		fail(err)
	}
	colds, rss, err := coldStarts(7, []string{floorBin}, []string{bin}, append([]string{bin}, creds...))
	if err != nil {
		fail(err)
	}
	floorCold, cold, credCold := colds[0], colds[1], colds[2]
	rows = append(rows,
		row{"floor (bare net/http binary): exec → first answer (median of 7)", ms(floorCold), "", ""},
		row{"cold start: exec → first answered review (median of 7)", ms(cold), fmt.Sprintf("%.2f× floor", float64(cold)/float64(floorCold)), check(cold <= 30*time.Millisecond, "≤ 30 ms")},
		row{"  with credentials in play (--kubeconfig, a credential provider config)", ms(credCold), fmt.Sprintf("%.2f× without", float64(credCold)/float64(cold)), check(credCold <= 30*time.Millisecond, "≤ 30 ms")},
		row{"RSS after the first review: without / with credentials", fmt.Sprintf("%s / %s", mib(rss[1]), mib(rss[2])), fmt.Sprintf("%.2f× without", float64(rss[2])/float64(rss[1])), ""})

	if *creates > 0 {
		results, err := podCreate(*creates)
		if err != nil {
			fail(err)
		}
		m, ip := results["BenchmarkPodCreate"], results["BenchmarkPodCreateImagePolicy"]
		rows = append(rows,
			row{fmt.Sprintf("pod create via kube-apiserver, median of %d: no webhook", *creates), fmt.Sprintf("%.2f ms", m["ms/pod-without-webhook"]), "", ""},
			row{"  with a minimal webhook (echo uid, allow; the floor)", fmt.Sprintf("%.2f ms", m["ms/pod-with-floor-webhook"]), fmt.Sprintf("%.2f× no webhook", m["floor/without"]), ""},
			row{"  with admitfn's validating webhook", fmt.Sprintf("%.2f ms", m["ms/pod-with-admitfn"]), fmt.Sprintf("%.2f× no webhook", m["admitfn/without"]), check(m["admitfn/without"] <= 1.2, "≤ 1.2× no webhook")},
			row{"  with a minimal ValidatingAdmissionPolicy (expression true; the floor)", fmt.Sprintf("%.2f ms", m["ms/pod-with-floor-policy"]), fmt.Sprintf("%.2f× no webhook", m["floor-policy/without"]), ""},
			row{"  with admitfn vap's policies instead of a webhook", fmt.Sprintf("%.2f ms", m["ms/pod-with-vap"]), fmt.Sprintf("%.2f× no webhook", m["vap/without"]), check(m["vap/without"] <= 1.05, "≤ 1.05× no webhook")},
			row{fmt.Sprintf("pod create, ImagePolicyWebhook, median of %d: apiserver without the plugin", *creates), fmt.Sprintf("%.2f ms", ip["ms/pod-without"]), "", ""},
			row{"  plugin, same pod spec again (answered by its allow cache)", fmt.Sprintf("%.2f ms", ip["ms/pod-cached"]), fmt.Sprintf("%.2f× no plugin", ip["cached/without"]), ""},
			row{"  the same on the floor's apiserver (its twin, for comparison)", fmt.Sprintf("%.2f ms", ip["ms/pod-floor-cached"]), fmt.Sprintf("%.2f× no plugin", ip["floor-cached/without"]), ""},
			row{"  plugin asking a minimal backend (allow; the floor)", fmt.Sprintf("%.2f ms", ip["ms/pod-floor-asked"]), fmt.Sprintf("%.2f× no plugin", ip["floor-asked/without"]), ""},
			row{"  plugin asking admitfn", fmt.Sprintf("%.2f ms", ip["ms/pod-asked"]), fmt.Sprintf("%.2f× no plugin", ip["asked/without"]), check(ip["asked/without"] <= 1.2, "≤ 1.2× no plugin")},
		)
		if k := results["BenchmarkKyvernoSideBySide"]; k != nil {
			rows = append(rows, kyvernoRows(k, *creates, cold)...)
		} else {
			rows = append(rows, row{"Kyverno side by side", "not run", "", "KYVERNO unset: make bench builds and sets it"})
		}
	}
	if *ko != "" {
		size, err := imageSize(*ko)
		if err != nil {
			fail(err)
		}
		rows = append(rows, row{fmt.Sprintf("image: ko build, linux/%s, compressed (+ base)", runtime.GOARCH), mib(size), "", check(size <= 20<<20, "≤ 20 MiB")})
	}
	if *soak > 0 {
		a, _, err := start(bin)
		if err != nil {
			fail(err)
		}
		s := runSoak(a, *workers, *soak, half)
		a.stop()
		rows = append(rows, row{fmt.Sprintf("soak %s at %.0f req/s: errors, RSS first→last minute", *soak, half),
			fmt.Sprintf("%d, %s → %s", s.errors, mib(s.rssStart), mib(s.rssEnd)), "",
			check(s.errors == 0 && float64(s.rssEnd) <= 1.1*float64(s.rssStart), "0 errors, RSS within 10%")})
	}
	print(rows)
}

// kyvernoRows is BenchmarkKyvernoSideBySide's part of the table: what
// each judge adds to a pod create, their memory, start and size.
func kyvernoRows(k map[string]float64, creates int, admitfnCold time.Duration) []row {
	// Medians are compared as what each judge adds to the create with no
	// judge; p99s are shown as they are (300–1000 creates on shared cores:
	// their differences are noise, often below zero).
	added := func(ns string) float64 { return k["ms/pod-"+ns] - k["ms/pod-none"] }
	addedText := func(ns string) string {
		return fmt.Sprintf("%+.2f ms / %.2f ms", added(ns), k["ms-p99/pod-"+ns])
	}
	vsKyverno, vsFloor := added("admitfn")/added("kyverno-judged"), added("admitfn")/added("floor")
	kyvernoStart := time.Duration(k["ms-first-refusal/kyverno"] * float64(time.Millisecond))
	return []row{
		{fmt.Sprintf("Kyverno v1.19.1 side by side, one apiserver, %d dry-run creates each: no judge, median / p99", creates),
			fmt.Sprintf("%.2f ms / %.2f ms", k["ms/pod-none"], k["ms-p99/pod-none"]), "", "same answers checked first"},
		{"  Kyverno (disallow-latest-tag): added to the median / p99", addedText("kyverno-judged"), "", ""},
		{"  the minimal webhook: added to the median / p99", addedText("floor"), "", ""},
		{"  admitfn (default policy): added to the median / p99", addedText("admitfn"),
			fmt.Sprintf("%.2f× Kyverno's, %.2f× the floor's", vsKyverno, vsFloor),
			check(vsKyverno <= 0.5 && vsFloor <= 1.1, "added ≤ 0.5× Kyverno's, ≤ 1.1× the floor's")},
		{"  RSS after the run: admitfn / Kyverno", fmt.Sprintf("%.1f / %.1f MiB", k["MiB-rss/admitfn"], k["MiB-rss/kyverno"]),
			fmt.Sprintf("%.2f× Kyverno", k["MiB-rss/admitfn"]/k["MiB-rss/kyverno"]), check(k["MiB-rss/admitfn"] <= 0.25*k["MiB-rss/kyverno"], "≤ 0.25× Kyverno's")},
		{"  start: admitfn exec → first review / Kyverno exec → first refusal via the apiserver", fmt.Sprintf("%s / %s", ms(admitfnCold), ms(kyvernoStart)),
			fmt.Sprintf("%.3f× Kyverno", float64(admitfnCold)/float64(kyvernoStart)), check(admitfnCold <= kyvernoStart/10, "≤ 0.1× Kyverno's")},
		{"  registry.example.com:5000/team/app (no tag) admitted by Kyverno", fmt.Sprint(k["untagged-with-port-admitted/kyverno"] == 1), "",
			"admitfn refuses it: \"*:*\" takes the port's colon for a tag"},
		{"  binary (test build, not stripped): admitfn / Kyverno", fmt.Sprintf("%.1f / %.1f MiB", k["MiB-binary/admitfn"], k["MiB-binary/kyverno"]),
			fmt.Sprintf("%.2f× Kyverno", k["MiB-binary/admitfn"]/k["MiB-binary/kyverno"]), ""},
	}
}

type row struct{ what, figure, ratio, target string }

func check(ok bool, target string) string {
	if ok {
		return "met (" + target + ")"
	}
	return "MISSED (" + target + ")"
}

func print(rows []row) {
	host, _ := os.Hostname()
	fmt.Printf("\nadmitfn bench — %s, %s, %d CPUs, %s\n\n", time.Now().UTC().Format("2006-01-02"), runtime.Version(), runtime.NumCPU(), host)
	w := [3]int{}
	for _, r := range rows {
		w[0], w[1], w[2] = max(w[0], len(r.what)), max(w[1], len(r.figure)), max(w[2], len(r.ratio))
	}
	for _, r := range rows {
		fmt.Printf("%-*s  %-*s  %-*s  %s\n", w[0], r.what, w[1], r.figure, w[2], r.ratio, r.target)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "bench:", err)
	os.Exit(1)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
func mib(b int64) string        { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
func us(d time.Duration) string { return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond)) }

// build compiles the admitfn binary and the cold-start floor into a
// temporary folder, both as ko.yaml builds admitfn: static (no cgo, so no
// dynamic loader at start), trimmed and stripped.
func build() (admitfn, floor string, cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "admitfn-bench-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	admitfn, floor = filepath.Join(dir, "admitfn"), filepath.Join(dir, "floorserver")
	for bin, pkg := range map[string]string{
		admitfn: "github.com/admitfn/admitfn/functions/cmd/admitfn",
		floor:   "github.com/admitfn/admitfn/test/bench/floorserver",
	} {
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w", "-o", bin, pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			return "", "", cleanup, err
		}
	}
	return admitfn, floor, cleanup, nil
}

// process is admitfn or the floor serving on loopback.
type process struct {
	cmd  *exec.Cmd
	url  string
	peak atomic.Int64
}

// start runs bin (admitfn or the floor, which take the same arguments) on
// a free loopback port and returns once it has answered a review, with the
// time from exec to that answer.
func start(bin string, extra ...string) (*process, time.Duration, error) {
	addr, err := harness.FreeAddr()
	if err != nil {
		return nil, 0, err
	}
	begin := time.Now()
	// Logs go to /dev/null: a pipe would make this process spend CPU
	// copying them, beside the server it measures on the same two cores.
	cmd := exec.Command(bin, append([]string{"serve", "--listen", addr, "--handlers", "imagepolicy"}, extra...)...)
	if err := cmd.Start(); err != nil {
		return nil, 0, err
	}
	p := &process{cmd: cmd, url: "http://" + addr + "/imagepolicy"}
	took, err := firstAnswer(p.url, begin)
	if err != nil {
		p.stop()
		return nil, 0, fmt.Errorf("%s: %v", filepath.Base(bin), err)
	}
	return p, took, nil
}

// sameReply checks that the floor answers the payload with admitfn's
// bytes, so both write the same response.
func sameReply(floorURL, admitfnURL string) error {
	var bodies [2][]byte
	for i, url := range []string{floorURL, admitfnURL} {
		resp, err := http.Post(url, "application/json", bytes.NewReader(payload))
		if err != nil {
			return err
		}
		bodies[i], err = io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
	}
	if !bytes.Equal(bodies[0], bodies[1]) {
		return fmt.Errorf("the floor answers %s\nadmitfn answers %s\nupdate test/bench/floorserver's reply", bodies[0], bodies[1])
	}
	return nil
}

// firstAnswer posts the payload to url until it is answered with 200 OK
// and returns the time since start.
func firstAnswer(url string, start time.Time) (time.Duration, error) {
	client := &http.Client{Timeout: time.Second}
	defer client.CloseIdleConnections()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		resp, err := client.Post(url, "application/json", bytes.NewReader(payload))
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return time.Since(start), nil
			}
		}
		time.Sleep(200 * time.Microsecond)
	}
	return 0, fmt.Errorf("no answer from %s within 5s", url)
}

func (p *process) stop() {
	if p.cmd.ProcessState == nil {
		p.cmd.Process.Signal(os.Interrupt)
		p.cmd.Wait()
	}
}

// rss is the process's resident memory in bytes, 0 once it is gone.
func (p *process) rss() int64 {
	r, _ := harness.RSS(p.cmd.Process.Pid)
	return r
}

func (p *process) peakRSS() int64 { return p.peak.Load() }

// cpu is the CPU time, user and system, the process has used so far.
func (p *process) cpu() time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p.cmd.Process.Pid))
	if err != nil {
		return 0
	}
	d, _ := statCPU(b)
	return d
}

// statCPU reads utime and stime, fields 14 and 15 of a /proc/PID/stat
// line, in clock ticks of 1/100 s (fixed so by the kernel's ABI).
func statCPU(stat []byte) (time.Duration, error) {
	// The command name, field 2, is in parentheses and may hold spaces
	// and parentheses itself: count from the last ')'.
	end := bytes.LastIndexByte(stat, ')')
	if end < 0 {
		return 0, fmt.Errorf("no command name in %q", stat)
	}
	f := strings.Fields(string(stat[end+1:]))
	if len(f) < 13 {
		return 0, fmt.Errorf("%d fields after the command name, want at least 13", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("utime or stime %q: %v", s, err)
		}
		ticks += n
	}
	return time.Duration(ticks) * 10 * time.Millisecond, nil
}

// selfCPU is the CPU time this process (the load generator) has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sampleRSS samples RSS until the function it returns is called, keeping
// the peak.
func (p *process) sampleRSS() func() {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		t := time.NewTicker(50 * time.Millisecond)
		defer t.Stop()
		for {
			if r := p.rss(); r > p.peak.Load() {
				p.peak.Store(r)
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return cancel
}

// paired runs floor and admitfn alternately, rounds times each, and
// returns the median of each figure: on a shared machine a burst of noise
// then lands on both rather than on whichever ran at that moment.
func paired(rounds int, floor, admitfn func() result) (result, result) {
	var f, a []result
	for range rounds {
		f, a = append(f, floor()), append(a, admitfn())
	}
	return medianResult(f), medianResult(a)
}

// medianResult takes the median of each figure separately and sums the
// errors.
func medianResult(rs []result) result {
	pick := func(v func(result) float64) float64 {
		var xs []float64
		for _, r := range rs {
			xs = append(xs, v(r))
		}
		return median(xs)
	}
	m := result{
		rate:      pick(func(r result) float64 { return r.rate }),
		p50:       time.Duration(pick(func(r result) float64 { return float64(r.p50) })),
		p99:       time.Duration(pick(func(r result) float64 { return float64(r.p99) })),
		serverCPU: time.Duration(pick(func(r result) float64 { return float64(r.serverCPU) })),
		loadCPU:   time.Duration(pick(func(r result) float64 { return float64(r.loadCPU) })),
	}
	for _, r := range rs {
		m.errors += r.errors
	}
	return m
}

type result struct {
	rate     float64
	p50, p99 time.Duration
	errors   int64
	// serverCPU and loadCPU are the CPU time the server and the load
	// generator spent per answered review.
	serverCPU, loadCPU time.Duration
}

// load drives p with workers connections for d: as fast as it can when
// rate is 0, else paced at rate requests per second in total. It keeps
// p's peak RSS.
func load(p *process, workers int, d time.Duration, rate float64) result {
	defer p.sampleRSS()()
	req, addr, err := rawRequest(p.url)
	if err != nil {
		return result{errors: 1}
	}
	var count, errors atomic.Int64
	lat := make([][]time.Duration, workers)
	serverCPU, loadCPU := p.cpu(), selfCPU()
	deadline := time.Now().Add(d)
	var interval time.Duration
	if rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(workers) / rate)
	}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *conn
			defer func() { c.close() }()
			next := time.Now().Add(time.Duration(w) * interval / time.Duration(workers))
			for time.Now().Before(deadline) {
				if interval > 0 {
					time.Sleep(time.Until(next))
					next = next.Add(interval)
				}
				start := time.Now()
				if c == nil {
					if c, err = dial(addr); err != nil {
						errors.Add(1)
						continue
					}
				}
				if err := c.post(req); err != nil {
					errors.Add(1)
					c.close()
					c = nil
					continue
				}
				lat[w] = append(lat[w], time.Since(start))
				count.Add(1)
			}
		}()
	}
	wg.Wait()
	serverCPU, loadCPU = p.cpu()-serverCPU, selfCPU()-loadCPU
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	r := result{rate: float64(count.Load()) / d.Seconds(), errors: errors.Load()}
	if n := count.Load(); n > 0 {
		r.serverCPU, r.loadCPU = serverCPU/time.Duration(n), loadCPU/time.Duration(n)
	}
	if len(all) > 0 {
		r.p50, r.p99 = all[len(all)/2], all[len(all)*99/100]
	}
	return r
}

// rawRequest is the bytes of the payload's POST to url, and the address to
// send them to.
func rawRequest(rawURL string) ([]byte, string, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, "", err
	}
	head := fmt.Sprintf("POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", u.RequestURI(), u.Host, len(payload))
	return append([]byte(head), payload...), u.Host, nil
}

// conn is one keep-alive HTTP/1.1 connection of the load generator. It
// writes the same request bytes every time and reads the response with
// nothing around it: net/http's client (two goroutines and a pool per
// connection) would spend the cores the servers are measured on, and its
// own scheduling would show in every percentile.
type conn struct {
	c net.Conn
	r *bufio.Reader
}

func dial(addr string) (*conn, error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	return &conn{c: c, r: bufio.NewReader(c)}, nil
}

// post sends req and reads the whole response, which must be 200 OK.
func (c *conn) post(req []byte) error {
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.c.Write(req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.r, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("status %d", resp.StatusCode)
	}
	return err
}

func (c *conn) close() {
	if c != nil {
		c.c.Close()
	}
}

// coldStarts runs each of bins (the floor, admitfn) n times, taking turns
// so both meet the same moments of a noisy machine, and returns the median
// of each one's exec → first answered review.
func coldStarts(n int, runs ...[]string) ([]time.Duration, []int64, error) {
	times := make([][]time.Duration, len(runs))
	rss := make([][]int64, len(runs))
	for range n {
		for i, run := range runs {
			p, took, err := start(run[0], run[1:]...)
			if err != nil {
				return nil, nil, err
			}
			rss[i] = append(rss[i], p.rss())
			p.stop()
			times[i] = append(times[i], took)
		}
	}
	medians := make([]time.Duration, len(runs))
	rssMedians := make([]int64, len(runs))
	for i := range runs {
		medians[i], rssMedians[i] = median(times[i]), median(rss[i])
	}
	return medians, rssMedians, nil
}

// withCredentials are the arguments that put registry credentials in play
// as a cluster's admitfn has them: a kubeconfig to read pods' pull Secrets
// with and the kubelet's credential provider plugins (none is run at
// start: a plugin runs when an image it matches is looked up).
func withCredentials(dir string) ([]string, error) {
	kubeconfig := filepath.Join(dir, "kubeconfig")
	providers := filepath.Join(dir, "credential-providers.yaml")
	for file, body := range map[string]string{
		kubeconfig: `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: bench}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`,
		providers: `apiVersion: kubelet.config.k8s.io/v1
kind: CredentialProviderConfig
providers:
- name: ecr-credential-provider
  apiVersion: credentialprovider.kubelet.k8s.io/v1
  matchImages: ["*.dkr.ecr.*.amazonaws.com"]
  defaultCacheDuration: 12h
`,
	} {
		if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
			return nil, err
		}
	}
	return []string{"--kubeconfig", kubeconfig, "--image-credential-provider-config", providers, "--image-credential-provider-bin-dir", dir}, nil
}

func median[T cmp.Ordered](xs []T) T {
	s := slices.Clone(xs)
	slices.Sort(s)
	return s[len(s)/2]
}

type soakResult struct {
	errors           int64
	rssStart, rssEnd int64
}

// runSoak loads p at rate for d and compares RSS early and late in the run.
func runSoak(p *process, workers int, d time.Duration, rate float64) soakResult {
	var s soakResult
	done := make(chan result)
	go func() { done <- load(p, workers, d, rate) }()
	time.Sleep(min(d/6, 10*time.Second))
	s.rssStart = p.rss()
	time.Sleep(d - 2*min(d/6, 10*time.Second))
	s.rssEnd = p.rss()
	s.errors = (<-done).errors
	return s
}
