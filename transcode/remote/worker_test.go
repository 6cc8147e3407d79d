package remote

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// BuildManifest lists only what a worker may send: paths of a VOD tree
// naming regular files. A symbolic link (to the worker's key, say), a
// file of another name, another directory or a special file fails the job
// instead of being hashed and uploaded.
func TestBuildManifestRefusesWhatItMayNotSend(t *testing.T) {
	t.Parallel()
	secret := filepath.Join(t.TempDir(), "node.key")
	if err := os.WriteFile(secret, []byte("private"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := routing.JobOutcome{Duration: 4 * time.Second}
	honest := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "vid")
		for _, p := range []string{"master.m3u8", "poster.jpg", "storyboard.vtt", "storyboard-0.jpg", "360p/index.m3u8",
			"360p/init-a-0-0.mp4", "360p/a-0-0.m4s", "audio/index.m3u8", "audio/a-0-0.m4s"} {
			f := filepath.Join(dir, filepath.FromSlash(p))
			if err := os.MkdirAll(filepath.Dir(f), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(f, []byte(p), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	m, err := BuildManifest(honest(t), "vid.1.1-0", out)
	if err != nil || len(m.Files) != 9 || !slices.ContainsFunc(m.Files, func(f nodeproto.OutputFile) bool { return f.Path == "360p/a-0-0.m4s" }) {
		t.Fatalf("the honest tree: %+v %v", m.Files, err)
	}
	for _, tc := range []struct {
		name, want string
		change     func(dir string) error
	}{
		{"a link to a file out of the tree", "not a regular file", func(dir string) error {
			return os.Symlink(secret, filepath.Join(dir, "poster-link.jpg"))
		}},
		{"a link under an output name", "not a regular file", func(dir string) error {
			if err := os.Remove(filepath.Join(dir, "poster.jpg")); err != nil {
				return err
			}
			return os.Symlink(secret, filepath.Join(dir, "poster.jpg"))
		}},
		{"a link to a directory", "not a regular file", func(dir string) error {
			return os.Symlink(filepath.Dir(secret), filepath.Join(dir, "480p"))
		}},
		{"a file of another name", "not a file of a VOD output", func(dir string) error {
			return os.WriteFile(filepath.Join(dir, "node.key"), []byte("x"), 0o600)
		}},
		{"another directory", "not a rendition's", func(dir string) error {
			return os.MkdirAll(filepath.Join(dir, "360p", "sub"), 0o755)
		}},
		{"a named pipe", "not a regular file", func(dir string) error {
			return syscall.Mkfifo(filepath.Join(dir, "360p", "b-0-1.m4s"), 0o644)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := honest(t)
			if err := tc.change(dir); err != nil {
				t.Fatal(err)
			}
			m, err := BuildManifest(dir, "vid.1.1-0", out)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("BuildManifest = %+v, %v; want an error saying %q", m.Files, err, tc.want)
			}
		})
	}
	// The tree itself a link (the video's directory named after a bad id).
	link := filepath.Join(t.TempDir(), "vid")
	if err := os.Symlink(filepath.Dir(secret), link); err != nil {
		t.Fatal(err)
	}
	if m, err := BuildManifest(link, "vid.1.1-0", out); err == nil {
		t.Fatalf("a linked tree: %+v", m.Files)
	}
}
