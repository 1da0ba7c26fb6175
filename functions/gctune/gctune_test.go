package gctune

import (
	"io/fs"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestChoose(t *testing.T) {
	t.Parallel()
	const v2, v1 = "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"
	tests := []struct {
		name  string
		env   map[string]string
		files map[string]string
		want  Settings
	}{{
		name:  "Knative container with a 128Mi limit (cgroup v2)",
		files: map[string]string{v2: "134217728\n"},
		want:  Settings{Percent: 250, Limit: 120795955, Why: "GOGC=250, memory limit 115 MiB (90% of " + v2 + ")"},
	}, {
		name:  "cgroup v1",
		files: map[string]string{v1: "268435456\n"},
		want:  Settings{Percent: 250, Limit: 241591910, Why: "GOGC=250, memory limit 230 MiB (90% of " + v1 + ")"},
	}, {
		name:  "no limit in cgroup v2",
		files: map[string]string{v2: "max\n", v1: "268435456\n"},
		want:  Settings{Percent: 250, Why: "GOGC=250, no memory limit (no cgroup limit found)"},
	}, {
		name:  "no limit in cgroup v1",
		files: map[string]string{v1: "9223372036854771712\n"},
		want:  Settings{Percent: 250, Why: "GOGC=250, no memory limit (no cgroup limit found)"},
	}, {
		name: "no cgroup files",
		want: Settings{Percent: 250, Why: "GOGC=250, no memory limit (no cgroup limit found)"},
	}, {
		name:  "unreadable limit",
		files: map[string]string{v2: "lots"},
		want:  Settings{Percent: 250, Why: "GOGC=250, no memory limit (no cgroup limit found)"},
	}, {
		name:  "the operator's GOGC and GOMEMLIMIT win",
		env:   map[string]string{"GOGC": "100", "GOMEMLIMIT": "64MiB"},
		files: map[string]string{v2: "134217728\n"},
		want:  Settings{Why: "GOGC=100 from the environment, GOMEMLIMIT=64MiB from the environment"},
	}, {
		name:  "GOGC=off is the operator's too",
		env:   map[string]string{"GOGC": "off"},
		files: map[string]string{v2: "134217728\n"},
		want:  Settings{Limit: 120795955, Why: "GOGC=off from the environment, memory limit 115 MiB (90% of " + v2 + ")"},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := Choose(func(k string) string { return tt.env[k] }, func(name string) ([]byte, error) {
				if s, ok := tt.files[name]; ok {
					return []byte(s), nil
				}
				return nil, fs.ErrNotExist
			})
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Choose (-want +got):\n%s", diff)
			}
		})
	}
}
