package main

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
)

// podCreate runs test/e2e's BenchmarkPodCreate (the validating webhook)
// and BenchmarkPodCreateImagePolicy (the ImagePolicyWebhook plugin), each
// with real kube-apiservers and etcds on loopback, and returns their
// metrics by benchmark and unit, e.g.
// m["BenchmarkPodCreate"]["ms/pod-with-admitfn"].
// With $KYVERNO set (make bench builds it), BenchmarkKyvernoSideBySide
// runs too.
func podCreate(creates int) (map[string]map[string]float64, error) {
	want := []string{"BenchmarkPodCreate", "BenchmarkPodCreateImagePolicy"}
	if os.Getenv("KYVERNO") != "" {
		want = append(want, "BenchmarkKyvernoSideBySide")
	}
	cmd := exec.Command("go", "test", "-tags", "e2e", "-count=1", "-run", "^$",
		"-bench", "^("+strings.Join(want, "|")+")$", "-benchtime", fmt.Sprintf("%dx", creates), "./test/e2e/")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go test -bench PodCreate: %v\n%s", err, out.String())
	}
	results, err := parseBenchLines(&out)
	if err != nil {
		return nil, err
	}
	for _, name := range want {
		if results[name] == nil {
			return nil, fmt.Errorf("%s printed no result:\n%s", name, out.String())
		}
	}
	return results, nil
}

// parseBenchLines reads go test -bench output: "BenchmarkX-2 N v unit v
// unit ..." becomes results["BenchmarkX"][unit] = v.
func parseBenchLines(out *bytes.Buffer) (map[string]map[string]float64, error) {
	results := map[string]map[string]float64{}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		if _, err := strconv.Atoi(f[1]); err != nil {
			continue // a log line that starts with the name, not a result
		}
		name, _, _ := strings.Cut(f[0], "-")
		metrics := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("%s line %q: %v", name, sc.Text(), err)
			}
			metrics[f[i+1]] = v
		}
		results[name] = metrics
	}
	return results, sc.Err()
}
