package main

import (
	"testing"
	"time"
)

func TestStatCPU(t *testing.T) {
	for _, c := range []struct {
		name, stat string
		want       time.Duration
		wantErr    bool
	}{
		{"plain", "19886 (admitfn) S 1 1 1 0 -1 4194304 98 0 0 0 250 31 0 0 20 0 3 0", 2810 * time.Millisecond, false},
		{"name with spaces and parentheses", "7 (a) b (c) R 1 1 1 0 -1 0 0 0 0 0 4 6 0 0 20 0 1 0", 100 * time.Millisecond, false},
		{"cut short", "7 (admitfn) S 1 1 1 0 -1 0 0 0 0 0 4", 0, true},
		{"no command name", "7 admitfn S 1 1 1 0 -1 0 0 0 0 0 4 6 0 0", 0, true},
		{"not a number", "7 (admitfn) S 1 1 1 0 -1 0 0 0 0 0 x 6 0 0 20", 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := statCPU([]byte(c.stat))
			if (err != nil) != c.wantErr || got != c.want {
				t.Errorf("statCPU(%q) = %v, %v; want %v, error %v", c.stat, got, err, c.want, c.wantErr)
			}
		})
	}
}
