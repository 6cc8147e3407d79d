package app

import (
	"fmt"
	"io/fs"
	"net/http"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/s3store"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// s3Env is the environment of a node keeping media in bucket on srv.
func s3Env(srv *s3test.Server, bucket string) []string {
	return []string{"SHOAL_STORAGE_BACKEND=s3", "SHOAL_STORAGE_ENDPOINT=" + srv.Endpoint, "SHOAL_STORAGE_BUCKET=" + bucket,
		"SHOAL_STORAGE_PATH_STYLE=true"}
}

// bucketKeys lists the keys under prefix in bucket on srv.
func bucketKeys(t *testing.T, srv *s3test.Server, bucket, prefix string) []string {
	t.Helper()
	s, err := s3store.New(s3store.Config{Endpoint: srv.Endpoint, Bucket: bucket, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for info, err := range s.List(t.Context(), prefix, storage.ListOptions{}) {
		if err != nil {
			t.Fatalf("listing %s: %v", prefix, err)
		}
		keys = append(keys, info.Key)
	}
	return keys
}

// mediaFiles are the media files (sources, segments, playlists, images)
// under dir.
func mediaFiles(t *testing.T, dir string) []string {
	t.Helper()
	var found []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		switch name := d.Name(); {
		case name == "source", strings.HasSuffix(name, ".part"), slices.Contains([]string{".m4s", ".ts", ".mp4", ".m3u8", ".jpg", ".vtt"}, filepath.Ext(name)):
			found = append(found, p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return found
}

// Two origins share only Redis and an S3 bucket: a video uploaded through
// A, which runs no worker, is transcoded by B's worker from the bucket,
// published there, and played in full from either origin; neither keeps a
// media file in its data dir.
func TestVODOnS3AtAnyOrigin(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	rs := redistest.Start(t)
	const bucket = "shoal-media"
	a := startNodeOn(t, rs, append(s3Env(srv, bucket), "SHOAL_VOD_WORKERS=0")...)
	b := startNodeOn(t, rs, s3Env(srv, bucket)...)

	// Both sign with the same keys: what one signs, the other's edges and
	// players accept.
	_, keysA := a.get("/v1/keys", "")
	_, keysB := b.get("/v1/keys", "")
	if string(keysA) != string(keysB) || !strings.Contains(string(keysA), "content") {
		t.Fatalf("the origins publish different keys:\nA: %s\nB: %s", keysA, keysB)
	}
	src := testutil.MakeMP4(t, 640, 360, 6)
	v := a.createVideo("on s3")
	start := time.Now()
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, src); code != http.StatusAccepted {
		t.Fatalf("PUT source at A: %d %s", code, body)
	}
	if keys := bucketKeys(t, srv, bucket, "videos/"+v.ID+"/"); !slices.Equal(keys, []string{"videos/" + v.ID + "/source"}) {
		t.Fatalf("the bucket holds %q for the source", keys)
	}
	v = b.waitVideo(v.ID, 90*time.Second)
	t.Logf("6 s 360p clip on S3: upload at A to ready (worker at B) in %s", time.Since(start).Round(time.Millisecond))
	if v.Status != "ready" || v.Attempts != 1 {
		t.Fatalf("video (want ready at the first attempt): %+v", v)
	}
	keys := bucketKeys(t, srv, bucket, "hls/"+v.ID+"/")
	for _, want := range []string{"master.m3u8", "360p/index.m3u8", "poster.jpg", "storyboard.vtt"} {
		if !slices.Contains(keys, "hls/"+v.ID+"/"+want) {
			t.Errorf("the bucket lacks hls/%s/%s: %q", v.ID, want, keys)
		}
	}
	for _, n := range []*node{a, b} {
		url := n.http + "/hls/" + v.ID + "/master.m3u8"
		if d := probeDuration(t, url); d < 5.5 || d > 6.5 {
			t.Errorf("ffprobe of %s measures %.3f s, want 6 ± 0.5", url, d)
		}
		if code, poster := n.get("/hls/"+v.ID+"/poster.jpg", ""); code != 200 || len(poster) < 100 {
			t.Errorf("poster at %s: %d, %d bytes", n.http, code, len(poster))
		}
	}
	for _, n := range []*node{a, b} {
		if files := mediaFiles(t, n.dataDir); len(files) != 0 {
			t.Errorf("media files left in a data dir: %q", files)
		}
	}

	// Deleting the video at A removes its objects from the bucket.
	if code, body := a.do(http.MethodDelete, "/v1/videos/"+v.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	if keys := bucketKeys(t, srv, bucket, ""); len(keys) != 0 {
		t.Fatalf("the bucket still holds %q after the delete", keys)
	}
	if code, _ := b.get("/hls/"+v.ID+"/master.m3u8", ""); code != http.StatusNotFound {
		t.Fatalf("the deleted video's playlist at B: %d", code)
	}
}

// metricValue is the value of the first sample of name in n's /metrics.
func (n *node) metricValue(name string) float64 {
	n.t.Helper()
	_, body := n.get("/metrics", "")
	for _, line := range strings.Split(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name+" "); ok {
			v, err := strconv.ParseFloat(strings.TrimSpace(rest), 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}

// countSegments counts the segments a media playlist lists.
func countSegments(pl string) int { return strings.Count(pl, "#EXTINF:") }

// A live stream on S3 while the S3 server is down for 20 s: its segments
// wait in the origin's spool and go up when S3 is back, and the recording,
// whole, plays from another origin once the stream has ended; the spool
// is empty then.
func TestLiveOnS3SurvivesAnOutage(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	rs := redistest.Start(t)
	const bucket = "shoal-live"
	a := startNodeOn(t, rs, s3Env(srv, bucket)...)
	b := startNodeOn(t, rs, append(s3Env(srv, bucket), "SHOAL_VOD_WORKERS=0")...)
	ls := a.createStream("live on s3")
	file := clip(t, 36)
	pub := publish(t, file, ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	a.waitFor("a segment in the bucket", 20*time.Second, func() bool {
		for _, k := range bucketKeys(t, srv, bucket, "hls/"+ls.ID+"/source/") {
			if strings.HasSuffix(k, ".m4s") {
				return true
			}
		}
		return false
	})
	srv.Stop()
	stopped := countSegments(a.playlist(ls.ID, "source/recording.m3u8"))
	a.waitFor("20 s of stream with S3 down", 40*time.Second, func() bool {
		return countSegments(a.playlist(ls.ID, "source/recording.m3u8")) >= stopped+10
	})
	if v := a.metricValue("shoal_storage_spool_objects"); v < 10 {
		t.Errorf("shoal_storage_spool_objects = %v with S3 down for 20 s, want at least 10", v)
	}
	srv.Restart(t)
	if err := pub.Wait(); err != nil {
		t.Fatalf("ffmpeg publish: %v", err)
	}
	a.waitFor("ENDLIST", 20*time.Second, func() bool { return a.ended(ls.ID, "index.m3u8") })
	a.waitFor("the spool to empty", 60*time.Second, func() bool {
		return a.metricValue("shoal_storage_spool_objects") == 0 && len(mediaFiles(t, a.dataDir)) == 0
	})
	if !strings.Contains(a.stderr.String(), "the media store is back") {
		t.Errorf("no log line says the spool was flushed")
	}
	// Every segment the recording lists is in the bucket, and the whole
	// recording plays from B.
	rec := b.playlist(ls.ID, "source/recording.m3u8")
	if !strings.Contains(rec, "#EXT-X-ENDLIST") || strings.Contains(rec, "#EXT-X-GAP") {
		t.Fatalf("the recording at B:\n%s", rec)
	}
	keys := bucketKeys(t, srv, bucket, "hls/"+ls.ID+"/")
	for _, line := range strings.Split(rec, "\n") {
		if strings.HasSuffix(line, ".m4s") && !slices.Contains(keys, "hls/"+ls.ID+"/source/"+line) {
			t.Errorf("segment %s is not in the bucket", line)
		}
	}
	if d := probeDuration(t, b.http+"/hls/"+ls.ID+"/master.m3u8"); d < 34 || d > 38 {
		t.Fatalf("the recording at B lasts %.3f s, want 36 ± 2", d)
	}
}

// A live stream belongs to the origin that ingests it: the other origin
// says it is live, serves its HLS (from the owner), and refuses a second
// publish of the same key with the owner's URL; once it ends, either origin
// serves the recording from the bucket and says it is idle.
func TestLiveStreamOwnedByOneOrigin(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	rs := redistest.Start(t)
	const bucket = "shoal-owned"
	a := startNodeOn(t, rs, s3Env(srv, bucket)...)
	b := startNodeOn(t, rs, append(s3Env(srv, bucket), "SHOAL_VOD_WORKERS=0")...)
	ls := a.createStream("owned")
	pub := publish(t, clip(t, 12), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	a.waitFor("the master playlist at A", 15*time.Second, func() bool {
		code, _ := a.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == 200
	})
	if s := b.status(ls.ID); s != "live" {
		t.Fatalf("status at B while A ingests = %q, want live", s)
	}
	if got := probeVideo(t, b.http+"/hls/"+ls.ID+"/master.m3u8"); got != "h264,640,360" {
		t.Fatalf("live HLS through B = %q", got)
	}
	// The same key at B is refused, saying where the stream is live.
	second := exec.Command("ffmpeg", "-v", "error", "-re", "-i", clip(t, 12), "-c", "copy", "-f", "flv",
		strings.Replace(ls.Ingest.RTMPURL, a.rtmp, b.rtmp, 1)+"/"+ls.StreamKey)
	out, err := second.CombinedOutput()
	if err == nil {
		t.Fatalf("a second publish at B succeeded:\n%s", out)
	}
	b.waitFor("B's refusal in its log", 5*time.Second, func() bool {
		return strings.Contains(b.stderr.String(), "reason=live_elsewhere")
	})
	if !strings.Contains(string(out), "live at another origin ("+a.http+")") {
		t.Errorf("ffmpeg at B was not told where the stream is live:\n%s", out)
	}
	if err := pub.Wait(); err != nil {
		t.Fatalf("ffmpeg publish at A: %v", err)
	}
	a.waitFor("ENDLIST", 20*time.Second, func() bool { return a.ended(ls.ID, "index.m3u8") })
	b.waitFor("status idle at B", 20*time.Second, func() bool { return b.status(ls.ID) == "idle" })
	a.waitFor("A's spool to empty", 30*time.Second, func() bool { return len(mediaFiles(t, a.dataDir)) == 0 })
	if d := probeDuration(t, b.http+"/hls/"+ls.ID+"/master.m3u8"); d < 11 || d > 13 {
		t.Fatalf("the recording at B lasts %.3f s, want 12 ± 1", d)
	}
	// Deleting the stream at B removes its recording from the bucket.
	if code, body := b.do(http.MethodDelete, "/v1/live-streams/"+ls.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE at B: %d %s", code, body)
	}
	b.waitFor("the recording to leave the bucket", 20*time.Second, func() bool {
		return len(bucketKeys(t, srv, bucket, "hls/"+ls.ID+"/")) == 0
	})
}

// The origin ingesting a live stream dies (kill -9): once its lease has
// run out, the creator's reconnect to another origin is accepted, and that
// origin continues the broadcast's recording from the bucket: the recording
// has both parts, with a discontinuity between them.
func TestLiveTakeOverAfterTheOwnerDies(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	rs := redistest.Start(t)
	const bucket = "shoal-takeover"
	b := startNodeOn(t, rs, append(s3Env(srv, bucket), "SHOAL_VOD_WORKERS=0")...)
	httpA, rtmpA := freePort(t), freePort(t)
	urlA := fmt.Sprintf("http://127.0.0.1:%d", httpA)
	a := startProc(t, "origin", append(s3Env(srv, bucket),
		"SHOAL_REDIS_URL="+rs.URL, "SHOAL_DATA_DIR="+t.TempDir(), "SHOAL_ADMIN_KEY="+testAdminKey,
		fmt.Sprintf("SHOAL_HTTP_ADDR=127.0.0.1:%d", httpA), "SHOAL_PUBLIC_URL="+urlA,
		fmt.Sprintf("SHOAL_RTMP_ADDR=127.0.0.1:%d", rtmpA), "SHOAL_RTSP_ADDR=off", "SHOAL_SRT_ADDR=off",
		"SHOAL_TRANSCODE_MAX_LADDERS=0", "SHOAL_INGEST_WHIP_UDP_PORT=0", "SHOAL_P2P_STUN_SERVERS=off")...)
	b.waitFor("origin A", 20*time.Second, func() bool {
		resp, err := http.Get(urlA + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	ls := b.createStream("taken over")
	pubA := publish(t, clip(t, 60), fmt.Sprintf("rtmp://127.0.0.1:%d/live/%s", rtmpA, ls.StreamKey))
	recKey := "hls/" + ls.ID + "/source/recording.m3u8"
	var partA string
	b.waitFor("3 segments of A's recording in the bucket", 30*time.Second, func() bool {
		s3, err := s3store.New(s3store.Config{Endpoint: srv.Endpoint, Bucket: bucket, PathStyle: true})
		if err != nil {
			t.Fatal(err)
		}
		rec, _, err := storage.ReadAll(t.Context(), s3, recKey)
		partA = string(rec)
		return err == nil && countSegments(partA) >= 3
	})
	if err := a.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = a.cmd.Wait()
	_ = pubA.Wait() // the connection is gone
	// The creator reconnects to B until B takes the stream (A's lease
	// runs out within 10 s).
	var pubB *exec.Cmd
	refusals := 0
	b.waitFor("B to take the stream over", 30*time.Second, func() bool {
		cmd := exec.Command("ffmpeg", "-v", "error", "-re", "-i", clip(t, 8), "-c", "copy", "-f", "flv", b.rtmp+"/"+ls.StreamKey)
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				refusals++
				return false
			case <-tick.C:
				if strings.Contains(b.stderr.String(), "taking over a broadcast") {
					pubB = cmd
					go func() { <-done }()
					return true
				}
			}
		}
	})
	t.Logf("B refused %d reconnects while A's lease lived", refusals)
	b.waitFor("ENDLIST at B", 40*time.Second, func() bool { return b.ended(ls.ID, "index.m3u8") })
	_ = pubB
	rec := b.playlist(ls.ID, "source/recording.m3u8")
	before, after, ok := strings.Cut(rec, "#EXT-X-DISCONTINUITY\n")
	if !ok || countSegments(before) < 3 || countSegments(after) < 3 || !strings.HasSuffix(rec, "#EXT-X-ENDLIST\n") {
		t.Fatalf("the recording at B does not hold both parts:\n%s", rec)
	}
	if !strings.HasPrefix(rec, partA[:strings.Index(partA, "#EXTINF")]) && !strings.Contains(rec, partA[strings.Index(partA, "#EXT-X-MAP"):]) {
		t.Fatalf("the recording at B does not start with A's:\nA:\n%s\nB:\n%s", partA, rec)
	}
	want := sumDurations(before) + sumDurations(after)
	if d := probeDuration(t, b.http+"/hls/"+ls.ID+"/master.m3u8"); d < want-1 || d > want+1 {
		t.Fatalf("the recording plays for %.3f s, want %.3f (A's part and B's)", d, want)
	}
}

// sumDurations adds up the EXTINF durations of playlist lines.
func sumDurations(pl string) float64 {
	total := 0.0
	for _, line := range strings.Split(pl, "\n") {
		if d, ok := strings.CutPrefix(line, "#EXTINF:"); ok {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(d, ","), 64)
			total += v
		}
	}
	return total
}

// shoal gc lists the objects of ids Redis does not know, removes them with
// --delete, never a video's, and refuses when most of the store looks
// orphaned.
func TestGCRemovesOrphans(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	rs := redistest.Start(t)
	const bucket = "shoal-gc"
	a := startNodeOn(t, rs, s3Env(srv, bucket)...)
	v := a.createVideo("kept")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, testutil.MakeMP4(t, 320, 240, 2)); code != http.StatusAccepted {
		t.Fatalf("PUT source: %d %s", code, body)
	}
	a.waitVideo(v.ID, 60*time.Second)
	s3, err := s3store.New(s3store.Config{Endpoint: srv.Endpoint, Bucket: bucket, PathStyle: true})
	if err != nil {
		t.Fatal(err)
	}
	orphanID := ids.New()
	for _, k := range []string{"hls/" + orphanID + "/master.m3u8", "hls/" + orphanID + "/source/a.m4s", "videos/" + orphanID + "/source"} {
		if _, err := s3.Put(t.Context(), k, strings.NewReader("left behind"), 11); err != nil {
			t.Fatal(err)
		}
	}
	env := append(s3Env(srv, bucket), "SHOAL_REDIS_URL="+rs.URL, "SHOAL_DATA_DIR="+t.TempDir())
	gc := func(args ...string) (int, string, string) {
		var out, errOut testutil.Buffer
		code := Main(t.Context(), append([]string{"gc"}, args...), env, &out, &errOut)
		return code, out.String(), errOut.String()
	}
	code, out, errOut := gc()
	if code != 0 || !strings.Contains(out, "orphan hls/"+orphanID+"/\t2 objects\t22 bytes") ||
		!strings.Contains(out, "orphan videos/"+orphanID+"/\t1 objects") || !strings.Contains(out, "2 of 4 ids") ||
		strings.Contains(out, v.ID) {
		t.Fatalf("gc (dry run): %d\n%s\n%s", code, out, errOut)
	}
	if keys := bucketKeys(t, srv, bucket, "hls/"+orphanID+"/"); len(keys) != 2 {
		t.Fatalf("a dry run removed objects: %q", keys)
	}
	if code, out, errOut := gc("--delete"); code != 0 || !strings.Contains(out, "removed 2 of 2 orphaned ids") {
		t.Fatalf("gc --delete: %d\n%s\n%s", code, out, errOut)
	}
	if keys := bucketKeys(t, srv, bucket, ""); slices.ContainsFunc(keys, func(k string) bool { return strings.Contains(k, orphanID) }) ||
		!slices.Contains(keys, "hls/"+v.ID+"/master.m3u8") || !slices.Contains(keys, "videos/"+v.ID+"/source") {
		t.Fatalf("after gc --delete the bucket holds %q", keys)
	}
	// Most of the store orphaned: refused without --force.
	for range 3 {
		if _, err := s3.Put(t.Context(), "hls/"+ids.New()+"/master.m3u8", strings.NewReader("x"), 1); err != nil {
			t.Fatal(err)
		}
	}
	if code, _, errOut := gc("--delete"); code != 1 || !strings.Contains(errOut, "more than half the store looks orphaned") {
		t.Fatalf("gc --delete with most of the store orphaned: %d\n%s", code, errOut)
	}
	if code, out, _ := gc("--delete", "--force"); code != 0 || !strings.Contains(out, "removed 3 of 3") {
		t.Fatalf("gc --delete --force: %d\n%s", code, out)
	}
	if code, _, errOut := gc("extra"); code != 2 || !strings.Contains(errOut, "unexpected argument") {
		t.Fatalf("gc with an argument: %d %s", code, errOut)
	}
}
