// Package testclock is a settable clock for tests of code that takes its
// clock injected (a func() time.Time), safe for concurrent use.
package testclock

import (
	"sync"
	"time"
)

// Clock reads a time that moves only when Advance is called.
type Clock struct {
	mu  sync.Mutex
	now time.Time
}

// New returns a Clock at start.
func New(start time.Time) *Clock { return &Clock{now: start} }

// Now is the clock's time; pass c.Now where a func() time.Time is asked.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Advance moves the clock d forward.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}
