package storage

import (
	"context"
	"io"
	"iter"
	"strings"
)

// Sub returns the part of s under dir: key k of the result is key dir+"/"+k
// of s, and the Infos it returns carry keys relative to dir. dir must be a
// valid key (it panics otherwise: a programming error).
func Sub(s Store, dir string) Store {
	if err := CheckKey(dir); err != nil {
		panic(err)
	}
	if sub, ok := s.(*subStore); ok {
		return &subStore{s: sub.s, dir: sub.dir + "/" + dir}
	}
	return &subStore{s: s, dir: dir}
}

// Unwrap returns the store under a Sub and its directory, or s and "".
func Unwrap(s Store) (Store, string) {
	if sub, ok := s.(*subStore); ok {
		return sub.s, sub.dir
	}
	return s, ""
}

type subStore struct {
	s   Store
	dir string
}

// full is the key in the parent store. Relative keys are checked first so
// that "" or "../x" never reach the parent as "dir/" or "dir/../x".
func (s *subStore) full(key string) (string, error) {
	if err := CheckKey(key); err != nil {
		return "", err
	}
	return s.dir + "/" + key, nil
}

func (s *subStore) rel(info Info) Info {
	info.Key = strings.TrimPrefix(info.Key, s.dir+"/")
	return info
}

func (s *subStore) Put(ctx context.Context, key string, r io.Reader, size int64) (Info, error) {
	k, err := s.full(key)
	if err != nil {
		return Info{}, err
	}
	info, err := s.s.Put(ctx, k, r, size)
	return s.rel(info), err
}

func (s *subStore) Get(ctx context.Context, key string, rng Range) (io.ReadCloser, Info, error) {
	k, err := s.full(key)
	if err != nil {
		return nil, Info{}, err
	}
	rc, info, err := s.s.Get(ctx, k, rng)
	return rc, s.rel(info), err
}

func (s *subStore) Stat(ctx context.Context, key string) (Info, error) {
	k, err := s.full(key)
	if err != nil {
		return Info{}, err
	}
	info, err := s.s.Stat(ctx, k)
	return s.rel(info), err
}

func (s *subStore) List(ctx context.Context, prefix string, opts ListOptions) iter.Seq2[Info, error] {
	return func(yield func(Info, error) bool) {
		if err := CheckPrefix(prefix); err != nil {
			yield(Info{}, err)
			return
		}
		if opts.StartAfter != "" {
			opts.StartAfter = s.dir + "/" + opts.StartAfter
		}
		for info, err := range s.s.List(ctx, s.dir+"/"+prefix, opts) {
			if !yield(s.rel(info), err) || err != nil {
				return
			}
		}
	}
}

func (s *subStore) Delete(ctx context.Context, key string) error {
	k, err := s.full(key)
	if err != nil {
		return err
	}
	return s.s.Delete(ctx, k)
}

func (s *subStore) DeletePrefix(ctx context.Context, prefix string) error {
	if err := CheckDirPrefix(prefix); err != nil {
		return err
	}
	return s.s.DeletePrefix(ctx, s.dir+"/"+prefix)
}

// Path returns the local file of key when the store under s keeps its
// objects as local files (see Local).
func (s *subStore) Path(key string) (string, bool) {
	l, ok := s.s.(Local)
	if !ok {
		return "", false
	}
	k, err := s.full(key)
	if err != nil {
		return "", false
	}
	return l.Path(k)
}

// Import implements Local when the store under s does.
func (s *subStore) Import(ctx context.Context, key, file string) (Info, error) {
	k, err := s.full(key)
	if err != nil {
		return Info{}, err
	}
	l, ok := s.s.(Local)
	if !ok {
		return putFile(ctx, s.s, k, file, true)
	}
	info, err := l.Import(ctx, k, file)
	return s.rel(info), err
}
