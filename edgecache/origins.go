package edgecache

import (
	"context"
	"net/http"
	"time"

	"github.com/shoal-video/shoal/internal/originset"
)

// Several origins (Config.OriginURL lists them, Deps.Origins adds those
// the edge learns from the registry): every request the cache makes to
// an origin (a fetch, a revalidation, a blocking reload, a part, the HEAD
// that verifies a sibling's bytes, a pass-through) goes to the preferred
// origin, and to the next one when the first fails to answer (a
// connection error, a stall past the watchdog) or answers 502, 503 or 504
// (except a blocking reload's 503, which is the origin's answer: the
// playlist did not get there in time), down the origins not avoided now
// (originset.Set.Attempts: two at least). An origin that failed is tried
// after the others for originset.AvoidFor, then, of the origins whose
// avoidance ran out together, one a request. Every origin serves the same
// objects (they share the bucket, and proxy live streams to their owner):
// what the cache verifies and relays is the same whichever answered.

// originDo sends a request for key to the origins as described above.
// Each attempt has its own watchdog over parent (first bounds the wait for
// the headers, OriginTimeout every pause after). It returns the answer
// with its context and watchdog (the caller stops the watchdog once done
// with the body), or the last attempt's error with its context (nil when
// no request could be made). prep, when
// set, adds headers to each request; count counts each attempt as an
// origin fetch.
func (c *Cache) originDo(parent context.Context, method, key, token, viewerIP string, first time.Duration,
	prep func(*http.Request), count bool) (*http.Response, context.Context, *watchdog, error) {
	var (
		ctx     context.Context
		lastErr error
	)
	attempts := c.origins.Attempts()
	for i, base := range attempts {
		var wd *watchdog
		ctx, wd = newWatchdog(parent, first, c.cfg.OriginTimeout)
		req, err := c.upstreamRequest(ctx, base, method, key, token, viewerIP)
		if err != nil {
			wd.stop()
			return nil, nil, nil, err // no request can be made for key
		}
		if prep != nil {
			prep(req)
		}
		if count {
			c.originGets.Add(1)
			c.m.originFetches.Inc()
		}
		last := i == len(attempts)-1
		resp, err := c.client.Do(req)
		if err != nil {
			lastErr = upstreamErr(ctx, err)
			wd.stop()
			if parent.Err() != nil {
				return nil, ctx, nil, err
			}
			c.originFailed(base, key, lastErr.Error(), last)
			continue
		}
		if originset.FailoverStatus(resp.StatusCode) && !(resp.StatusCode == http.StatusServiceUnavailable && isBlockingKey(key)) {
			if !last {
				resp.Body.Close()
				wd.stop()
				c.originFailed(base, key, resp.Status, false)
				continue
			}
			c.origins.Failed(base)
		} else {
			c.origins.Succeeded(base)
		}
		return resp, ctx, wd, nil
	}
	return nil, ctx, nil, lastErr
}

// originFailed marks base as failing; last tells whether no other origin
// is tried for this request.
func (c *Cache) originFailed(base, key, why string, last bool) {
	c.origins.Failed(base)
	if last {
		return
	}
	c.failovers.Add(1)
	c.m.originFailovers.Inc()
	c.reportError("origin failed, trying the next one", "origin", base, "path", key, "err", why)
}
