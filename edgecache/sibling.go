package edgecache

import (
	"strconv"
	"strings"
)

// owner picks, by rendezvous (highest random weight) hashing over this edge
// and its live siblings not marked bad, the edge that owns key. It returns
// the sibling when it is not this edge.
func (c *Cache) owner(key string) (Sibling, bool) {
	if c.siblings == nil {
		return Sibling{}, false
	}
	self := strings.TrimRight(c.cfg.Self, "/")
	best := weight(self, key)
	var win Sibling
	found := false
	now := c.now()
	for _, s := range c.siblings() {
		u := strings.TrimRight(s.URL, "/")
		if u == "" || u == self || c.isBad(s.ID, now) {
			continue
		}
		if w := weight(u, key); w > best || (w == best && found && u < strings.TrimRight(win.URL, "/")) {
			best, win, found = w, s, true
		}
	}
	return win, found
}

// weight is the rendezvous weight of node for key: FNV-1a over both, then
// a 64-bit finalizer so that nearby inputs spread well.
func weight(node, key string) uint64 {
	const (
		offset = 14695981039346656037
		prime  = 1099511628211
	)
	h := uint64(offset)
	for i := 0; i < len(node); i++ {
		h ^= uint64(node[i])
		h *= prime
	}
	h ^= 0xff
	h *= prime
	for i := 0; i < len(key); i++ {
		h ^= uint64(key[i])
		h *= prime
	}
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	return h
}

// cacheStatus builds an RFC 9211 Cache-Status value for a forwarded request.
func (c *Cache) cacheStatus(fwd string, fwdStatus int, stored bool, detail string) []string {
	var b strings.Builder
	b.WriteString(c.cachePrefix)
	b.WriteString("fwd=")
	b.WriteString(fwd)
	if fwdStatus != 0 {
		b.WriteString("; fwd-status=")
		b.WriteString(strconv.Itoa(fwdStatus))
	}
	if stored {
		b.WriteString("; stored")
	}
	if detail != "" {
		b.WriteString("; detail=")
		b.WriteString(sfTokenOrString(detail))
	}
	return []string{b.String()}
}

// sfTokenOrString writes s as a structured-field token when it is one, as
// a quoted string otherwise (non-printable characters dropped).
func sfTokenOrString(s string) string {
	if nameRe.MatchString(s) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		ch := s[i]
		switch {
		case ch == '"' || ch == '\\':
			b.WriteByte('\\')
			b.WriteByte(ch)
		case ch >= 0x20 && ch < 0x7f:
			b.WriteByte(ch)
		}
	}
	b.WriteByte('"')
	return b.String()
}
