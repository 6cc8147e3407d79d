// Package storagetest is the conformance suite every storage.Store
// backend runs (fsstore on a temporary directory, s3store on a real
// SeaweedFS): one table of behaviours, the same assertions.
package storagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/storage"
)

// NewStore returns an empty store for one test; it lives until the test
// ends.
type NewStore func(t *testing.T) storage.Store

// Run runs every case against stores from newStore, in parallel.
func Run(t *testing.T, newStore NewStore) {
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.run(t, newStore(t))
		})
	}
}

var cases = []struct {
	name string
	run  func(t *testing.T, s storage.Store)
}{
	{"PutGetStat", testPutGetStat},
	{"Range", testRange},
	{"EmptyObject", testEmptyObject},
	{"UnknownSize", testUnknownSize},
	{"SizeMismatch", testSizeMismatch},
	{"FailedPutKeepsOld", testFailedPutKeepsOld},
	{"CancelledPutKeepsOld", testCancelledPutKeepsOld},
	{"Overwrite", testOverwrite},
	{"NotFound", testNotFound},
	{"List", testList},
	{"ListPagination", testListPagination},
	{"ManyObjects", testManyObjects},
	{"Delete", testDelete},
	{"DeletePrefix", testDeletePrefix},
	{"InvalidKeys", testInvalidKeys},
	{"AtomicPut", testAtomicPut},
	{"ReaderDuringOverwrite", testReaderDuringOverwrite},
	{"ConcurrentPuts", testConcurrentPuts},
	{"ConcurrentOverwrites", testConcurrentOverwrites},
	{"Seeker", testSeeker},
	{"PutFile", testPutFile},
	{"Sub", testSub},
}

func ctx(t *testing.T) context.Context { return t.Context() }

func put(t *testing.T, s storage.Store, key string, data []byte) storage.Info {
	t.Helper()
	info, err := s.Put(ctx(t), key, bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("Put(%s): %v", key, err)
	}
	return info
}

func get(t *testing.T, s storage.Store, key string) []byte {
	t.Helper()
	b, _, err := storage.ReadAll(ctx(t), s, key)
	if err != nil {
		t.Fatalf("Get(%s): %v", key, err)
	}
	return b
}

func list(t *testing.T, s storage.Store, prefix string, opts storage.ListOptions) []storage.Info {
	t.Helper()
	var out []storage.Info
	for info, err := range s.List(ctx(t), prefix, opts) {
		if err != nil {
			t.Fatalf("List(%q): %v", prefix, err)
		}
		out = append(out, info)
	}
	return out
}

func keys(infos []storage.Info) []string {
	ks := make([]string, len(infos))
	for i, in := range infos {
		ks[i] = in.Key
	}
	return ks
}

// pattern returns n bytes that differ with seed and position.
func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) ^ seed
	}
	return b
}

func testPutGetStat(t *testing.T, s storage.Store) {
	data := pattern(70_000, 1)
	before := time.Now().Add(-time.Minute)
	info := put(t, s, "v1/720p/seg00001.m4s", data)
	if info.Key != "v1/720p/seg00001.m4s" || info.Size != int64(len(data)) || info.ETag == "" {
		t.Errorf("Put info = %+v", info)
	}
	rc, ginfo, err := s.Get(ctx(t), "v1/720p/seg00001.m4s", storage.Range{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("Get read %d bytes, %v; want the %d put", len(got), err, len(data))
	}
	st, err := s.Stat(ctx(t), "v1/720p/seg00001.m4s")
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []storage.Info{ginfo, st} {
		if in.Key != "v1/720p/seg00001.m4s" || in.Size != int64(len(data)) || in.ETag != info.ETag ||
			in.ModTime.Before(before) || in.ModTime.After(time.Now().Add(time.Minute)) {
			t.Errorf("info %+v, want key, size %d, ETag %s, a recent time", in, len(data), info.ETag)
		}
		if !strings.HasPrefix(in.ETag, `"`) || !strings.HasSuffix(in.ETag, `"`) {
			t.Errorf("ETag %s is not quoted", in.ETag)
		}
	}
}

func testRange(t *testing.T, s storage.Store) {
	data := pattern(100, 2)
	put(t, s, "r/obj", data)
	for _, c := range []struct {
		rng     storage.Range
		want    []byte
		invalid bool
	}{
		{storage.Range{}, data, false},
		{storage.Range{Offset: 10, Length: 5}, data[10:15], false},
		{storage.Range{Offset: 0, Length: 1}, data[:1], false},
		{storage.Range{Offset: 10}, data[10:], false},
		{storage.Range{Offset: 99}, data[99:], false},
		{storage.Range{Offset: 95, Length: 10}, data[95:], false},
		{storage.Range{Offset: 0, Length: 1000}, data, false},
		{storage.Range{Offset: 100}, nil, true},
		{storage.Range{Offset: 150, Length: 10}, nil, true},
		{storage.Range{Offset: -1}, nil, true},
		{storage.Range{Length: -5}, nil, true},
	} {
		rc, info, err := s.Get(ctx(t), "r/obj", c.rng)
		if c.invalid {
			if !errors.Is(err, storage.ErrInvalidRange) {
				t.Errorf("Get %+v: %v, want ErrInvalidRange", c.rng, err)
			}
			if rc != nil {
				rc.Close()
			}
			continue
		}
		if err != nil {
			t.Errorf("Get %+v: %v", c.rng, err)
			continue
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, c.want) {
			t.Errorf("Get %+v read %v (%v), want %v", c.rng, got, err, c.want)
		}
		if info.Size != 100 {
			t.Errorf("Get %+v: info.Size %d, want the whole object's 100", c.rng, info.Size)
		}
	}
}

func testEmptyObject(t *testing.T, s storage.Store) {
	info := put(t, s, "e/empty", nil)
	if info.Size != 0 {
		t.Errorf("size %d", info.Size)
	}
	for _, rng := range []storage.Range{{}, {Length: 10}} {
		rc, info, err := s.Get(ctx(t), "e/empty", rng)
		if err != nil {
			t.Fatalf("Get %+v: %v", rng, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || len(got) != 0 || info.Size != 0 {
			t.Errorf("Get %+v: %d bytes, %v, size %d", rng, len(got), err, info.Size)
		}
	}
	if _, _, err := s.Get(ctx(t), "e/empty", storage.Range{Offset: 1}); !errors.Is(err, storage.ErrInvalidRange) {
		t.Errorf("Get offset 1 of empty: %v, want ErrInvalidRange", err)
	}
}

func testUnknownSize(t *testing.T, s storage.Store) {
	data := pattern(300_000, 3)
	// A reader that is not a bytes.Reader, so no backend can learn its size.
	r := io.MultiReader(bytes.NewReader(data[:1000]), bytes.NewReader(data[1000:]))
	info, err := s.Put(ctx(t), "u/obj", r, storage.UnknownSize)
	if err != nil {
		t.Fatal(err)
	}
	if info.Size != int64(len(data)) {
		t.Errorf("size %d, want %d", info.Size, len(data))
	}
	if got := get(t, s, "u/obj"); !bytes.Equal(got, data) {
		t.Errorf("read %d bytes back", len(got))
	}
}

func testSizeMismatch(t *testing.T, s storage.Store) {
	old := []byte("old object")
	put(t, s, "m/obj", old)
	data := pattern(5000, 4)
	for _, size := range []int64{4999, 5001, 0, 1} {
		_, err := s.Put(ctx(t), "m/obj", bytes.NewReader(data), size)
		if !errors.Is(err, storage.ErrSizeMismatch) {
			t.Errorf("Put of 5000 bytes as %d: %v, want ErrSizeMismatch", size, err)
		}
		_, err = s.Put(ctx(t), "m/new", bytes.NewReader(data), size)
		if !errors.Is(err, storage.ErrSizeMismatch) {
			t.Errorf("Put of 5000 bytes as %d: %v, want ErrSizeMismatch", size, err)
		}
	}
	if got := get(t, s, "m/obj"); !bytes.Equal(got, old) {
		t.Errorf("after failed puts the object is %q, want the old %q", got, old)
	}
	if _, err := s.Stat(ctx(t), "m/new"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a failed put of a new key left something: %v", err)
	}
}

// failingReader yields n bytes, then fails.
type failingReader struct {
	r   io.Reader
	err error
}

func (f *failingReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if err == io.EOF {
		return n, f.err
	}
	return n, err
}

func testFailedPutKeepsOld(t *testing.T, s storage.Store) {
	old := pattern(1000, 5)
	put(t, s, "f/obj", old)
	boom := errors.New("source broke")
	for _, size := range []int64{200_000, storage.UnknownSize} {
		r := &failingReader{r: bytes.NewReader(pattern(100_000, 6)), err: boom}
		if _, err := s.Put(ctx(t), "f/obj", r, size); err == nil {
			t.Fatalf("Put (size %d) from a failing reader succeeded", size)
		}
	}
	if got := get(t, s, "f/obj"); !bytes.Equal(got, old) {
		t.Errorf("after a failed put the object has %d bytes, want the old %d", len(got), len(old))
	}
}

// gateReader yields the first half of data, signals reached, waits for
// release (or ctx), then yields the rest.
type gateReader struct {
	data             []byte
	off              int
	reached, release chan struct{}
	once             sync.Once
	ctx              context.Context
}

func newGate(ctx context.Context, data []byte) *gateReader {
	return &gateReader{data: data, reached: make(chan struct{}), release: make(chan struct{}), ctx: ctx}
}

func (g *gateReader) Read(p []byte) (int, error) {
	half := len(g.data) / 2
	if g.off == half {
		g.once.Do(func() { close(g.reached) })
		select {
		case <-g.release:
		case <-g.ctx.Done():
			return 0, g.ctx.Err()
		}
	}
	if g.off >= len(g.data) {
		return 0, io.EOF
	}
	end := len(g.data)
	if g.off < half {
		end = half
	}
	n := copy(p, g.data[g.off:end])
	g.off += n
	return n, nil
}

func testCancelledPutKeepsOld(t *testing.T, s storage.Store) {
	old := pattern(1000, 7)
	put(t, s, "c/obj", old)
	pctx, cancel := context.WithCancel(ctx(t))
	g := newGate(pctx, pattern(400_000, 8))
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(pctx, "c/obj", g, 400_000)
		done <- err
	}()
	<-g.reached
	cancel()
	if err := <-done; err == nil {
		t.Fatal("a cancelled Put succeeded")
	}
	if got := get(t, s, "c/obj"); !bytes.Equal(got, old) {
		t.Errorf("after a cancelled put the object has %d bytes, want the old %d", len(got), len(old))
	}
}

func testOverwrite(t *testing.T, s storage.Store) {
	a := put(t, s, "o/obj", []byte("first version"))
	b := put(t, s, "o/obj", []byte("second, longer version"))
	if got := get(t, s, "o/obj"); string(got) != "second, longer version" {
		t.Errorf("got %q", got)
	}
	if a.ETag == b.ETag {
		t.Errorf("ETag %s did not change with the content", a.ETag)
	}
	st, err := s.Stat(ctx(t), "o/obj")
	if err != nil || st.Size != b.Size || st.ETag != b.ETag {
		t.Errorf("Stat %+v, %v; want %+v", st, err, b)
	}
	if ks := keys(list(t, s, "o/", storage.ListOptions{})); !slices.Equal(ks, []string{"o/obj"}) {
		t.Errorf("List = %v", ks)
	}
}

func testNotFound(t *testing.T, s storage.Store) {
	put(t, s, "n/here", []byte("x"))
	for _, key := range []string{"n/missing", "missing/deeper/key", "n/here/below"} {
		if _, _, err := s.Get(ctx(t), key, storage.Range{}); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Get(%s): %v, want ErrNotFound", key, err)
		}
		if _, err := s.Stat(ctx(t), key); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Stat(%s): %v, want ErrNotFound", key, err)
		}
		if err := s.Delete(ctx(t), key); err != nil {
			t.Errorf("Delete(%s) of a missing object: %v, want nil", key, err)
		}
	}
	// "n" is a "directory", not an object.
	if _, err := s.Stat(ctx(t), "n"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat(n): %v, want ErrNotFound", err)
	}
	if ks := keys(list(t, s, "nothing/", storage.ListOptions{})); len(ks) != 0 {
		t.Errorf("List(nothing/) = %v", ks)
	}
}

// listKeys sort differently by bytes than by walking directories ("-" and
// "." sort before "/").
var listKeys = []string{
	"v1/master.m3u8",
	"v1/720p/seg00001.m4s",
	"v1/720p/seg00002.m4s",
	"v1/720p/init.mp4",
	"v1/720p-x/a",
	"v1/720p.m3u8",
	"v1/1080p/seg00001.m4s",
	"v1-2/x",
	"v10/y",
	"v0/z",
	"w",
}

func testList(t *testing.T, s storage.Store) {
	data := map[string][]byte{}
	for i, k := range listKeys {
		data[k] = pattern(10+i, byte(i))
		put(t, s, k, data[k])
	}
	sorted := slices.Clone(listKeys)
	slices.Sort(sorted)
	all := list(t, s, "", storage.ListOptions{})
	if ks := keys(all); !slices.Equal(ks, sorted) {
		t.Errorf("List(\"\") =\n%v\nwant\n%v", ks, sorted)
	}
	for _, in := range all {
		if in.Size != int64(len(data[in.Key])) || in.ETag == "" || in.ModTime.IsZero() {
			t.Errorf("List info %+v, want size %d, an ETag and a time", in, len(data[in.Key]))
		}
	}
	for _, c := range []struct {
		prefix string
		want   []string
	}{
		{"v1/", []string{"v1/1080p/seg00001.m4s", "v1/720p-x/a", "v1/720p.m3u8", "v1/720p/init.mp4", "v1/720p/seg00001.m4s", "v1/720p/seg00002.m4s", "v1/master.m3u8"}},
		{"v1/720p/", []string{"v1/720p/init.mp4", "v1/720p/seg00001.m4s", "v1/720p/seg00002.m4s"}},
		{"v1/720p/seg", []string{"v1/720p/seg00001.m4s", "v1/720p/seg00002.m4s"}},
		{"v1/720p", []string{"v1/720p-x/a", "v1/720p.m3u8", "v1/720p/init.mp4", "v1/720p/seg00001.m4s", "v1/720p/seg00002.m4s"}},
		{"v1", []string{"v1-2/x", "v1/1080p/seg00001.m4s", "v1/720p-x/a", "v1/720p.m3u8", "v1/720p/init.mp4", "v1/720p/seg00001.m4s", "v1/720p/seg00002.m4s", "v1/master.m3u8", "v10/y"}},
		{"w", []string{"w"}},
		{"v2/", nil},
		{"v1/720p/seg00001.m4s", []string{"v1/720p/seg00001.m4s"}},
	} {
		if ks := keys(list(t, s, c.prefix, storage.ListOptions{})); !slices.Equal(ks, c.want) {
			t.Errorf("List(%q) =\n%v\nwant\n%v", c.prefix, ks, c.want)
		}
	}
	// StartAfter, inside and outside "directories".
	for _, after := range []string{"v1/720p", "v1/720p-x/a", "v1/720p/", "v1/720p/init.mp4", "v1/", "a", "z"} {
		var want []string
		for _, k := range sorted {
			if k > after {
				want = append(want, k)
			}
		}
		if ks := keys(list(t, s, "", storage.ListOptions{StartAfter: after})); !slices.Equal(ks, want) {
			t.Errorf("List(StartAfter %q) =\n%v\nwant\n%v", after, ks, want)
		}
	}
	// Breaking out of the loop stops the listing.
	n := 0
	for _, err := range s.List(ctx(t), "", storage.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		n++
		if n == 3 {
			break
		}
	}
	if n != 3 {
		t.Errorf("stopped after %d", n)
	}
}

// listPage returns up to n keys after after.
func listPage(t *testing.T, s storage.Store, prefix, after string, n int) []string {
	t.Helper()
	var out []string
	for info, err := range s.List(ctx(t), prefix, storage.ListOptions{StartAfter: after}) {
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, info.Key)
		if len(out) == n {
			break
		}
	}
	return out
}

func testListPagination(t *testing.T, s storage.Store) {
	for _, k := range listKeys {
		put(t, s, k, []byte(k))
	}
	sorted := slices.Clone(listKeys)
	slices.Sort(sorted)
	var got []string
	after := ""
	for {
		page := listPage(t, s, "", after, 3)
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		after = page[len(page)-1]
	}
	if !slices.Equal(got, sorted) {
		t.Errorf("pages =\n%v\nwant\n%v", got, sorted)
	}
}

// putAll puts keys with 8 writers.
func putAll(t *testing.T, s storage.Store, keys []string, value func(string) []byte) {
	t.Helper()
	ch := make(chan string)
	errs := make(chan error, len(keys))
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for k := range ch {
				v := value(k)
				if _, err := s.Put(ctx(t), k, bytes.NewReader(v), int64(len(v))); err != nil {
					errs <- err
				}
			}
		})
	}
	for _, k := range keys {
		ch <- k
	}
	close(ch)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// testManyObjects crosses S3's page of 1000 keys, in List and in
// DeletePrefix's batches.
func testManyObjects(t *testing.T, s storage.Store) {
	var ks []string
	for i := range 1100 {
		ks = append(ks, fmt.Sprintf("many/%d/seg%05d.m4s", i%2, i))
	}
	put(t, s, "keep/me", []byte("k"))
	putAll(t, s, ks, func(k string) []byte { return []byte(k) })
	sorted := slices.Clone(ks)
	slices.Sort(sorted)
	if got := keys(list(t, s, "many/", storage.ListOptions{})); !slices.Equal(got, sorted) {
		t.Fatalf("List(many/) gave %d keys (sorted: %v), want %d", len(got), slices.IsSorted(got), len(sorted))
	}
	if got := listPage(t, s, "many/", sorted[999], 200); !slices.Equal(got, sorted[1000:]) {
		t.Errorf("List after the 1000th key gave %d keys, want %d", len(got), len(sorted)-1000)
	}
	if err := s.DeletePrefix(ctx(t), "many/"); err != nil {
		t.Fatal(err)
	}
	if got := keys(list(t, s, "", storage.ListOptions{})); !slices.Equal(got, []string{"keep/me"}) {
		t.Errorf("after DeletePrefix(many/) List = %d keys (%.5v)", len(got), got)
	}
}

func testDelete(t *testing.T, s storage.Store) {
	put(t, s, "d/a/obj", []byte("a"))
	put(t, s, "d/b", []byte("b"))
	if err := s.Delete(ctx(t), "d/a/obj"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Stat(ctx(t), "d/a/obj"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat after Delete: %v", err)
	}
	if err := s.Delete(ctx(t), "d/a/obj"); err != nil {
		t.Errorf("second Delete: %v", err)
	}
	// Deleting a "directory" deletes nothing.
	if err := s.Delete(ctx(t), "d"); err != nil {
		t.Errorf("Delete(d): %v", err)
	}
	if ks := keys(list(t, s, "", storage.ListOptions{})); !slices.Equal(ks, []string{"d/b"}) {
		t.Errorf("List = %v, want [d/b]", ks)
	}
	// The key can be used again, also as a "directory".
	put(t, s, "d/a/obj", []byte("again"))
	if got := get(t, s, "d/a/obj"); string(got) != "again" {
		t.Errorf("got %q", got)
	}
}

func testDeletePrefix(t *testing.T, s storage.Store) {
	for _, k := range []string{"p/a", "p/b/c", "p/b/d/e", "p2/d", "pa/x", "q/p/a"} {
		put(t, s, k, []byte(k))
	}
	if err := s.DeletePrefix(ctx(t), "p/"); err != nil {
		t.Fatal(err)
	}
	if ks := keys(list(t, s, "", storage.ListOptions{})); !slices.Equal(ks, []string{"p2/d", "pa/x", "q/p/a"}) {
		t.Errorf("after DeletePrefix(p/): %v", ks)
	}
	if err := s.DeletePrefix(ctx(t), "p/"); err != nil {
		t.Errorf("DeletePrefix of nothing: %v", err)
	}
	if err := s.DeletePrefix(ctx(t), "nothing/here/"); err != nil {
		t.Errorf("DeletePrefix of nothing: %v", err)
	}
	// Only "directories": "p" would also take p2/ and pa/.
	for _, bad := range []string{"p", "", "/", "pa/x", "../"} {
		if err := s.DeletePrefix(ctx(t), bad); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("DeletePrefix(%q): %v, want ErrInvalidKey", bad, err)
		}
	}
	if ks := keys(list(t, s, "", storage.ListOptions{})); len(ks) != 3 {
		t.Errorf("refused DeletePrefix calls deleted something: %v", ks)
	}
	put(t, s, "p/a", []byte("back"))
	if got := get(t, s, "p/a"); string(got) != "back" {
		t.Errorf("got %q", got)
	}
}

// untouchable fails the test when read.
type untouchable struct{ t *testing.T }

func (u untouchable) Read([]byte) (int, error) {
	u.t.Error("Put read the data of an invalid key")
	return 0, io.EOF
}

// InvalidKeys lists keys every backend refuses.
var InvalidKeys = []string{"", "/abs", "a/", "a//b", "..", "a/../b", "./a", ".tmp/x", "a/.b", "a\\b", "a\x00b", "a\nb", strings.Repeat("x", storage.MaxKeyLen+1)}

func testInvalidKeys(t *testing.T, s storage.Store) {
	CheckInvalidKeys(t, s)
	if ks := keys(list(t, s, "", storage.ListOptions{})); len(ks) != 0 {
		t.Errorf("invalid keys stored something: %v", ks)
	}
}

// CheckInvalidKeys checks that every method refuses every key of
// InvalidKeys with ErrInvalidKey (backends also call it on a store they
// cannot reach, to show no I/O happens first).
func CheckInvalidKeys(t *testing.T, s storage.Store) {
	t.Helper()
	for _, k := range InvalidKeys {
		if _, err := s.Put(ctx(t), k, untouchable{t}, 3); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Put(%q): %v, want ErrInvalidKey", k, err)
		}
		if _, _, err := s.Get(ctx(t), k, storage.Range{}); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Get(%q): %v, want ErrInvalidKey", k, err)
		}
		if _, err := s.Stat(ctx(t), k); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Stat(%q): %v, want ErrInvalidKey", k, err)
		}
		if err := s.Delete(ctx(t), k); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("Delete(%q): %v, want ErrInvalidKey", k, err)
		}
		if err := s.DeletePrefix(ctx(t), k+"/"); !errors.Is(err, storage.ErrInvalidKey) {
			t.Errorf("DeletePrefix(%q): %v, want ErrInvalidKey", k+"/", err)
		}
		if k == "" || k == "a/" {
			continue // valid list prefixes
		}
		for _, err := range s.List(ctx(t), k, storage.ListOptions{}) {
			if !errors.Is(err, storage.ErrInvalidKey) {
				t.Errorf("List(%q): %v, want ErrInvalidKey", k, err)
			}
			break
		}
	}
}

// testAtomicPut: while a Put is half done, readers see the old object,
// whole; then the new one, whole.
func testAtomicPut(t *testing.T, s storage.Store) {
	old := pattern(50_000, 9)
	put(t, s, "a/obj", old)
	data := pattern(400_000, 10)
	g := newGate(ctx(t), data)
	done := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx(t), "a/obj", g, int64(len(data)))
		done <- err
	}()
	<-g.reached
	if got := get(t, s, "a/obj"); !bytes.Equal(got, old) {
		t.Errorf("during the put Get read %d bytes, want the old %d", len(got), len(old))
	}
	if st, err := s.Stat(ctx(t), "a/obj"); err != nil || st.Size != int64(len(old)) {
		t.Errorf("during the put Stat = %+v, %v; want the old size %d", st, err, len(old))
	}
	if ls := list(t, s, "a/", storage.ListOptions{}); len(ls) != 1 || ls[0].Size != int64(len(old)) {
		t.Errorf("during the put List = %+v, want the old object only", ls)
	}
	// A new key is not visible before its Put returns.
	g2 := newGate(ctx(t), data)
	done2 := make(chan error, 1)
	go func() {
		_, err := s.Put(ctx(t), "a/new", g2, int64(len(data)))
		done2 <- err
	}()
	<-g2.reached
	if _, err := s.Stat(ctx(t), "a/new"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("a half-written new object: Stat %v, want ErrNotFound", err)
	}
	close(g.release)
	close(g2.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := <-done2; err != nil {
		t.Fatal(err)
	}
	if got := get(t, s, "a/obj"); !bytes.Equal(got, data) {
		t.Errorf("after the put Get read %d bytes, want the new %d", len(got), len(data))
	}
}

// testReaderDuringOverwrite: a reader that opened the object before an
// overwrite reads the old object whole, the new one whole, or fails; it
// never gets a mix or a silently short object.
func testReaderDuringOverwrite(t *testing.T, s storage.Store) {
	old := pattern(300_000, 11)
	data := pattern(200_000, 12)
	put(t, s, "w/obj", old)
	rc, _, err := s.Get(ctx(t), "w/obj", storage.Range{})
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	head := make([]byte, 1000)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatal(err)
	}
	put(t, s, "w/obj", data)
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Logf("the old reader failed after the overwrite (allowed): %v", err)
	} else if got := append(head, rest...); !bytes.Equal(got, old) && !bytes.Equal(got, data) {
		t.Errorf("the old reader read %d bytes that are neither the old object nor the new", len(got))
	}
	if got := get(t, s, "w/obj"); !bytes.Equal(got, data) {
		t.Errorf("a new reader read %d bytes, want the new %d", len(got), len(data))
	}
}

func testConcurrentPuts(t *testing.T, s storage.Store) {
	var ks []string
	for i := range 16 {
		for j := range 8 {
			ks = append(ks, fmt.Sprintf("cp/%02d/%d.m4s", i, j))
		}
	}
	value := func(k string) []byte { return append(pattern(3000, byte(len(k))), k...) }
	putAll(t, s, ks, value)
	got := keys(list(t, s, "cp/", storage.ListOptions{}))
	slices.Sort(ks)
	if !slices.Equal(got, ks) {
		t.Fatalf("List gave %d keys, want %d", len(got), len(ks))
	}
	for _, k := range ks {
		if b := get(t, s, k); !bytes.Equal(b, value(k)) {
			t.Errorf("%s: wrong content", k)
		}
	}
}

func testConcurrentOverwrites(t *testing.T, s storage.Store) {
	versions := make([][]byte, 8)
	for i := range versions {
		versions[i] = pattern(20_000+i*1000, byte(i))
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(versions))
	for _, v := range versions {
		wg.Go(func() {
			if _, err := s.Put(ctx(t), "co/obj", bytes.NewReader(v), int64(len(v))); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	got := get(t, s, "co/obj")
	if !slices.ContainsFunc(versions, func(v []byte) bool { return bytes.Equal(v, got) }) {
		t.Errorf("after concurrent puts the object (%d bytes) is none of the versions", len(got))
	}
}

// A Seeker serves ranges the way http.ServeContent asks for them.
func testSeeker(t *testing.T, s storage.Store) {
	data := pattern(100_000, 7)
	info := put(t, s, "v/seek.m4s", data)
	r := storage.NewSeeker(ctx(t), s, info)
	defer r.Close()
	if n, err := r.Seek(0, io.SeekEnd); err != nil || n != int64(len(data)) {
		t.Fatalf("Seek(0, end) = %d, %v", n, err)
	}
	if _, err := r.Seek(50_000, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 10)
	if _, err := io.ReadFull(r, got); err != nil || !bytes.Equal(got, data[50_000:50_010]) {
		t.Fatalf("read at 50000: %v", err)
	}
	if _, err := r.Seek(-10, io.SeekEnd); err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(rest, data[len(data)-10:]) {
		t.Fatalf("read the last 10 bytes: %q, %v", rest, err)
	}
	if _, err := r.Seek(0, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	all, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(all, data) {
		t.Fatalf("read all: %d bytes, %v", len(all), err)
	}
	// Replaced by another size since the Info was taken: a read fails,
	// never mixes.
	put(t, s, "v/seek.m4s", pattern(90_000, 8))
	if _, err := r.Seek(1, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(r); err == nil {
		t.Fatal("reading an object that changed succeeded")
	}
}

// PutFile stores a local file; with move the file is gone afterwards.
func testPutFile(t *testing.T, s storage.Store) {
	dir := t.TempDir()
	for _, move := range []bool{false, true} {
		data := pattern(70_000, 3)
		file := dir + "/upload"
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		key := fmt.Sprintf("v/file-%t", move)
		info, err := storage.PutFile(ctx(t), s, key, file, move)
		if err != nil {
			t.Fatalf("PutFile(move=%t): %v", move, err)
		}
		if info.Size != int64(len(data)) || info.Key != key {
			t.Fatalf("PutFile(move=%t) = %+v", move, info)
		}
		if got := get(t, s, key); !bytes.Equal(got, data) {
			t.Fatalf("PutFile(move=%t) stored %d bytes", move, len(got))
		}
		if _, err := os.Stat(file); move != errors.Is(err, os.ErrNotExist) {
			t.Fatalf("PutFile(move=%t): the file afterwards: %v", move, err)
		}
		os.Remove(file)
	}
	if _, err := storage.PutFile(ctx(t), s, "v/missing", dir+"/nothing", true); err == nil {
		t.Fatal("PutFile of a missing file succeeded")
	}
}

// Sub sees only its directory, with keys relative to it.
func testSub(t *testing.T, s storage.Store) {
	sub := storage.Sub(s, "hls")
	put(t, s, "hlsx/a", []byte("outside"))
	put(t, sub, "v1/a.m4s", []byte("a"))
	put(t, sub, "v1/b.m4s", []byte("b"))
	if got := get(t, s, "hls/v1/a.m4s"); string(got) != "a" {
		t.Fatalf("the parent holds %q at hls/v1/a.m4s", got)
	}
	if got := keys(list(t, sub, "", storage.ListOptions{})); !slices.Equal(got, []string{"v1/a.m4s", "v1/b.m4s"}) {
		t.Fatalf("Sub lists %q", got)
	}
	if got := keys(list(t, sub, "v1/", storage.ListOptions{StartAfter: "v1/a.m4s"})); !slices.Equal(got, []string{"v1/b.m4s"}) {
		t.Fatalf("Sub lists after v1/a.m4s: %q", got)
	}
	info, err := sub.Stat(ctx(t), "v1/b.m4s")
	if err != nil || info.Key != "v1/b.m4s" {
		t.Fatalf("Stat = %+v, %v", info, err)
	}
	for _, bad := range []string{"", "../hlsx/a", "/v1/a.m4s"} {
		if _, err := sub.Stat(ctx(t), bad); !errors.Is(err, storage.ErrInvalidKey) {
			t.Fatalf("Stat(%q) = %v, want ErrInvalidKey", bad, err)
		}
	}
	if err := sub.DeletePrefix(ctx(t), "v1/"); err != nil {
		t.Fatal(err)
	}
	if got := keys(list(t, s, "", storage.ListOptions{})); !slices.Equal(got, []string{"hlsx/a"}) {
		t.Fatalf("after DeletePrefix the parent holds %q", got)
	}
}
