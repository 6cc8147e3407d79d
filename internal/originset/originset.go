// Package originset is the set of origins an edge talks to: the ones it
// was configured with (SHOAL_ORIGIN_URL, never dropped) and the ones it
// learned from the registry (the "origins" of a heartbeat's answer,
// dropped when no longer listed). Both the edge cache and the node
// protocol client send each request to the preferred origin and, on a
// connection error or a 502/503/504, to the next one, down the origins not
// avoided now, until one answers; an origin that failed is avoided for
// AvoidFor. A request is sent to two origins at least (the second an
// avoided one when a single one is not avoided).
//
// Preference: the configured origins in their order, then the learned ones
// in byte order; the origins avoided now come after the others (so that a
// request is still sent somewhere when every origin failed recently).
// When the avoidance of an origin runs out it takes its place again, but
// until it answers once it is on probation: a request tries only the first
// origin on probation among those not avoided, the others after them, so
// that origins that failed together (dead ones, failed by one request) are
// not all tried again by one request before an origin that works.
package originset

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// AvoidFor is how long an origin that failed is tried after the others.
const AvoidFor = 10 * time.Second

// MaxLearned bounds the origins learned from the registry.
const MaxLearned = 64

// Set is a set of origins, safe for concurrent use.
type Set struct {
	now func() time.Time

	mu         sync.Mutex
	configured []string
	learned    []string
	// avoid maps an origin that failed to the time it is avoided until;
	// the entry stays when that time is past (the origin is on probation)
	// until the origin answers or leaves the set.
	avoid map[string]time.Time
}

// Parse splits a comma-separated list of origin base URLs (blanks around
// entries and a trailing slash are dropped) and validates each: an
// absolute http(s) URL with a host, without query or fragment. Duplicates
// are refused.
func Parse(list string) ([]string, error) {
	var out []string
	for _, s := range strings.Split(list, ",") {
		s = strings.TrimSuffix(strings.TrimSpace(s), "/")
		if s == "" {
			return nil, errors.New("an empty entry in the list of origin URLs")
		}
		if err := Check(s); err != nil {
			return nil, err
		}
		if slices.Contains(out, s) {
			return nil, fmt.Errorf("origin URL %q is listed twice", s)
		}
		out = append(out, s)
	}
	return out, nil
}

// Check validates one origin base URL.
func Check(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Hostname() == "" ||
		u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return fmt.Errorf("origin URL %q must be an absolute http:// or https:// URL with a host, without query or fragment", s)
	}
	return nil
}

// New returns the set of the configured origins (at least one, each
// valid; see Parse). now is the clock failures are reckoned by (nil:
// time.Now).
func New(configured []string, now func() time.Time) (*Set, error) {
	if len(configured) == 0 {
		return nil, errors.New("originset: at least one origin URL is required")
	}
	cfg := make([]string, 0, len(configured))
	for _, s := range configured {
		s = strings.TrimSuffix(s, "/")
		if err := Check(s); err != nil {
			return nil, fmt.Errorf("originset: %w", err)
		}
		if !slices.Contains(cfg, s) {
			cfg = append(cfg, s)
		}
	}
	if now == nil {
		now = time.Now
	}
	return &Set{now: now, configured: cfg, avoid: map[string]time.Time{}}, nil
}

// Learn makes urls the learned origins: those not configured are added
// (invalid ones skipped, at most MaxLearned), and learned origins no
// longer listed are dropped. It reports whether the set changed.
func (s *Set) Learn(urls []string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	var learned []string
	for _, u := range urls {
		u = strings.TrimSuffix(strings.TrimSpace(u), "/")
		if Check(u) != nil || slices.Contains(s.configured, u) || slices.Contains(learned, u) {
			continue
		}
		if len(learned) == MaxLearned {
			break
		}
		learned = append(learned, u)
	}
	slices.Sort(learned)
	if slices.Equal(learned, s.learned) {
		return false
	}
	for u := range s.avoid {
		if !slices.Contains(s.configured, u) && !slices.Contains(learned, u) {
			delete(s.avoid, u)
		}
	}
	s.learned = learned
	return true
}

// All returns every origin in preference order, avoided ones included in
// their place.
func (s *Set) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append(slices.Clone(s.configured), s.learned...)
}

// Order returns the origins in the order to try them: the ones not
// avoided now in preference order, then the avoided ones (the soonest to
// be tried again first).
func (s *Set) Order() []string {
	o, _, _ := s.order()
	return o
}

// order returns Order, how many of its origins are not avoided, and
// whether each of those is on probation.
func (s *Set) order() (o []string, n int, probation []bool) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.configured)+len(s.learned))
	var avoided []string
	for _, list := range [][]string{s.configured, s.learned} {
		for _, u := range list {
			until, ok := s.avoid[u]
			if ok && now.Before(until) {
				avoided = append(avoided, u)
				continue
			}
			out = append(out, u)
			probation = append(probation, ok)
		}
	}
	n = len(out)
	slices.SortStableFunc(avoided, func(a, b string) int { return s.avoid[a].Compare(s.avoid[b]) })
	return append(out, avoided...), n, probation
}

// Attempts returns the origins one request is sent to, in order, each
// after the one before failed: the origins not avoided now in preference
// order, of those on probation only the first, then, when that makes
// fewer than two, the next of the others (the rest on probation, then the
// avoided ones, the soonest to be tried again first) up to two (one when
// the set holds one origin).
func (s *Set) Attempts() []string {
	o, n, probation := s.order()
	first := make([]string, 0, len(o))
	var rest []string
	tried := false
	for i, u := range o {
		switch {
		case i >= n:
			rest = append(rest, u)
		case !probation[i]:
			first = append(first, u)
		case !tried:
			first, tried = append(first, u), true
		default:
			rest = append(rest, u)
		}
	}
	return append(first, rest[:min(max(0, 2-len(first)), len(rest))]...)
}

// Failed marks an origin as failing: it is avoided for AvoidFor.
func (s *Set) Failed(u string) {
	until := s.now().Add(AvoidFor)
	s.mu.Lock()
	if slices.Contains(s.configured, u) || slices.Contains(s.learned, u) {
		s.avoid[u] = until
	}
	s.mu.Unlock()
}

// Succeeded clears an origin's failure mark.
func (s *Set) Succeeded(u string) {
	s.mu.Lock()
	delete(s.avoid, u)
	s.mu.Unlock()
}

// FailoverStatus reports whether an answer with this status is retried at
// the next origin: 502, 503 and 504 (the origin, or the proxy in front of
// it, cannot answer now).
func FailoverStatus(code int) bool {
	return code == http.StatusBadGateway || code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout
}
