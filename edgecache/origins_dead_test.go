package edgecache

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/originset"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/packager/origin"
)

// Three origins, the first two dead (their hosts are gone), the third
// up: every request must be served by the third. Each request is sent to
// at most two origins, so when both dead ones are preferred (at start, and
// again every originset.AvoidFor, when both avoidances run out together)
// the viewer gets a 502 although a working origin is listed.
func TestTwoDeadOriginsOfThree(t *testing.T) {
	t.Parallel()
	store, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	body := segment(4<<10, 7)
	for i := range 4 {
		if _, err := store.Put(context.Background(), fmt.Sprintf("abc/source/seg-%d.m4s", i), bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	h := origin.NewHandler(store)
	a, b, c := newGatedOrigin(t, h), newGatedOrigin(t, h), newGatedOrigin(t, h)
	clock := newFakeClock()
	e := startCache(t, a.srv.URL+", "+b.srv.URL+", "+c.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { d.Now = clock.Now })
	a.srv.Close()
	b.srv.Close()
	var failed []int
	for i := range 4 {
		got := get(t, e.url+fmt.Sprintf("/hls/abc/source/seg-%d.m4s", i))
		if got.code != http.StatusOK {
			failed = append(failed, i)
		}
		clock.Advance(originset.AvoidFor + time.Second)
	}
	if len(failed) > 0 {
		t.Fatalf("requests %v of 4 failed (502) while origin C was up", failed)
	}
}
