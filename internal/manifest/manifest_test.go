package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"
	"time"
)

func testKey(t testing.TB, seed byte) ed25519.PrivateKey {
	t.Helper()
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{seed}, ed25519.SeedSize))
}

func sample() Manifest {
	return Manifest{
		ID: "abc123", Rendition: "720p", Seq: 42, Time: time.UnixMilli(1_780_000_000_123).UTC(),
		Entries: []Entry{
			{Kind: KindInit, URI: "init-a-0-0.mp4", Size: 800, SHA256: sha256.Sum256([]byte("init"))},
			{Kind: KindSegment, URI: "a-0-40.m4s", Size: 3, SHA256: sha256.Sum256([]byte("one")), Duration: 2002 * time.Millisecond},
			{Kind: KindSegment, URI: "a-0-41.m4s", Size: 3, SHA256: sha256.Sum256([]byte("two")), Duration: 1998 * time.Millisecond},
		},
	}
}

func keys(privs ...ed25519.PrivateKey) map[string]ed25519.PublicKey {
	out := map[string]ed25519.PublicKey{}
	for _, p := range privs {
		pub := p.Public().(ed25519.PublicKey)
		out[KeyID(pub)] = pub
	}
	return out
}

func TestSignVerifyRoundTrip(t *testing.T) {
	t.Parallel()
	k := testKey(t, 1)
	data, err := Sign(sample(), k)
	if err != nil {
		t.Fatal(err)
	}
	m, err := Verify(data, keys(testKey(t, 9), k))
	if err != nil {
		t.Fatal(err)
	}
	want := sample()
	want.KeyID = KeyID(k.Public().(ed25519.PublicKey))
	if m.KeyID != want.KeyID || m.ID != want.ID || m.Rendition != want.Rendition || m.Seq != want.Seq ||
		!m.Time.Equal(want.Time) || m.Ended || len(m.Entries) != 3 || m.Entries[2] != want.Entries[2] {
		t.Fatalf("round trip: got %+v want %+v", m, want)
	}
	e, ok := m.Lookup("a-0-41.m4s")
	if !ok || e.Check([]byte("two")) != nil || e.Check([]byte("one")) == nil || e.Check([]byte("twoo")) == nil {
		t.Fatalf("lookup/check: %+v %v", e, ok)
	}
	if _, ok := m.Lookup("a-0-42.m4s"); ok {
		t.Fatal("lookup of an unlisted uri succeeded")
	}
	// The text is the documented format.
	lines := strings.Split(string(data), "\n")
	if lines[0] != Magic || lines[1] != "key "+want.KeyID || lines[4] != "seq 42" || lines[5] != "time 1780000000123" ||
		lines[6] != "ended 0" || !strings.HasPrefix(lines[7], "init init-a-0-0.mp4 800 ") || !strings.HasPrefix(lines[10], "sig ") {
		t.Fatalf("unexpected text:\n%s", data)
	}
}

func TestVerifyRefuses(t *testing.T) {
	t.Parallel()
	k := testKey(t, 1)
	good, err := Sign(sample(), k)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := Sign(sample(), testKey(t, 2))
	for name, tc := range map[string]struct {
		data []byte
		keys map[string]ed25519.PublicKey
		want error
	}{
		"unknown key":       {good, keys(testKey(t, 2)), ErrUnknownKey},
		"key swapped":       {bytes.Replace(other, []byte("key "+KeyID(testKey(t, 2).Public().(ed25519.PublicKey))), []byte("key "+KeyID(k.Public().(ed25519.PublicKey))), 1), keys(k), ErrBadSignature},
		"seq changed":       {bytes.Replace(good, []byte("seq 42"), []byte("seq 43"), 1), keys(k), ErrBadSignature},
		"digest changed":    {bytes.Replace(good, []byte(" 3 "), []byte(" 4 "), 1), keys(k), ErrBadSignature},
		"duration changed":  {bytes.Replace(good, []byte(" 2002\n"), []byte(" 4002\n"), 1), keys(k), ErrBadSignature},
		"seg w/o duration":  {bytes.Replace(good, []byte(" 2002\n"), []byte("\n"), 1), keys(k), ErrMalformed},
		"entry dropped":     {dropLine(good, 9), keys(k), ErrBadSignature},
		"trailing garbage":  {append(bytes.Clone(good), "x\n"...), keys(k), ErrMalformed},
		"no newline":        {good[:len(good)-1], keys(k), ErrMalformed},
		"empty":             {nil, keys(k), ErrMalformed},
		"leading zero seq":  {bytes.Replace(good, []byte("seq 42"), []byte("seq 042"), 1), keys(k), ErrMalformed},
		"upper hex":         {bytes.ToUpper(good), keys(k), ErrMalformed},
		"path in uri":       {bytes.Replace(good, []byte("a-0-40.m4s"), []byte("../x/a.m4s"), 1), keys(k), ErrMalformed},
		"uri with dots":     {bytes.Replace(good, []byte("a-0-40.m4s"), []byte("a..m4s"), 1), keys(k), ErrMalformed},
		"bad ended":         {bytes.Replace(good, []byte("ended 0"), []byte("ended 2"), 1), keys(k), ErrMalformed},
		"short signature":   {bytes.Replace(good, []byte("\nsig "), []byte("\nsig AA"), 1), keys(k), ErrMalformed},
		"missing signature": {good[:bytes.LastIndex(good, []byte("sig "))], keys(k), ErrMalformed},
	} {
		if _, err := Verify(tc.data, tc.keys); !errors.Is(err, tc.want) {
			t.Errorf("%s: got %v, want %v", name, err, tc.want)
		}
	}
}

func dropLine(data []byte, n int) []byte {
	lines := strings.SplitAfter(string(data), "\n")
	return []byte(strings.Join(append(lines[:n:n], lines[n+1:]...), ""))
}

func TestSignRefusesBadContent(t *testing.T) {
	t.Parallel()
	k := testKey(t, 1)
	for name, mod := range map[string]func(*Manifest){
		"bad id":        func(m *Manifest) { m.ID = "A/B" },
		"bad rendition": func(m *Manifest) { m.Rendition = "" },
		"bad uri":       func(m *Manifest) { m.Entries[0].URI = "x y" },
		"bad kind":      func(m *Manifest) { m.Entries[0].Kind = "map" },
		"negative size": func(m *Manifest) { m.Entries[0].Size = -1 },
	} {
		m := sample()
		mod(&m)
		if _, err := Sign(m, k); err == nil {
			t.Errorf("%s: signed", name)
		}
	}
}

func TestPlaylistObjects(t *testing.T) {
	t.Parallel()
	pl := "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-TARGETDURATION:2\n" +
		"#EXT-X-MAP:URI=\"init-a-0-0.mp4\"\n#EXTINF:2.000,\na-0-40.m4s\n#EXT-X-DISCONTINUITY\n" +
		"#EXT-X-MAP:URI=\"init-a-1-0.mp4\"\n#EXTINF:2.000,\na-1-41.m4s\n#EXT-X-MAP:URI=\"init-a-1-0.mp4\"\n#EXTINF:2.0015,\na-1-42.m4s\n"
	objs, next, ended := PlaylistObjects([]byte(pl))
	want := []Object{{KindInit, "init-a-0-0.mp4", 0, false}, {KindSegment, "a-0-40.m4s", 2 * time.Second, false}, {KindInit, "init-a-1-0.mp4", 0, false},
		{KindSegment, "a-1-41.m4s", 2 * time.Second, false}, {KindSegment, "a-1-42.m4s", 2002 * time.Millisecond, false}}
	if len(objs) != len(want) || next != 43 || ended {
		t.Fatalf("got %v next=%d ended=%v", objs, next, ended)
	}
	for i := range want {
		if objs[i] != want[i] {
			t.Fatalf("object %d: got %v want %v", i, objs[i], want[i])
		}
	}
	if _, _, ended := PlaylistObjects([]byte(pl + "#EXT-X-ENDLIST\n")); !ended {
		t.Fatal("ENDLIST not seen")
	}
}

// FuzzParse: any bytes either fail to parse or parse into a manifest that
// signs back to the same body (the format has one spelling per content).
func FuzzParse(f *testing.F) {
	k := testKey(f, 1)
	good, _ := Sign(sample(), k)
	f.Add(good)
	ended := sample()
	ended.Ended, ended.Entries = true, nil
	e, _ := Sign(ended, k)
	f.Add(e)
	f.Add([]byte(Magic + "\nsig x\n"))
	g, _ := Sign(withGap(), k)
	f.Add(g)
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, signed, _, err := Parse(data)
		if err != nil {
			return
		}
		again, err := Sign(m, k)
		if err != nil {
			t.Fatalf("parsed content does not sign: %v", err)
		}
		// The signed part is the same apart from the key line.
		strip := func(b []byte) string {
			lines := strings.SplitAfter(string(b), "\n")
			return strings.Join(append(lines[:1:1], lines[2:]...), "")
		}
		if strip(again[:bytes.LastIndex(again, []byte("sig "))]) != strip(signed) {
			t.Fatalf("round trip differs:\n%q\n%q", signed, again)
		}
		if _, err := Verify(data, keys(k)); err == nil && !bytes.Equal(data, good) && !bytes.Equal(data, e) && !bytes.Equal(data, g) {
			t.Fatalf("forged manifest verified:\n%q", data)
		}
	})
}

// withGap is sample with segment 42 a gap (never written).
func withGap() Manifest {
	m := sample()
	m.Seq = 43
	m.Entries = append(m.Entries, Entry{Kind: KindGap, URI: "a-0-42.m4s", Duration: 2 * time.Second})
	return m
}

// A gap holds its place among the segments, with its duration and no
// bytes: it signs, verifies and checks no content.
func TestGapEntries(t *testing.T) {
	t.Parallel()
	k := testKey(t, 1)
	data, err := Sign(withGap(), k)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(data, []byte("\ngap a-0-42.m4s 2000\nsig ")) {
		t.Fatalf("the gap line:\n%s", data)
	}
	m, err := Verify(data, keys(k))
	if err != nil {
		t.Fatal(err)
	}
	e, ok := m.Lookup("a-0-42.m4s")
	if !ok || e.Kind != KindGap || e.Duration != 2*time.Second || e.Size != 0 || e.Check(nil) == nil {
		t.Fatalf("gap entry %+v %v", e, ok)
	}
	for name, line := range map[string]string{
		"gap with a size":   "gap a-0-42.m4s 0 " + strings.Repeat("0", 64) + " 2000",
		"gap w/o duration":  "gap a-0-42.m4s",
		"gap bad duration":  "gap a-0-42.m4s 2.5",
		"gap leading zero":  "gap a-0-42.m4s 02000",
		"gap with bad name": "gap ../a.m4s 2000",
	} {
		bad := bytes.Replace(data, []byte("gap a-0-42.m4s 2000"), []byte(line), 1)
		if _, _, _, err := Parse(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", name, err)
		}
	}
	g := withGap()
	g.Entries[3].Size = 5
	if _, err := Sign(g, k); err == nil {
		t.Error("signed a gap with a size")
	}
	pl := "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:40\n#EXT-X-MAP:URI=\"i.mp4\"\n#EXTINF:2.000,\na-0-40.m4s\n" +
		"#EXT-X-PROGRAM-DATE-TIME:2026-12-04T12:00:02Z\n#EXT-X-GAP\n#EXTINF:2.000,\na-0-41.m4s\n#EXTINF:2.000,\na-0-42.m4s\n"
	objs, next, _ := PlaylistObjects([]byte(pl))
	if len(objs) != 4 || next != 43 || objs[1].Gap || !objs[2].Gap || objs[3].Gap || objs[2].Duration != 2*time.Second {
		t.Fatalf("objects of a playlist with a gap: %+v next %d", objs, next)
	}
}

func TestTail(t *testing.T) {
	t.Parallel()
	objs := []Object{{KindInit, "i0", 0, false}, {KindSegment, "s0", 0, false}, {KindSegment, "s1", 0, true}, {KindInit, "i1", 0, false}, {KindSegment, "s2", 0, false}, {KindSegment, "s3", 0, false}}
	for _, tc := range []struct {
		n    int
		want string
	}{
		{1, "i1 s3"}, {2, "i1 s2 s3"}, {3, "i0 s1 i1 s2 s3"}, {4, "i0 s0 s1 i1 s2 s3"}, {9, "i0 s0 s1 i1 s2 s3"}, {0, "i1"},
	} {
		var got []string
		for _, o := range Tail(objs, tc.n) {
			got = append(got, o.URI)
		}
		if strings.Join(got, " ") != tc.want {
			t.Errorf("Tail(%d) = %v, want %s", tc.n, got, tc.want)
		}
	}
}
