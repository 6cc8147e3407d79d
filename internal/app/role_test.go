package app

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// An edge started without its settings says everything it lacks at once,
// and exits 2 like any configuration problem.
func TestEdgeConfigErrorsAllAtOnce(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	env := []string{"SHOAL_DATA_DIR=" + t.TempDir(), "SHOAL_LOG_LEVEL=bogus"}
	code := Main(context.Background(), []string{"edge"}, env, &stdout, &stderr)
	if code != 2 {
		t.Fatalf("exit %d, want 2; stderr:\n%s", code, stderr.String())
	}
	for _, want := range []string{"SHOAL_LOG_LEVEL", "origin_url (SHOAL_ORIGIN_URL) is required", "node_token (SHOAL_NODE_TOKEN) is required"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr lacks %q:\n%s", want, stderr.String())
		}
	}
	// A valid configuration gets the role's problems alone.
	stderr.Reset()
	if code := Main(context.Background(), []string{"edge"}, []string{"SHOAL_DATA_DIR=" + t.TempDir(), "SHOAL_ORIGIN_URL=http://origin.example:8080"}, &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "node_token") || strings.Contains(stderr.String(), "origin_url (") {
		t.Fatalf("exit %d:\n%s", code, stderr.String())
	}
}

// Files of a deleted video (left behind, or still being removed) are not
// served: 404, never "public".
func TestDeletedIDIsNotServed(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	code, body := n.do(http.MethodPost, "/v1/videos", testAdminKey, map[string]string{"title": "gone"})
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	var v struct{ ID string }
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatal(err)
	}
	if code, body := n.do(http.MethodDelete, "/v1/videos/"+v.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, body)
	}
	dir := filepath.Join(n.dataDir, "hls", v.ID)
	if err := os.MkdirAll(filepath.Join(dir, "source"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "master.m3u8"), []byte("#EXTM3U\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "source", "s-0-0.m4s"), []byte("bytes"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{"/hls/" + v.ID + "/master.m3u8", "/hls/" + v.ID + "/source/s-0-0.m4s"} {
		if code, body := n.get(p, ""); code != http.StatusNotFound {
			t.Errorf("%s: %d %q, want 404", p, code, body)
		}
	}
}
