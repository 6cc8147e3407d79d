package remote

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/vod"
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

// A failed job is followed by a wait before the next claim (the backoff),
// not by another claim at once: a worker failing every job fast would
// otherwise drain the queue into failures. The origin here hands out a job
// whose ladder the worker cannot use.
func TestWorkerBacksOffAfterAFailedJob(t *testing.T) {
	t.Parallel()
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var claims, failures atomic.Int64
	origin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == nodeproto.WorkerPrefix+"/claim":
			claims.Add(1)
			_ = json.NewEncoder(w).Encode(nodeproto.WorkerJob{Job: "vid.1.1-0", VideoID: "vid", Attempt: 1, Ladder: "not a ladder",
				SegmentDurationSeconds: 1, SourceBytes: 10, SourceURL: "/source", ProgressIntervalSeconds: 1})
		case strings.HasSuffix(r.URL.Path, "/fail"):
			failures.Add(1)
			_ = json.NewEncoder(w).Encode(nodeproto.Failed{Retry: true})
		default:
			w.WriteHeader(http.StatusNoContent)
		}
	}))
	defer origin.Close()
	w, err := NewWorker(WorkerConfig{WorkDir: t.TempDir(), Concurrency: 1, Backend: ffmpeg.BackendSoftware, MinBackoff: time.Hour},
		WorkerDeps{Client: &nodeproto.Client{OriginURL: origin.URL, Key: priv, Token: "nt_x"}, Log: slog.New(slog.DiscardHandler),
			NewPackager: func(dir string, hub *stream.Hub, segment time.Duration, log *slog.Logger) (vod.Packager, error) {
				return packager.New(packager.Config{Dir: dir, SegmentDuration: segment, LiveWindow: 3, Format: packager.FormatFMP4},
					packager.Deps{Log: log, Hub: hub})
			}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for failures.Load() == 0 {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("the job was not reported failed")
		}
	}
	// Without a backoff the next claims follow at once; with one (an hour
	// at least half of it here), none comes while this watches.
	watch := time.After(500 * time.Millisecond)
	for {
		select {
		case <-tick.C:
			if n := claims.Load(); n > 1 {
				t.Fatalf("%d claims after a failed job, want 1 until the backoff ends", n)
			}
			continue
		case <-watch:
		}
		break
	}
}
