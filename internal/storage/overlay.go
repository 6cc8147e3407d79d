package storage

import (
	"context"
	"errors"
	"io"
	"iter"
)

// Overlay returns a store that reads from local first and from remote when
// local does not have the object: an origin's live output waits in a
// local spool until it is uploaded (package mirror) and is then read from
// the media store. Put writes to remote; Delete and DeletePrefix delete
// from both; List merges both, in key order, local's object first when
// both hold a key.
func Overlay(local, remote Store) Store { return &overlay{local: local, remote: remote} }

type overlay struct{ local, remote Store }

func (o *overlay) Put(ctx context.Context, key string, r io.Reader, size int64) (Info, error) {
	return o.remote.Put(ctx, key, r, size)
}

func (o *overlay) Get(ctx context.Context, key string, rng Range) (io.ReadCloser, Info, error) {
	rc, info, err := o.local.Get(ctx, key, rng)
	if errors.Is(err, ErrNotFound) {
		return o.remote.Get(ctx, key, rng)
	}
	return rc, info, err
}

func (o *overlay) Stat(ctx context.Context, key string) (Info, error) {
	info, err := o.local.Stat(ctx, key)
	if errors.Is(err, ErrNotFound) {
		return o.remote.Stat(ctx, key)
	}
	return info, err
}

func (o *overlay) List(ctx context.Context, prefix string, opts ListOptions) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		nextL, stopL := iter.Pull2(o.local.List(ctx, prefix, opts))
		defer stopL()
		nextR, stopR := iter.Pull2(o.remote.List(ctx, prefix, opts))
		defer stopR()
		l, lerr, lok := nextL()
		r, rerr, rok := nextR()
		for lok || rok {
			switch {
			case lok && lerr != nil:
				yield(Info{}, lerr)
				return
			case rok && rerr != nil:
				yield(Info{}, rerr)
				return
			case lok && (!rok || l.Key <= r.Key):
				if rok && l.Key == r.Key {
					r, rerr, rok = nextR()
				}
				if !yield(l, nil) {
					return
				}
				l, lerr, lok = nextL()
			default:
				if !yield(r, nil) {
					return
				}
				r, rerr, rok = nextR()
			}
		}
	}
}

func (o *overlay) Delete(ctx context.Context, key string) error {
	return errors.Join(o.local.Delete(ctx, key), o.remote.Delete(ctx, key))
}

func (o *overlay) DeletePrefix(ctx context.Context, prefix string) error {
	return errors.Join(o.local.DeletePrefix(ctx, prefix), o.remote.DeletePrefix(ctx, prefix))
}
