package resolver

import (
	"container/list"
	"sync"
	"time"

	"github.com/admitfn/admitfn/functions/imagefacts"
)

// maxCachedBytes bounds what the cache holds of signatures, attestations,
// bundles and labels, whatever spec.registry.cacheSize allows: those are
// the parts of an answer whoever pushes an image decides the size of
// (each lookup's are bounded by MaxLookupBytes).
const maxCachedBytes = 16 << 20

// cache is an LRU of registry answers bounded in entries and in bytes. An
// entry outlives its TTL by the stale window so it can stand in when the
// registry fails.
type cache struct {
	mu       sync.Mutex
	max      int
	maxBytes int
	bytes    int
	ll       *list.List
	items    map[string]*list.Element
}

type entry struct {
	key     string
	facts   imagefacts.Facts
	expires time.Time // fresh until
	staleBy time.Time // usable when the registry fails until
	size    int       // factsSize(facts), counted against maxBytes
}

func newCache(max, maxBytes int) *cache {
	return &cache{max: max, maxBytes: maxBytes, ll: list.New(), items: map[string]*list.Element{}}
}

// factsSize approximates the bytes an answer holds.
func factsSize(f imagefacts.Facts) int {
	n := 256 + len(f.Digest) + 64*len(f.Platforms)
	for _, c := range f.Configs {
		n += 128 + len(c.User)
		for k, v := range c.Labels {
			n += len(k) + len(v) + 32
		}
	}
	n += len(f.ManifestMediaType)
	for _, s := range f.Signatures {
		n += len(s.Payload) + len(s.Signature) + len(s.Certificate) + len(s.LogEntry) + len(s.Timestamp)
	}
	for _, s := range f.NotationSignatures {
		n += 32 + len(s.MediaType) + len(s.Envelope)
	}
	for _, a := range f.Attestations {
		n += len(a)
	}
	for _, b := range f.Bundles {
		n += len(b)
	}
	for _, s := range f.Skipped {
		n += len(s)
	}
	return n
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
	e.size = factsSize(e.facts)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[e.key]; ok {
		c.bytes -= el.Value.(entry).size
		el.Value = e
		c.ll.MoveToFront(el)
	} else {
		c.items[e.key] = c.ll.PushFront(e)
	}
	c.bytes += e.size
	for c.ll.Len() > c.max || c.bytes > c.maxBytes && c.ll.Len() > 1 {
		last := c.ll.Back()
		c.ll.Remove(last)
		old := last.Value.(entry)
		c.bytes -= old.size
		delete(c.items, old.key)
	}
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}
