package fsstore

import (
	"os"
	"path/filepath"
	"testing"
)

// missingDirs names the directories a Put makes (to sync them into their
// parents), deepest first, and stops at the root.
func TestMissingDirs(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, err := New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "v1", "720p"), 0o755); err != nil {
		t.Fatal(err)
	}
	got := s.missingDirs(filepath.Join(root, "v2", "a", "b"))
	want := []string{filepath.Join(root, "v2", "a", "b"), filepath.Join(root, "v2", "a"), filepath.Join(root, "v2")}
	if len(got) != len(want) {
		t.Fatalf("missing dirs %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("missing dirs %q, want %q", got, want)
		}
	}
	if got := s.missingDirs(filepath.Join(root, "v1", "720p")); len(got) != 0 {
		t.Fatalf("existing dirs reported missing: %q", got)
	}
	if got := s.missingDirs(filepath.Join(root, "v1", "480p")); len(got) != 1 {
		t.Fatalf("one new dir under an existing one: %q", got)
	}
}
