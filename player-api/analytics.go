package playerapi

import (
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
)

// Viewer analytics (GET /v1/analytics...), built from the beacons'
// figures kept per scope and hour (routing.AddAnalytics).

// startupEdges are the lower edges (ms) of the startup time histogram's
// buckets (s0, s1, ...); the last bucket is open.
var startupEdges = []float64{0, 250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000, 10000, 15000, 20000, 30000, 60000}

// ratioEdges are the upper edges of the rebuffer ratio histogram's buckets
// (r0, r1, ...): r0 holds sessions that never rebuffered (exactly 0),
// r<i> ratios in (ratioEdges[i-1], ratioEdges[i]].
var ratioEdges = []float64{0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1}

func startupField(ms int64) string {
	i := sort.Search(len(startupEdges), func(i int) bool { return startupEdges[i] > float64(ms) }) - 1
	return "s" + strconv.Itoa(max(i, 0))
}

func ratioBucket(r float64) int {
	i := sort.Search(len(ratioEdges), func(i int) bool { return ratioEdges[i] >= r })
	return min(i, len(ratioEdges)-1)
}

func ratioField(b int) string { return "r" + strconv.Itoa(b) }

// quantile interpolates the q-quantile from bucket counts whose bucket i
// spans [lo(i), hi(i)]; nil when there are no observations.
func quantile(counts []int64, q float64, lo, hi func(i int) float64) *float64 {
	var n int64
	for _, c := range counts {
		n += max(c, 0)
	}
	if n == 0 {
		return nil
	}
	rank := q * float64(n)
	var cum float64
	for i, c := range counts {
		if c <= 0 {
			continue
		}
		if cum+float64(c) >= rank {
			v := lo(i) + (hi(i)-lo(i))*(rank-cum)/float64(c)
			return &v
		}
		cum += float64(c)
	}
	v := lo(len(counts) - 1)
	return &v
}

func startupQuantile(f map[string]int64, q float64) *float64 {
	counts := make([]int64, len(startupEdges))
	for i := range counts {
		counts[i] = f["s"+strconv.Itoa(i)]
	}
	last := len(startupEdges) - 1
	return quantile(counts, q, func(i int) float64 { return startupEdges[i] }, func(i int) float64 {
		if i == last {
			return startupEdges[i] // the open bucket: its lower edge
		}
		return startupEdges[i+1]
	})
}

func ratioQuantile(f map[string]int64, q float64) *float64 {
	counts := make([]int64, len(ratioEdges))
	for i := range counts {
		counts[i] = f[ratioField(i)]
	}
	return quantile(counts, q, func(i int) float64 {
		if i == 0 {
			return 0
		}
		return ratioEdges[i-1]
	}, func(i int) float64 { return ratioEdges[i] })
}

type percentilesJSON struct {
	P50 *float64 `json:"p50"`
	P95 *float64 `json:"p95"`
}

// figuresJSON are the figures of a period (totals, or a series bucket).
type figuresJSON struct {
	Start           *time.Time      `json:"start,omitempty"`
	Views           int64           `json:"views"`
	UniqueViewers   int64           `json:"unique_viewers"`
	WatchSeconds    float64         `json:"watch_seconds"`
	StartupMs       percentilesJSON `json:"startup_ms"`
	RebufferRatio   percentilesJSON `json:"rebuffer_ratio"`
	Rebuffers       int64           `json:"rebuffers"`
	RebufferSeconds float64         `json:"rebuffer_seconds"`
	Errors          int64           `json:"errors"`
	Switches        int64           `json:"switches"`
	Verified        int64           `json:"verified"`
	Failed          int64           `json:"failed"`
}

type breakdownRowJSON struct {
	Value        string  `json:"value"`
	Views        int64   `json:"views"`
	WatchSeconds float64 `json:"watch_seconds"`
}

type analyticsJSON struct {
	ID        string                        `json:"id"`
	Kind      string                        `json:"kind"` // all, video, live or node
	From      time.Time                     `json:"from"`
	To        time.Time                     `json:"to"`
	Bucket    string                        `json:"bucket"`
	Totals    figuresJSON                   `json:"totals"`
	Series    []figuresJSON                 `json:"series"`
	Breakdown map[string][]breakdownRowJSON `json:"breakdown"`
	Items     *[]analyticsItemJSON          `json:"items,omitempty"`
}

type analyticsItemJSON struct {
	ID           string  `json:"id"`
	Kind         string  `json:"kind"`
	Views        int64   `json:"views"`
	WatchSeconds float64 `json:"watch_seconds"`
}

// Bounds of an analytics query.
const (
	maxHourRange = 31 * 24 * time.Hour
	maxDayRange  = 400 * 24 * time.Hour
	topItems     = 50
)

var breakdownDims = []string{"country", "device", "os", "browser"}

func (a *API) registerAnalytics(v1 gin.IRouter) {
	v1.GET("/analytics", func(c *gin.Context) { a.analytics(c, routing.ScopeAll, "all", "all") })
	v1.GET("/analytics/videos/:id", func(c *gin.Context) { a.analyticsOfItem(c, "video") })
	v1.GET("/analytics/live-streams/:id", func(c *gin.Context) { a.analyticsOfItem(c, "live") })
	v1.GET("/analytics/nodes/:id", func(c *gin.Context) {
		id := c.Param("id")
		if !validNodeID(id) {
			WriteError(c, http.StatusNotFound, codeNotFound, "no node with this id")
			return
		}
		a.analytics(c, "node:"+id, id, "node")
	})
}

func (a *API) analyticsOfItem(c *gin.Context, kind string) {
	id := c.Param("id")
	ctx := c.Request.Context()
	var err error
	notFound := "video not found"
	if kind == "live" {
		notFound = "live stream not found"
	}
	if !ids.Valid(id) {
		WriteError(c, http.StatusNotFound, codeNotFound, notFound)
		return
	}
	if kind == "live" {
		_, err = a.store.GetLiveStream(ctx, id)
	} else {
		_, err = a.store.GetVideo(ctx, id)
	}
	if err != nil {
		a.fail(c, err, notFound)
		return
	}
	a.analytics(c, kind+":"+id, id, kind)
}

// analyticsRange reads from, to and bucket; "" or a message for the
// client.
func (a *API) analyticsRange(c *gin.Context) (from, to time.Time, bucket string, step time.Duration, msg string) {
	to = a.now().UTC()
	if s := c.Query("to"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return from, to, "", 0, `"to" must be an RFC 3339 time, for example 2026-12-05T07:00:00Z`
		}
		to = t.UTC()
	}
	// Figures are kept for the retention: no range is longer.
	keep := a.acct.Retention
	from = to.Add(-min(24*time.Hour, keep))
	if s := c.Query("from"); s != "" {
		t, err := time.Parse(time.RFC3339, s)
		if err != nil {
			return from, to, "", 0, `"from" must be an RFC 3339 time, for example 2026-12-04T07:00:00Z`
		}
		from = t.UTC()
	}
	bucket, step, limit := "hour", time.Hour, maxHourRange
	switch c.Query("bucket") {
	case "", "hour":
	case "day":
		bucket, step, limit = "day", 24*time.Hour, maxDayRange
	default:
		return from, to, "", 0, `"bucket" must be hour or day`
	}
	// Nothing older than the retention is kept: a range reaching further
	// back starts there (the answer's "from" says so).
	if to.Sub(from) > keep {
		from = to.Add(-keep)
	}
	// Times past 2262 overflow the hour arithmetic (UnixNano), which then
	// walked back centuries, an hour at a time; no figure is older than
	// the epoch nor newer than now.
	now := a.now().UTC()
	switch {
	case to.Before(time.Unix(0, 0)) || from.Before(time.Unix(0, 0)) || to.After(now.Add(366*24*time.Hour)):
		return from, to, "", 0, `"from" and "to" must be between 1970 and a year from now`
	case !from.Before(to):
		return from, to, "", 0, `"from" must be before "to"`
	case to.Sub(from) > limit:
		return from, to, "", 0, "the range is too long: at most " + strconv.Itoa(int(limit/(24*time.Hour))) + " days with bucket=" + bucket
	}
	return from, to, bucket, step, ""
}

// analytics answers the figures of scope.
func (a *API) analytics(c *gin.Context, scope, id, kind string) {
	from, to, bucket, step, msg := a.analyticsRange(c)
	if msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return
	}
	ctx := c.Request.Context()
	// The hours that hold [from, to), by bucket.
	var hours []time.Time
	var buckets [][]time.Time
	var starts []time.Time
	first := routing.EpochStart(from, time.Hour)
	for b := routing.EpochStart(from, step); b.Before(to); b = b.Add(step) {
		var hs []time.Time
		for h := b; h.Before(b.Add(step)) && h.Before(to); h = h.Add(time.Hour) {
			if !h.Before(first) {
				hs = append(hs, h)
			}
		}
		hours = append(hours, hs...)
		buckets, starts = append(buckets, hs), append(starts, b)
	}
	figs, err := a.store.AnalyticsHours(ctx, scope, hours)
	if err != nil {
		a.fail(c, err, "")
		return
	}
	out := analyticsJSON{ID: id, Kind: kind, From: from, To: to, Bucket: bucket, Series: []figuresJSON{},
		Breakdown: map[string][]breakdownRowJSON{}}
	uniques, err := a.store.UniqueViewers(ctx, scope, append([][]time.Time{hours}, buckets...))
	if err != nil {
		a.fail(c, err, "")
		return
	}
	total := map[string]int64{}
	i := 0
	for bi, hs := range buckets {
		sum := map[string]int64{}
		for range hs {
			for k, v := range figs[i] {
				sum[k] += v
				total[k] += v
			}
			i++
		}
		f := figures(sum)
		f.UniqueViewers = uniques[1+bi]
		start := starts[bi]
		f.Start = &start
		out.Series = append(out.Series, f)
	}
	out.Totals = figures(total)
	out.Totals.UniqueViewers = uniques[0]
	for _, d := range breakdownDims {
		out.Breakdown[d] = breakdown(total, d)
	}
	if scope == routing.ScopeAll {
		top, err := a.store.TopItems(ctx, hours, topItems)
		if err != nil {
			a.fail(c, err, "")
			return
		}
		items := make([]analyticsItemJSON, 0, len(top))
		for _, t := range top {
			k, id, _ := strings.Cut(t.Scope, ":")
			items = append(items, analyticsItemJSON{ID: id, Kind: k, Views: t.Views, WatchSeconds: seconds(t.WatchMs)})
		}
		out.Items = &items
	}
	c.JSON(http.StatusOK, out)
}

func seconds(ms int64) float64 { return float64(ms) / 1000 }

func figures(f map[string]int64) figuresJSON {
	return figuresJSON{
		Views:           f["views"],
		WatchSeconds:    seconds(f["watch_ms"]),
		StartupMs:       percentilesJSON{P50: startupQuantile(f, 0.5), P95: startupQuantile(f, 0.95)},
		RebufferRatio:   percentilesJSON{P50: ratioQuantile(f, 0.5), P95: ratioQuantile(f, 0.95)},
		Rebuffers:       f["rebuffers"],
		RebufferSeconds: seconds(f["rebuffer_ms"]),
		Errors:          f["errors"],
		Switches:        f["switches"],
		Verified:        f["verified"],
		Failed:          f["failed"],
	}
}

// breakdown lists dim's values by views, then watch time, then value.
func breakdown(f map[string]int64, dim string) []breakdownRowJSON {
	rows := map[string]*breakdownRowJSON{}
	prefix := "x:" + dim + ":"
	for k, v := range f {
		rest, ok := strings.CutPrefix(k, prefix)
		if !ok {
			continue
		}
		value, what, ok := cutLast(rest, ":")
		if !ok {
			continue
		}
		r := rows[value]
		if r == nil {
			r = &breakdownRowJSON{Value: value}
			rows[value] = r
		}
		switch what {
		case "v":
			r.Views += v
		case "w":
			r.WatchSeconds += seconds(v)
		}
	}
	out := make([]breakdownRowJSON, 0, len(rows))
	for _, r := range rows {
		out = append(out, *r)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Views != out[j].Views {
			return out[i].Views > out[j].Views
		}
		if out[i].WatchSeconds != out[j].WatchSeconds {
			return out[i].WatchSeconds > out[j].WatchSeconds
		}
		return out[i].Value < out[j].Value
	})
	return out
}

func cutLast(s, sep string) (string, string, bool) {
	i := strings.LastIndex(s, sep)
	if i < 0 {
		return "", "", false
	}
	return s[:i], s[i+len(sep):], true
}
