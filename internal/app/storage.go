package app

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/internal/storage/mirror"
	"github.com/shoal-video/shoal/internal/storage/s3store"
	"github.com/shoal-video/shoal/transcode/vod"
)

// openMediaStore opens the media store cfg names: the data dir itself
// (fs: sources under videos/, HLS under hls/, as before the storage layer
// existed), or an S3 bucket, created when missing. A bucket that cannot be
// reached at start is not fatal: ensuring it is retried in the background
// (every 5 s, logged) until ctx ends, and uploads and jobs fail and retry
// meanwhile.
func openMediaStore(ctx context.Context, cfg config.Config, log *slog.Logger) (storage.Store, error) {
	if cfg.Storage.Backend != config.StorageS3 {
		return fsstore.New(cfg.DataDir)
	}
	s, err := s3store.New(s3store.Config{Endpoint: cfg.Storage.Endpoint, Bucket: cfg.Storage.Bucket, Region: cfg.Storage.Region,
		AccessKey: cfg.Storage.AccessKey, SecretKey: cfg.Storage.SecretKey, PathStyle: cfg.Storage.PathStyle})
	if err != nil {
		return nil, err
	}
	if err := s.EnsureBucket(ctx); err != nil {
		log.Warn("the media store is not reachable yet; retrying in the background", "err", err)
		go every(ctx, 5*time.Second, func() bool {
			if err := s.EnsureBucket(ctx); err == nil {
				log.Info("the media store is reachable", "bucket", cfg.Storage.Bucket)
				return true
			} else if ctx.Err() == nil {
				log.Warn("the media store is still not reachable", "err", err)
			}
			return false
		})
	}
	return s, nil
}

// videoFiles is where this node keeps video sources and HLS trees (the
// media store), record copies and work files (the data dir).
func videoFiles(cfg config.Config, media storage.Store) vod.Files {
	return vod.Files{Store: media, RecordDir: filepath.Join(cfg.DataDir, "videos"), WorkDir: filepath.Join(cfg.DataDir, "work")}
}

// hlsStore is the part of the media store that holds HLS trees.
func hlsStore(media storage.Store) storage.Store { return vod.Files{Store: media}.HLS() }

// mirrorDrain is how long a stopping origin goes on uploading its live
// files; what is left is uploaded at the next start.
const mirrorDrain = 10 * time.Second

// liveOutput is where the origin reads HLS from, given that its packager
// writes into hlsDir: with fs, the media store's HLS trees are hlsDir
// itself; with s3, hlsDir is a spool that a mirror (returned) uploads to
// the bucket, and reads look there first, then in the bucket.
func liveOutput(cfg config.Config, hlsDir string, media storage.Store, log *slog.Logger, reg prometheus.Registerer) (storage.Store, *mirror.Mirror, error) {
	remote := hlsStore(media)
	if cfg.Storage.Backend != config.StorageS3 {
		return remote, nil, nil
	}
	local, err := fsstore.New(hlsDir)
	if err != nil {
		return nil, nil, err
	}
	m, err := mirror.New(mirror.Config{Dir: hlsDir}, mirror.Deps{Store: remote, Log: log, Registerer: reg})
	if err != nil {
		return nil, nil, err
	}
	if n, err := m.Scan(); err != nil {
		log.Warn("could not scan the spool for files an earlier run left", "err", err)
	} else if n > 0 {
		log.Info("uploading the live files an earlier run left in the spool", "files", n)
	}
	return storage.Overlay(local, remote), m, nil
}

// describeStore names the media store for the start-up log.
func describeStore(cfg config.Config) string {
	if cfg.Storage.Backend == config.StorageS3 {
		return fmt.Sprintf("s3 bucket %s at %s", cfg.Storage.Bucket, cfg.Storage.Endpoint)
	}
	return "fs under " + cfg.DataDir
}

// resumeFrom returns the packager's Config.Resume on the media store's HLS
// trees: the recordings of stream id that never ended (the origin that
// ingested it died; another origin takes it over), by playlist directory.
// A stream whose tree is still in this origin's spool (hlsDir) was this
// origin's own: nothing to take over. The directories are the master
// playlist's and the audio group's. A store that fails (or does not answer
// within 3 s) is an error: the packager then keeps the stored objects.
func resumeFrom(hlsDir string, remote storage.Store) func(id string) (map[string][]byte, error) {
	return func(id string) (map[string][]byte, error) {
		if _, err := os.Stat(filepath.Join(hlsDir, id)); err == nil {
			return nil, nil
		}
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		dirs, err := recordingDirs(ctx, remote, id)
		if err != nil {
			return nil, err
		}
		out := map[string][]byte{}
		for dir := range dirs {
			rec, _, err := storage.ReadAll(ctx, remote, id+"/"+dir+"/recording.m3u8")
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, err
			}
			if !bytes.Contains(rec, []byte("#EXT-X-ENDLIST")) {
				out[dir] = rec
			}
		}
		if len(out) == 0 {
			return nil, nil
		}
		return out, nil
	}
}

// maxResumeList bounds the objects resumeFrom lists for a broadcast that
// has no master playlist in the store.
const maxResumeList = 10_000

// recordingDirs are the playlist directories of stream id's tree in the
// store: the master playlist's and the audio group's, or, for a broadcast
// younger than its first master playlist, those a listing finds (few
// objects yet).
func recordingDirs(ctx context.Context, remote storage.Store, id string) (map[string]bool, error) {
	dirs := map[string]bool{}
	master, _, err := storage.ReadAll(ctx, remote, id+"/master.m3u8")
	switch {
	case errors.Is(err, storage.ErrNotFound):
		n := 0
		for info, err := range remote.List(ctx, id+"/", storage.ListOptions{}) {
			if err != nil {
				return nil, err
			}
			if n++; n > maxResumeList {
				break
			}
			if dir, ok := strings.CutSuffix(strings.TrimPrefix(info.Key, id+"/"), "/recording.m3u8"); ok && !strings.Contains(dir, "/") {
				dirs[dir] = true
			}
		}
		return dirs, nil
	case err != nil:
		return nil, err
	}
	dirs["audio"] = true
	for _, line := range strings.Split(string(master), "\n") {
		if dir, ok := strings.CutSuffix(strings.TrimSpace(line), "/index.m3u8"); ok && !strings.Contains(dir, "/") && !strings.HasPrefix(dir, "#") {
			dirs[dir] = true
		}
		if _, uri, ok := strings.Cut(line, `URI="`); ok {
			if dir, ok := strings.CutSuffix(strings.Split(uri, `"`)[0], "/index.m3u8"); ok && !strings.Contains(dir, "/") {
				dirs[dir] = true
			}
		}
	}
	return dirs, nil
}
