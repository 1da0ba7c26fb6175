package expiring

import (
	"testing"
	"time"
)

func TestMakeRoomDropsExpiredFirst(t *testing.T) {
	now := time.Unix(1000, 0)
	until := func(v time.Time) time.Time { return v }
	m := map[string]time.Time{"old": now.Add(-time.Second), "live1": now.Add(time.Hour), "live2": now.Add(time.Hour)}
	MakeRoom(m, 3, now, until)
	if _, ok := m["old"]; ok || len(m) != 2 {
		t.Errorf("after MakeRoom: %v, want the expired entry gone and both live ones kept", m)
	}
	m = map[string]time.Time{"a": now.Add(time.Hour), "b": now.Add(time.Hour), "c": now.Add(time.Hour)}
	MakeRoom(m, 3, now, until)
	if len(m) != 2 {
		t.Errorf("all live and full: %d left, want 2", len(m))
	}
	m = map[string]time.Time{"a": now.Add(time.Hour)}
	MakeRoom(m, 3, now, until)
	if len(m) != 1 {
		t.Errorf("below the bound: %d left, want 1 (nothing dropped)", len(m))
	}
}
