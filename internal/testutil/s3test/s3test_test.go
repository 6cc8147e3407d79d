package s3test

import (
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Not parallel: these set environment variables. Start, Stop and Restart
// are exercised by internal/storage/s3store's tests.

func TestWeedPath(t *testing.T) {
	t.Setenv("SHOAL_WEED", "")
	t.Setenv("XDG_CACHE_HOME", "/var/cache/x")
	p, err := WeedPath()
	if want := "/var/cache/x/shoal/weed-" + WeedVersion + "/weed"; err != nil || p != want {
		t.Errorf("WeedPath() = %q, %v; want %q", p, err, want)
	}
	t.Setenv("SHOAL_WEED", "/opt/weed")
	if p, err := WeedPath(); err != nil || p != "/opt/weed" {
		t.Errorf("WeedPath() with SHOAL_WEED = %q, %v", p, err)
	}
}

// SHOAL_WEED naming nothing is an error, never a build.
func TestSHOALWEEDMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "weed")
	t.Setenv("SHOAL_WEED", missing)
	_, err := EnsureWeed(t.Context(), io.Discard)
	if err == nil || !strings.Contains(err.Error(), "SHOAL_WEED="+missing) {
		t.Fatalf("EnsureWeed = %v, want an error naming SHOAL_WEED", err)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("something was built at %s", missing)
	}
}
