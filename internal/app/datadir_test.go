package app

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/shoal-video/shoal/internal/testutil"
)

// TestDataDirLock: a second process on a data dir in use refuses to start
// and names the first one's pid; once the first is gone, the dir is free.
func TestDataDirLock(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	stderr := &testutil.Buffer{}
	code := Main(context.Background(), []string{"origin"}, []string{
		"SHOAL_REDIS_URL=" + n.redis.URL,
		"SHOAL_DATA_DIR=" + n.dataDir,
		fmt.Sprintf("SHOAL_HTTP_ADDR=127.0.0.1:%d", freePort(t)),
		fmt.Sprintf("SHOAL_RTMP_ADDR=127.0.0.1:%d", freePort(t)),
		"SHOAL_RTSP_ADDR=off", "SHOAL_SRT_ADDR=off", "SHOAL_INGEST_WHIP_UDP_PORT=0",
		"SHOAL_ADMIN_KEY=" + testAdminKey,
	}, &testutil.Buffer{}, stderr)
	if code != 1 || !strings.Contains(stderr.String(), "in use by process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("a second origin on the same data dir: exit %d\n%s", code, stderr.String())
	}
	dir := t.TempDir()
	release, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDataDir(dir); err == nil {
		t.Fatal("a locked data dir was locked again")
	}
	release()
	again, err := lockDataDir(dir)
	if err != nil {
		t.Fatalf("a released data dir: %v", err)
	}
	again()
}

// TestMetricsToken: with SHOAL_METRICS_TOKEN set, /metrics answers only a
// request that bears the token.
func TestMetricsToken(t *testing.T) {
	t.Parallel()
	const token = "metrics-token-0123456789"
	n := startNode(t, "SHOAL_METRICS_TOKEN="+token)
	if code, _ := n.get("/metrics", ""); code != http.StatusUnauthorized {
		t.Errorf("/metrics without the token: %d, want 401", code)
	}
	if code, _ := n.get("/metrics", "wrong-token-0123456789"); code != http.StatusUnauthorized {
		t.Errorf("/metrics with a wrong token: %d, want 401", code)
	}
	code, body := n.get("/metrics", token)
	if code != http.StatusOK || !strings.Contains(string(body), "shoal_http_requests_total") {
		t.Errorf("/metrics with the token: %d", code)
	}
	if strings.Contains(n.stderr.String(), token) {
		t.Error("the metrics token is in the log")
	}
}
