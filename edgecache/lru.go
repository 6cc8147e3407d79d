package edgecache

// lru is a byte-capped least-recently-used index. It is not safe for
// concurrent use: each tier guards its own with a mutex.
type lru[V any] struct {
	max   int64
	used  int64
	items map[string]*lruNode[V]
	root  lruNode[V] // sentinel: root.next is the most recent, root.prev the least
}

type lruNode[V any] struct {
	key        string
	size       int64
	val        V
	prev, next *lruNode[V]
}

func newLRU[V any](max int64) *lru[V] {
	l := &lru[V]{max: max, items: make(map[string]*lruNode[V])}
	l.root.next = &l.root
	l.root.prev = &l.root
	return l
}

func (l *lru[V]) unlink(n *lruNode[V]) {
	n.prev.next = n.next
	n.next.prev = n.prev
	n.prev, n.next = nil, nil
}

func (l *lru[V]) pushFront(n *lruNode[V]) {
	n.prev = &l.root
	n.next = l.root.next
	l.root.next.prev = n
	l.root.next = n
}

// get returns the value stored under key and marks it most recently used.
func (l *lru[V]) get(key string) (V, bool) {
	n, ok := l.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	if l.root.next != n {
		l.unlink(n)
		l.pushFront(n)
	}
	return n.val, true
}

// peek returns the value under key without touching its recency.
func (l *lru[V]) peek(key string) (V, bool) {
	n, ok := l.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	return n.val, true
}

// add stores val under key as the most recent entry, replacing any previous
// value, then evicts the least recent entries until the total size is within
// max. It returns what it removed (the replaced value included); the caller
// releases their resources. An entry bigger than max is not stored: it is
// returned as evicted at once.
func (l *lru[V]) add(key string, size int64, val V, evicted []V) []V {
	if old, ok := l.items[key]; ok {
		l.unlink(old)
		delete(l.items, key)
		l.used -= old.size
		evicted = append(evicted, old.val)
	}
	if size > l.max {
		return append(evicted, val)
	}
	n := &lruNode[V]{key: key, size: size, val: val}
	l.items[key] = n
	l.pushFront(n)
	l.used += size
	for l.used > l.max {
		last := l.root.prev
		l.unlink(last)
		delete(l.items, last.key)
		l.used -= last.size
		evicted = append(evicted, last.val)
	}
	return evicted
}

// addOldest stores val as the least recent entry if key is not present and
// there is room: the disk scan inserts newest first.
func (l *lru[V]) addOldest(key string, size int64, val V) bool {
	if _, ok := l.items[key]; ok || l.used+size > l.max {
		return false
	}
	n := &lruNode[V]{key: key, size: size, val: val}
	l.items[key] = n
	n.next = &l.root
	n.prev = l.root.prev
	l.root.prev.next = n
	l.root.prev = n
	l.used += size
	return true
}

// remove deletes key; it reports the value removed.
func (l *lru[V]) remove(key string) (V, bool) {
	n, ok := l.items[key]
	if !ok {
		var zero V
		return zero, false
	}
	l.unlink(n)
	delete(l.items, key)
	l.used -= n.size
	return n.val, true
}

func (l *lru[V]) len() int { return len(l.items) }

// keys returns the keys that match.
func (l *lru[V]) keys(match func(string) bool) []string {
	var out []string
	for k := range l.items {
		if match(k) {
			out = append(out, k)
		}
	}
	return out
}
