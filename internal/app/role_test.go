package app

import (
	"bytes"
	"context"
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
