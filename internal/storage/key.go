package storage

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode/utf8"
)

// MaxKeyLen is the longest key in bytes (S3 allows 1024; keep well under
// PATH_MAX once joined to a root directory).
const MaxKeyLen = 512

// maxSegmentLen is the longest segment in bytes (NAME_MAX on Linux).
const maxSegmentLen = 255

// CheckKey reports whether key is a valid object key; the error matches
// ErrInvalidKey and says why. A key is slash-separated segments, such as
// "abc123/720p/seg00042.m4s":
//   - not empty, at most MaxKeyLen bytes, valid UTF-8;
//   - no leading or trailing "/", no empty segment ("a//b");
//   - no segment starting with "." (so no "." or "..", and no name a
//     backend keeps for itself), none over 255 bytes;
//   - no backslash, and no control character (NUL, newline, ...).
func CheckKey(key string) error {
	if err := checkKey(key); err != nil {
		return fmt.Errorf("%w %q: %s", ErrInvalidKey, truncate(key), err)
	}
	return nil
}

// CheckPrefix reports whether prefix is valid for List: empty, or a valid
// key, or a valid key followed by "/".
func CheckPrefix(prefix string) error {
	if prefix == "" {
		return nil
	}
	return CheckKey(strings.TrimSuffix(prefix, "/"))
}

// CheckDirPrefix reports whether prefix is valid for DeletePrefix: a valid
// key followed by "/".
func CheckDirPrefix(prefix string) error {
	if !strings.HasSuffix(prefix, "/") {
		return fmt.Errorf("%w %q: a prefix to delete must end with \"/\"", ErrInvalidKey, truncate(prefix))
	}
	return CheckKey(strings.TrimSuffix(prefix, "/"))
}

func checkKey(key string) error {
	switch {
	case key == "":
		return errors.New("empty")
	case len(key) > MaxKeyLen:
		return fmt.Errorf("longer than %d bytes", MaxKeyLen)
	case !utf8.ValidString(key):
		return errors.New("not valid UTF-8")
	case strings.HasPrefix(key, "/"):
		return errors.New("starts with \"/\"")
	case strings.HasSuffix(key, "/"):
		return errors.New("ends with \"/\"")
	}
	for _, r := range key {
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			return errors.New("contains a control character")
		}
		if r == '\\' {
			return errors.New("contains a backslash")
		}
	}
	for seg := range strings.SplitSeq(key, "/") {
		switch {
		case seg == "":
			return errors.New("has an empty segment")
		case seg[0] == '.':
			return errors.New("has a segment starting with \".\"")
		case len(seg) > maxSegmentLen:
			return fmt.Errorf("has a segment longer than %d bytes", maxSegmentLen)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// ExactReader returns a reader of r that fails with ErrSizeMismatch when r
// holds fewer or more than size bytes. It looks one byte ahead before
// handing out the last bytes, and fails that read instead when there is
// more, so a writer that stops reading at size bytes (io.ReadFull) still
// sees the error. It cannot tell a writer that never reads (size 0) that
// r is not empty: check that first. A negative size returns r unchanged.
func ExactReader(r io.Reader, size int64) io.Reader {
	if size < 0 {
		return r
	}
	return &exactReader{r: r, left: size, size: size}
}

type exactReader struct {
	r          io.Reader
	left, size int64
	err        error
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.err != nil {
		return 0, e.err
	}
	if e.left == 0 {
		e.err = e.probe()
		return 0, e.err
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	switch {
	case err == io.EOF && e.left > 0:
		e.err = fmt.Errorf("%w: got %d bytes, expected %d", ErrSizeMismatch, e.size-e.left, e.size)
		return n, e.err
	case err != nil && err != io.EOF:
		e.err = err
		return n, err
	case e.left == 0:
		if e.err = e.probe(); e.err != io.EOF {
			return 0, e.err // withhold the last bytes: this read fails
		}
		return n, nil
	}
	return n, nil
}

// CheckEmpty reads r when an empty object is announced (size 0): nil when
// r holds nothing, ErrSizeMismatch when it holds bytes.
func CheckEmpty(r io.Reader) error {
	e := exactReader{r: r}
	if err := e.probe(); err != io.EOF {
		return err
	}
	return nil
}

// probe looks for a byte past size: io.EOF when there is none.
func (e *exactReader) probe() error {
	var b [1]byte
	for range 100 {
		n, err := e.r.Read(b[:])
		if n > 0 {
			return fmt.Errorf("%w: more than the %d bytes expected", ErrSizeMismatch, e.size)
		}
		if err == io.EOF {
			return io.EOF
		}
		if err != nil {
			return err
		}
	}
	return io.ErrNoProgress
}
