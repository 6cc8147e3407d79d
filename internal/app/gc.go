package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
)

// gcUsage is the help of `shoal gc`.
const gcUsage = `Usage: shoal gc [--delete] [--force] [--config FILE]

Lists the objects of the media store (SHOAL_STORAGE_*: the data dir, or the
S3 bucket) that belong to no video and no live stream Redis knows: what a
delete interrupted, or an origin that died, left behind. Without --delete
it only prints them. With --delete it removes them, unless they are more
than half of the ids in the store (a Redis that lost its data would make
everything look orphaned): --force removes them all the same.
`

// orphan is an id the media store holds objects of and Redis does not know.
type orphan struct {
	prefix  string // "hls/<id>/" or "videos/<id>/"
	objects int
	bytes   int64
}

// runGC runs `shoal gc`.
func runGC(ctx context.Context, args, environ []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("shoal gc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, gcUsage) }
	cfgPath := fs.String("config", lookup(environ, "SHOAL_CONFIG"), "YAML configuration file")
	del := fs.Bool("delete", false, "remove the orphaned objects (default: only list them)")
	force := fs.Bool("force", false, "with --delete: remove them even when they are most of the store")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "shoal gc: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	cfg, err := config.Load(*cfgPath, environ)
	if err != nil {
		fmt.Fprintf(stderr, "shoal gc: configuration:\n  %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return 2
	}
	log := newLogger(cfg, stderr)
	store, err := routing.NewStore(cfg.RedisURL)
	if err != nil {
		fmt.Fprintf(stderr, "shoal gc: %v\n", err)
		return 1
	}
	defer store.Close()
	if err := store.Ping(ctx); err != nil {
		fmt.Fprintf(stderr, "shoal gc: %v (gc needs Redis to tell orphans apart)\n", err)
		return 1
	}
	objects, err := openMediaStore(ctx, cfg, log)
	if err != nil {
		fmt.Fprintf(stderr, "shoal gc: media store: %v\n", err)
		return 1
	}
	orphans, total, err := findOrphans(ctx, objects, store)
	if err != nil {
		fmt.Fprintf(stderr, "shoal gc: %v\n", err)
		return 1
	}
	var objs int
	var size int64
	for _, o := range orphans {
		fmt.Fprintf(stdout, "orphan %s\t%d objects\t%d bytes\n", o.prefix, o.objects, o.bytes)
		objs += o.objects
		size += o.bytes
	}
	fmt.Fprintf(stdout, "%d of %d ids in %s are orphaned: %d objects, %d bytes\n", len(orphans), total, describeStore(cfg), objs, size)
	if !*del || len(orphans) == 0 {
		if len(orphans) > 0 {
			fmt.Fprintln(stdout, "nothing removed: run `shoal gc --delete` to remove them")
		}
		return 0
	}
	if 2*len(orphans) > total && !*force {
		fmt.Fprintf(stderr, "shoal gc: refusing to remove %d of %d ids: more than half the store looks orphaned (a Redis that lost its data?); check, then run with --force\n",
			len(orphans), total)
		return 1
	}
	failed := 0
	for _, o := range orphans {
		if err := objects.DeletePrefix(ctx, o.prefix); err != nil {
			fmt.Fprintf(stderr, "shoal gc: removing %s: %v\n", o.prefix, err)
			failed++
			continue
		}
		log.Info("removed orphaned objects", "prefix", o.prefix, "objects", o.objects)
	}
	fmt.Fprintf(stdout, "removed %d of %d orphaned ids\n", len(orphans)-failed, len(orphans))
	if failed > 0 {
		return 1
	}
	return 0
}

// findOrphans lists the ids under hls/ and videos/ of the media store and
// returns those that are neither a video nor a live stream (hls/) or not a
// video (videos/), with how many ids it saw. Uploads (uploads/) are left
// to the origins' upload recovery.
func findOrphans(ctx context.Context, objects storage.Store, store *routing.Store) ([]orphan, int, error) {
	seen := map[string]*orphan{}
	var order []string
	for _, dir := range []string{"hls/", "videos/"} {
		for info, err := range objects.List(ctx, dir, storage.ListOptions{}) {
			if err != nil {
				return nil, 0, fmt.Errorf("listing %s: %w", dir, err)
			}
			id, _, ok := strings.Cut(strings.TrimPrefix(info.Key, dir), "/")
			if !ok || !ids.Valid(id) {
				continue
			}
			prefix := dir + id + "/"
			o := seen[prefix]
			if o == nil {
				o = &orphan{prefix: prefix}
				seen[prefix] = o
				order = append(order, prefix)
			}
			o.objects++
			o.bytes += info.Size
		}
	}
	var out []orphan
	for _, prefix := range order {
		dir, rest, _ := strings.Cut(prefix, "/")
		id := strings.TrimSuffix(rest, "/")
		known, err := knownID(ctx, store, id, dir == "hls")
		if err != nil {
			return nil, 0, err
		}
		if !known {
			out = append(out, *seen[prefix])
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].prefix < out[j].prefix })
	return out, len(order), nil
}

// knownID tells whether id is a video (or, with streams, a live stream).
func knownID(ctx context.Context, store *routing.Store, id string, streams bool) (bool, error) {
	_, err := store.GetVideo(ctx, id)
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, routing.ErrNotFound) {
		return false, err
	}
	if !streams {
		return false, nil
	}
	_, err = store.GetLiveStream(ctx, id)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, routing.ErrNotFound) {
		return false, nil
	}
	return false, err
}
