package web

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
)

// TestPlayerUnit runs the player's JavaScript unit tests (src/**/*.test.mjs:
// the verifying loader's playlist, manifest and LL-HLS rules) with
// `node --test`. It skips where Node.js 18 or later is missing: the Go
// build never needs it (web/dist is committed).
func TestPlayerUnit(t *testing.T) {
	t.Parallel()
	node, err := exec.LookPath("node")
	if err != nil {
		t.Skip("node is not installed: skipping the player's JavaScript unit tests")
	}
	out, err := exec.CommandContext(t.Context(), node, "--version").Output()
	if err != nil {
		t.Fatalf("node --version: %v", err)
	}
	m := regexp.MustCompile(`^v([0-9]+)\.`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("node --version said %q", out)
	}
	if major, _ := strconv.Atoi(string(m[1])); major < 18 {
		t.Skipf("node %s is older than 18: skipping the player's JavaScript unit tests", out)
	}
	files, err := filepath.Glob("src/*/*.test.mjs")
	if err != nil || len(files) == 0 {
		t.Fatalf("no JavaScript tests under src/ (%v)", err)
	}
	cmd := exec.CommandContext(t.Context(), node, append([]string{"--test"}, files...)...)
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("node --test %v: %v\n%s", files, err, b)
	}
	if testing.Verbose() {
		t.Logf("%s", b)
	}
}
