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

// podCreate runs test/e2e's BenchmarkPodCreate (a real kube-apiserver and
// etcd on loopback) and returns its metrics by unit, e.g.
// "ms/pod-with-admitfn".
func podCreate(creates int) (map[string]float64, error) {
	cmd := exec.Command("go", "test", "-tags", "e2e", "-count=1", "-run", "^$",
		"-bench", "^BenchmarkPodCreate$", "-benchtime", fmt.Sprintf("%dx", creates), "./test/e2e/")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("BenchmarkPodCreate: %v\n%s", err, out.String())
	}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 || !strings.HasPrefix(f[0], "BenchmarkPodCreate") {
			continue
		}
		metrics := map[string]float64{}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				return nil, fmt.Errorf("BenchmarkPodCreate line %q: %v", sc.Text(), err)
			}
			metrics[f[i+1]] = v
		}
		return metrics, nil
	}
	return nil, fmt.Errorf("BenchmarkPodCreate printed no result:\n%s", out.String())
}
