package playerapi

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// redoclyVersion is the Redocly CLI the spec is linted with; install-deps
// installs it under the user's cache (it needs Node.js 20.19 or later).
const redoclyVersion = "2.77.0"

// redocly finds the Redocly CLI: $SHOAL_REDOCLY, or where install-deps puts
// it.
func redocly() string {
	if p := os.Getenv("SHOAL_REDOCLY"); p != "" {
		return p
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	p := filepath.Join(cache, "shoal", "redocly-"+redoclyVersion, "node_modules", ".bin", "redocly")
	if _, err := os.Stat(p); err != nil {
		return ""
	}
	return p
}

// The spec passes Redocly's recommended rules with no error and no warning
// (the exceptions by design are in .redocly.lint-ignore.yaml, with why).
func TestOpenAPILint(t *testing.T) {
	t.Parallel()
	bin := redocly()
	if bin == "" {
		t.Skip("Redocly CLI " + redoclyVersion + " is not installed (scripts/install-deps.sh installs it where Node.js 20.19+ is present; or set SHOAL_REDOCLY)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "lint", "--format=summary", "openapi.yaml").CombinedOutput()
	if err != nil {
		t.Fatalf("redocly lint: %v\n%s", err, out)
	}
	// Summary lines are "error <rule>: <n>" and "warning <rule>: <n>"
	// (a banner about Node.js versions is not a finding).
	if s := string(out); !strings.Contains(s, "Your API description is valid") || regexp.MustCompile(`(?m)^(error|warning) `).MatchString(s) {
		t.Fatalf("redocly lint is not clean:\n%s", out)
	}
}
