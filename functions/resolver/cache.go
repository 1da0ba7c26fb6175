package resolver

import (
	"container/list"
	"sync"
	"time"

	"github.com/admitfn/admitfn/functions/policy"
)

// cache is a size-bounded LRU of registry answers. An entry outlives its TTL
// by the stale window so it can stand in when the registry fails.
type cache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List
	items map[string]*list.Element
}

type entry struct {
	key     string
	facts   policy.Facts
	expires time.Time // fresh until
	staleBy time.Time // usable when the registry fails until
}

func newCache(max int) *cache {
	return &cache{max: max, ll: list.New(), items: map[string]*list.Element{}}
}

// get returns the entry for key whatever its age; the caller decides
// whether it is fresh or stale enough.
func (c *cache) get(key string) (entry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return entry{}, false
	}
	c.ll.MoveToFront(el)
	return el.Value.(entry), true
}

func (c *cache) put(e entry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		el.Value = e
		c.ll.MoveToFront(el)
		return
	}
	c.items[e.key] = c.ll.PushFront(e)
	for c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(entry).key)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
