package edgecache

import (
	"bytes"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
)

// LL-HLS blocking playlist reloads (see the package doc).
//
// A request for a rendition's playlist (/hls/<id>/<r>/<name>.m3u8) or its
// signed manifest (/hls/<id>/<r>/manifest.txt) with _HLS_msn (and maybe
// _HLS_part) is cached and coalesced under its own key, the path plus the
// normalized parameters:
//
//	/hls/<id>/<r>/index.m3u8?_HLS_msn=<N>
//	/hls/<id>/<r>/index.m3u8?_HLS_msn=<N>&_HLS_part=<P>
//
// N and P without leading zeros. A delta update (_HLS_skip=YES or v2, the
// DVR playlists) adds "&_HLS_skip=<v>" (or is "?_HLS_skip=<v>" alone). The
// same query (plus the token) is what goes upstream. Every other parameter
// is left out of the key and is not forwarded.

// Names of the blocking reload parameters.
const (
	paramMSN  = "_HLS_msn"
	paramPart = "_HLS_part"
	paramSkip = "_HLS_skip"
)

// maxBlockingDigits is the longest _HLS_msn or _HLS_part value accepted.
const maxBlockingDigits = 10

// DefaultBlockingMargin is added to Config.OriginTimeout when
// Config.BlockingTimeout is left zero: the origin holds a blocking reload
// for up to three target durations before it answers 503.
const DefaultBlockingMargin = 20 * time.Second

// blockingPath reports whether p may carry a blocking reload: a rendition's
// media playlist or signed manifest (/hls/<id>/<r>/<file>), not the master
// playlist nor a media object.
func blockingPath(p string) bool {
	if !strings.HasPrefix(p, hlspath.Prefix) || strings.Count(p, "/") != 4 {
		return false
	}
	return strings.HasSuffix(p, ".m3u8") || strings.HasSuffix(p, "/manifest.txt")
}

// blockingKey returns the cache key of a request for path p with the raw
// query q: p itself when the request is not a blocking reload, p plus the
// normalized parameters when it is. ok is false when the parameters are
// malformed (the request is answered 400): a value that is not 1 to 10
// decimal digits, a parameter given twice, or _HLS_part without _HLS_msn.
func blockingKey(p, q string) (key string, ok bool) {
	if q == "" || !blockingPath(p) || !strings.Contains(q, "HLS_") {
		// "HLS_" also catches escaped names ("%5FHLS_msn"); the rest are
		// ignored parameters.
		return p, true
	}
	var msn, part, skip string
	var haveMSN, havePart, haveSkip bool
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		if strings.IndexByte(k, '%') >= 0 || strings.IndexByte(k, '+') >= 0 {
			uk, err := url.QueryUnescape(k)
			if err != nil {
				continue // not one of ours, and ignored like any other
			}
			k = uk
		}
		switch k {
		case paramMSN:
			if haveMSN {
				return "", false
			}
			haveMSN = true
			msn = v
		case paramPart:
			if havePart {
				return "", false
			}
			havePart = true
			part = v
		case paramSkip:
			if haveSkip || (v != "YES" && v != "v2") {
				return "", false
			}
			haveSkip = true
			skip = "&" + paramSkip + "=" + v
		}
	}
	if !haveMSN {
		if havePart {
			return "", false
		}
		if haveSkip {
			return p + "?" + skip[1:], true
		}
		return p, true
	}
	n, ok := blockingNumber(msn)
	if !ok {
		return "", false
	}
	key = p + "?" + paramMSN + "=" + n
	if havePart {
		n, ok := blockingNumber(part)
		if !ok {
			return "", false
		}
		key += "&" + paramPart + "=" + n
	}
	return key + skip, true
}

// A playlist that has ended (#EXT-X-ENDLIST; a manifest with "ended 1")
// does not block: the origin answers every _HLS_msn of it at once with the
// whole playlist (RFC 8216bis 6.2.5.2), and a viewer counting _HLS_msn
// upwards would otherwise cost one upstream request and one copy in memory
// per value. Such an answer, to a blocking reload or not, is kept as the
// answer of the plain path only (meta.Ended set), and every blocking
// reload of that path is answered from a fresh copy of it.

// finished reports whether body, a 200 for key, is a rendition's playlist
// or manifest that has ended.
func finished(key string, body []byte) bool {
	p := keyPath(key)
	switch {
	case !blockingPath(p):
		return false
	case strings.HasSuffix(p, ".m3u8"):
		return bytes.Contains(body, endList)
	default:
		// No other line of a manifest starts with "ended".
		return bytes.Contains(body, manifestEnded)
	}
}

var endList, manifestEnded = []byte("#EXT-X-ENDLIST"), []byte("\nended 1\n")

// endedCopy returns the fresh copy in memory of the plain path of the
// blocking reload key when that playlist has ended, nil if there is none.
func (c *Cache) endedCopy(key string, now time.Time) *object {
	o := c.mem.get(keyPath(key))
	if o == nil || !o.Ended || o.status != http.StatusOK || !o.fresh(now) {
		return nil
	}
	return o
}

// blockingNumber validates a parameter value (1 to maxBlockingDigits ASCII
// digits, no escapes, no sign) and returns it without leading zeros.
func blockingNumber(v string) (string, bool) {
	if v == "" || len(v) > maxBlockingDigits {
		return "", false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return "", false
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return "", false
	}
	return strconv.FormatUint(n, 10), true
}

// isBlockingKey reports whether a cache key is a blocking reload's: the
// only keys with a query.
func isBlockingKey(key string) bool { return strings.IndexByte(key, '?') >= 0 }

// keyPath is the URL path of a cache key.
func keyPath(key string) string {
	if i := strings.IndexByte(key, '?'); i >= 0 {
		return key[:i]
	}
	return key
}

// upstreamURL is the URL key is fetched from at base, with the viewer's
// token.
func upstreamURL(base, key, token string) string {
	u := base + key
	if token == "" {
		return u
	}
	if isBlockingKey(key) {
		return u + "&token=" + url.QueryEscape(token)
	}
	return u + "?token=" + url.QueryEscape(token)
}

// headerTimeout bounds the wait for the origin's headers to a request for
// key: Config.BlockingTimeout for a blocking reload and for a part (the
// origin holds the preload-hinted one until it exists), OriginTimeout for
// everything else. Pauses in a body are bounded by OriginTimeout always.
func (c *Cache) headerTimeout(key string) time.Duration {
	if isBlockingKey(key) || hlspath.IsPart(key) {
		return c.cfg.BlockingTimeout
	}
	return c.cfg.OriginTimeout
}

// blockingMarks remembers, per playlist (its path and delta-update form),
// the newest blocking reload the origin answered. A request for an older
// position (msn, part) is answered with that answer while it is fresh in
// memory: it holds what was asked for (RFC 8216bis 6.2.5.2: a server
// answers at once with the current playlist), so requests for many past
// positions neither each go upstream nor each fill the memory tier with a
// copy of the playlist.
type blockingMarks struct {
	mu sync.Mutex
	m  map[string]blockingMark
}

// passedAnswerAge bounds the age of an answer given for a passed position:
// a broadcast that starts again (after the reconnect grace) starts its
// media sequence over, and an older answer may be the last broadcast's.
const passedAnswerAge = 2 * time.Second

// blockingMark is a blocking reload answered: the position it asked for
// (part -1: the whole segment msn) and its cache key.
type blockingMark struct {
	msn, part int64
	key       string
}

// maxBlockingMarks bounds the playlists remembered (a playlist is one that
// the origin answered with a 200, so this is generous).
const maxBlockingMarks = 4096

// parseBlockingPos splits a blocking reload's cache key into its playlist
// (the path plus a delta-update parameter) and position; ok is false for
// any other key (and for a delta update without _HLS_msn).
func parseBlockingPos(key string) (playlist string, msn, part int64, ok bool) {
	p, q, found := strings.Cut(key, "?")
	if !found {
		return "", 0, 0, false
	}
	part = -1
	var skip string
	for q != "" {
		var kv string
		kv, q, _ = strings.Cut(q, "&")
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case paramMSN:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return "", 0, 0, false
			}
			msn, ok = n, true
		case paramPart:
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return "", 0, 0, false
			}
			part = n
		case paramSkip:
			skip = v
		}
	}
	return p + "?" + skip, msn, part, ok
}

// before reports whether m's position comes before (msn, part): a whole
// segment comes after all its parts.
func (m blockingMark) before(msn, part int64) bool {
	switch {
	case m.msn != msn:
		return m.msn < msn
	case m.part < 0:
		return false
	default:
		return part < 0 || m.part < part
	}
}

// note records that the origin answered the blocking reload key.
func (b *blockingMarks) note(key string) {
	pl, msn, part, ok := parseBlockingPos(key)
	if !ok {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	old, had := b.m[pl]
	if had && !old.before(msn, part) {
		return
	}
	if b.m == nil || !had && len(b.m) >= maxBlockingMarks {
		b.m = map[string]blockingMark{}
	}
	b.m[pl] = blockingMark{msn: msn, part: part, key: key}
}

// newer returns the key of the newest answered blocking reload of key's
// playlist when it holds what key asks for (a later position), "" if
// there is none.
func (b *blockingMarks) newer(key string) string {
	pl, msn, part, ok := parseBlockingPos(key)
	if !ok {
		return ""
	}
	b.mu.Lock()
	m, had := b.m[pl]
	b.mu.Unlock()
	if !had || m.key == key || m.before(msn, part) || m.msn == msn && m.part == part {
		return ""
	}
	return m.key
}
