package app

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// listedNode is an entry of GET /v1/nodes as an origin or worker has it.
type listedNode struct {
	ID            string                 `json:"id"`
	Role          string                 `json:"role"`
	State         string                 `json:"state"`
	Region        string                 `json:"region"`
	PublicURL     string                 `json:"public_url"`
	JoinedAt      time.Time              `json:"joined_at"`
	LastHeartbeat time.Time              `json:"last_heartbeat"`
	Transcode     *nodeproto.Transcoding `json:"transcode"`
}

// listed is GET /v1/nodes on n, by id.
func (n *node) listed() map[string]listedNode {
	n.t.Helper()
	code, b := n.get("/v1/nodes", testAdminKey)
	if code != http.StatusOK {
		n.t.Fatalf("GET /v1/nodes: %d %s", code, b)
	}
	var out struct {
		Data []listedNode `json:"data"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		n.t.Fatalf("GET /v1/nodes: %v: %s", err, b)
	}
	m := map[string]listedNode{}
	for _, d := range out.Data {
		m[d.ID] = d
	}
	return m
}

// Two origins and a `shoal worker` on one Redis are listed in GET /v1/nodes
// after the joined nodes: the origin with a live transcoder with what it
// transcodes with, the origin that does not transcode without, the worker
// with its VOD concurrency. They are never routed to. A worker and an
// origin that stop cleanly leave the list at once (not when their
// announcement expires), and the list of origins edges learn is as
// before.
func TestOriginsAndWorkersInNodes(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	a := startNodeOn(t, rs, "SHOAL_TRANSCODE_MAX_LADDERS=2", "SHOAL_TRANSCODE_HWACCEL=none", "SHOAL_REGION=EU-West")
	b := startNodeOn(t, rs, "SHOAL_VOD_WORKERS=0")
	w := startWorker(t, a, "SHOAL_VOD_WORKERS=3", "SHOAL_REGION=eu-west")
	aID, bID := originNodeID(a.http), originNodeID(b.http)
	pid := strconv.Itoa(w.cmd.Process.Pid)

	var worker listedNode
	a.waitFor("both origins and the worker in /v1/nodes", 20*time.Second, func() bool {
		l := a.listed()
		for _, n := range l {
			if n.Role == "worker" {
				worker = n
			}
		}
		return len(l) == 3 && l[aID].ID != "" && l[bID].ID != "" && worker.ID != ""
	})
	l := a.listed()
	o := l[aID]
	if o.Role != "origin" || o.State != "active" || o.Region != "eu-west" || o.PublicURL != a.http ||
		o.JoinedAt.IsZero() || o.LastHeartbeat.Before(o.JoinedAt) {
		t.Errorf("origin A: %+v", o)
	}
	if tc := o.Transcode; tc == nil || tc.Encoder != "software" || tc.Decode != "cpu" || tc.Ladders != 2 ||
		tc.LaddersFrom != "configured" || tc.GPUs == nil || len(tc.GPUs) != 0 || tc.Summary == "" {
		t.Errorf("origin A's transcode: %+v", o.Transcode)
	}
	if o := l[bID]; o.Role != "origin" || o.PublicURL != b.http || o.Region != "" || o.Transcode != nil {
		t.Errorf("origin B (no live ladder, no VOD worker): %+v", o)
	}
	if !strings.HasPrefix(worker.ID, "worker-") || !strings.Contains(worker.ID, "-"+pid+"-") || worker.State != "active" ||
		worker.Region != "eu-west" || worker.PublicURL != "" {
		t.Errorf("worker (pid %s): %+v", pid, worker)
	}
	if tc := worker.Transcode; tc == nil || tc.Encoder != "software" || tc.Decode != "cpu" || tc.Ladders != 3 || tc.LaddersFrom != "configured" {
		t.Errorf("worker's transcode: %+v", worker.Transcode)
	}
	// B lists the same.
	if lb := b.listed(); len(lb) != 3 || lb[aID].Transcode == nil || lb[worker.ID].Role != "worker" {
		t.Errorf("GET /v1/nodes at B: %+v", lb)
	}
	// The origins edges learn are both, as before.
	store, err := routing.NewStore(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	origins, err := store.ListOrigins(t.Context())
	if want := []string{a.http, b.http}; err != nil || !slices.Equal(origins, slices.Sorted(slices.Values(want))) {
		t.Errorf("origins list %q (%v), want %q", origins, err, want)
	}

	// No viewer is sent to an origin or worker entry: with no edge, the
	// origin serves.
	ls := a.createStream("routed")
	code, body := a.get("/v1/route/"+ls.ID+"?region=eu-west", "")
	var rt struct {
		URL        string `json:"url"`
		NodeID     string `json:"node_id"`
		Candidates []struct {
			NodeID string `json:"node_id"`
		} `json:"candidates"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &rt) != nil || rt.NodeID != "" || len(rt.Candidates) != 1 ||
		rt.URL != a.http+"/hls/"+ls.ID+"/master.m3u8" {
		t.Errorf("route with only origins and a worker: %d %s", code, body)
	}

	// The worker stops cleanly: gone at once.
	if err := w.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := w.cmd.Wait(); err != nil {
		t.Fatalf("the worker's exit: %v\n%s", err, w.stderr.String())
	}
	if l := a.listed(); len(l) != 2 || l[worker.ID].ID != "" {
		t.Errorf("after the worker stopped: %+v", l)
	}
	// So does B.
	b.stop()
	code2 := <-b.done
	b.done <- code2 // for the cleanup
	if l := a.listed(); len(l) != 1 || l[aID].ID == "" {
		t.Errorf("after B stopped: %+v", l)
	}
	if origins, err := store.ListOrigins(t.Context()); err != nil || !slices.Equal(origins, []string{a.http}) {
		t.Errorf("origins list after B stopped: %q (%v)", origins, err)
	}
}

// A worker's node id is its consumer name made safe, with the pid and the
// random part kept.
func TestWorkerNodeID(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"gpu1-4242-abcd":                     "worker-gpu1-4242-abcd",
		"host.example.com-1-x2y3":            "worker-host.example.com-1-x2y3",
		"ho st/ü-7-abcd":                     "worker-ho-st----7-abcd", // ü is two bytes,
		strings.Repeat("h", 200) + "-9-abcd": "worker-" + strings.Repeat("h", 93) + "-9-abcd",
	} {
		if got := workerNodeID(in); got != want {
			t.Errorf("workerNodeID(%q) = %q, want %q", in, got, want)
		}
	}
	if id := originNodeID("http://origin.example.com:8080"); !strings.HasPrefix(id, "origin-") || len(id) != len("origin-")+16 ||
		id == originNodeID("http://origin2.example.com:8080") {
		t.Errorf("originNodeID: %q", id)
	}
}
