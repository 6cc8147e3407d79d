package app

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// Two origins, a worker and an edge on a three-master Redis Cluster
// (SHOAL_REDIS_URL=redis+cluster://...) and SeaweedFS, each with a data dir
// of its own: a tus upload started at A and resumed at B is transcoded by
// the worker and plays at A, B and the edge; a live stream published at B
// plays at A and through the edge. Shoal's keys are on the cluster, named
// with the {shoal} hash tag.
func TestTwoOriginsOnRedisCluster(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	c := redistest.StartCluster(t)
	rs := &redistest.Server{Addr: c.Nodes[0].Addr, URL: c.URL}
	const bucket = "shoal-cluster"
	a := startNodeOn(t, rs, append(s3Env(srv, bucket), "SHOAL_VOD_WORKERS=0")...)
	b := startNodeOn(t, rs, append(s3Env(srv, bucket), "SHOAL_VOD_WORKERS=0")...)
	worker := startProc(t, "worker", append(s3Env(srv, bucket), "SHOAL_REDIS_URL="+c.URL, "SHOAL_DATA_DIR="+t.TempDir(),
		fmt.Sprintf("SHOAL_HTTP_ADDR=127.0.0.1:%d", freePort(t)), "SHOAL_TRANSCODE_HWACCEL=none")...)

	// An edge joins A with a token made at A; both origins list it (the
	// registry is on the cluster; its heartbeats run a script there).
	edge := startEdge(t, a, a.nodeToken(), "eu")
	for _, n := range []*node{a, b} {
		n.waitFor("the edge in /v1/nodes", 20*time.Second, func() bool {
			ns := n.nodes()
			return len(ns) == 1 && ns[0].PublicURL == edge.url
		})
	}

	// Both origins and the worker announce themselves there: listed
	// after the edge.
	for _, n := range []*node{a, b} {
		n.waitFor("both origins and the worker in /v1/nodes", 20*time.Second, func() bool {
			all := n.allNodes()
			roles := make([]string, len(all))
			for i, ni := range all {
				roles[i] = ni.Role
			}
			return slices.Equal(roles, []string{"edge", "origin", "origin", "worker"})
		})
	}

	// A tus upload started at A and resumed at B is transcoded by the
	// worker.
	data, err := os.ReadFile(testutil.MakeMP4(t, 640, 360, 4))
	if err != nil {
		t.Fatal(err)
	}
	v := a.createVideo("on a cluster")
	tusAcrossOrigins(t, srv, bucket, a, b, v, data)
	v = b.waitVideo(v.ID, 90*time.Second)
	// The worker logs it after recording it (and saving the record's copy).
	b.waitFor("the worker's \"video ready\"", 10*time.Second, func() bool {
		return strings.Contains(worker.stderr.String(), "video ready")
	})
	if v.Status != "ready" || v.Attempts != 1 {
		t.Fatalf("video (want ready at the first attempt): %+v", v)
	}
	for _, url := range []string{a.http, b.http, edge.url} {
		if d := probeDuration(t, url+"/hls/"+v.ID+"/master.m3u8"); d < 3.5 || d > 4.5 {
			t.Errorf("ffprobe at %s measures %.3f s, want 4 ± 0.5", url, d)
		}
	}

	// A live stream made at A, published at B (its owner), plays at A and
	// through the edge.
	ls := a.createStream("on a cluster")
	if s := b.status(ls.ID); s != "idle" {
		t.Fatalf("status at B of a stream made at A = %q", s)
	}
	pub := publish(t, clip(t, 8), strings.Replace(ls.Ingest.RTMPURL, a.rtmp, b.rtmp, 1)+"/"+ls.StreamKey)
	b.waitFor("the master playlist at B", 15*time.Second, func() bool {
		code, _ := b.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == 200
	})
	if s := a.status(ls.ID); s != "live" {
		t.Fatalf("status at A while B ingests = %q, want live", s)
	}
	for _, url := range []string{a.http, edge.url} {
		if got := probeVideo(t, url+"/hls/"+ls.ID+"/master.m3u8"); got != "h264,640,360" {
			t.Fatalf("live HLS through %s = %q", url, got)
		}
	}
	if err := pub.Wait(); err != nil {
		t.Fatalf("ffmpeg publish at B: %v", err)
	}
	a.waitFor("status idle at A", 20*time.Second, func() bool { return a.status(ls.ID) == "idle" })

	// The records are on the cluster, under the hash tag.
	cl := redis.NewClusterClient(&redis.ClusterOptions{Addrs: []string{c.Nodes[0].Addr}})
	defer cl.Close()
	for _, k := range []string{"{shoal}:livestream:" + ls.ID, "{shoal}:video:" + v.ID, "{shoal}:jobs:vod",
		"{shoal}:announcednode:" + originNodeID(a.http), "{shoal}:announcednodes"} {
		if n, err := cl.Exists(t.Context(), k).Result(); err != nil || n != 1 {
			t.Errorf("EXISTS %s on the cluster = %d, %v", k, n, err)
		}
	}
	var (
		mu    sync.Mutex
		stray []string
	)
	err = cl.ForEachMaster(t.Context(), func(ctx context.Context, m *redis.Client) error {
		keys, err := m.Keys(ctx, "shoal:*").Result()
		mu.Lock()
		stray = append(stray, keys...)
		mu.Unlock()
		return err
	})
	if err != nil || len(stray) != 0 {
		t.Errorf("keys without the hash tag: %q, %v", stray, err)
	}
	// Nothing either origin did in Redis was refused by the cluster.
	for _, n := range []*node{a, b} {
		for _, line := range strings.Split(n.stderr.String(), "\n") {
			for _, refusal := range []string{"CROSSSLOT", "MOVED", "Script attempted", "CLUSTERDOWN"} {
				if strings.Contains(line, refusal) {
					t.Errorf("%s logged a cluster refusal: %s", n.http, line)
				}
			}
		}
	}
}
