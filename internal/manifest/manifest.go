// Package manifest is Shoal's signed segment manifest: what the origin
// published for one rendition (or audio group) of a stream, object by
// object, with each object's size and SHA-256, signed with the origin's
// ed25519 content key. Whoever relays the bytes (an edge, a sibling edge, a
// viewer's browser), a client checks them against a manifest it verified
// with the origin's public key alone.
//
// # Format
//
// A manifest is UTF-8 text, one field per line, every line ending in "\n",
// in exactly this order:
//
//	shoal-manifest 1
//	key <key id>                 the content key that signed it (KeyID)
//	id <stream id>
//	rendition <rendition>        a rendition name, or "audio"
//	seq <n>                      segments published so far (media sequence of the last + 1)
//	time <unix ms>               when the origin signed it
//	ended <0|1>                  1: the list is final (VOD, or a finished broadcast)
//	init <uri> <size> <sha256>        zero or more: initialization sections
//	seg <uri> <size> <sha256> <ms>    zero or more: segments, in playlist order, with their
//	                                  duration in milliseconds (the playlist's EXTINF)
//	part <uri> <size> <sha256> <ms>   zero or more, among them: LL-HLS partial segments, where
//	                                  the playlist lists them (EXT-X-PART, its DURATION)
//	gap <uri> <ms>                    zero or more, among the segments: a segment the playlist
//	                                  marks EXT-X-GAP (it could not be written: a full disk),
//	                                  at its place in the sequence; there is nothing to fetch
//	sig <base64url>              ed25519 signature of every byte before this line
//
// URIs are file names relative to the rendition's directory (the same
// names the playlist uses), sizes are decimal byte counts and digests are
// 64 lowercase hex digits. The signed bytes are the file up to and
// including the "\n" before "sig": there is no canonicalization step, a
// verifier hashes exactly what it received. A live manifest lists the
// live window and a few segments before it (a player's playlist may be a
// second older than its manifest); a finished one every segment. seq never decreases while a
// broadcast runs and time says how old a manifest is, so an edge that
// replays an old one to hide new segments is caught by its age.
//
// Key ids are the first 8 bytes of SHA-256 of the raw 32-byte public key,
// in lowercase hex. Keys rotate by adding the new key to the published set
// (GET /v1/keys) before signing with it; a manifest names its key, so
// clients holding the set verify either.
package manifest

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Magic is the first line of every manifest.
const Magic = "shoal-manifest 1"

// FileName is the manifest's name in a rendition's directory, next to
// index.m3u8.
const FileName = "manifest.txt"

// ContentType is the manifest's media type.
const ContentType = "text/plain; charset=utf-8"

// Limits on what Parse accepts.
const (
	MaxBytes   = 4 << 20
	MaxEntries = 40000
)

// Kinds of entries.
const (
	KindInit    = "init"
	KindSegment = "seg"
	KindPart    = "part"
	// KindGap is a segment that was never written (EXT-X-GAP): it holds
	// its place in the sequence, with its duration, and has no bytes.
	KindGap = "gap"
)

// Entry is one object of a manifest.
type Entry struct {
	Kind     string // KindInit, KindSegment, KindPart or KindGap
	URI      string
	Size     int64         // 0 for a gap
	SHA256   [32]byte      // zero for a gap
	Duration time.Duration // segments, parts and gaps: the playlist's duration, millisecond precision
}

// Manifest is a manifest's content.
type Manifest struct {
	KeyID     string
	ID        string
	Rendition string
	Seq       uint64
	Time      time.Time // millisecond precision
	Ended     bool
	Entries   []Entry
}

// Lookup returns the entry for uri.
func (m *Manifest) Lookup(uri string) (Entry, bool) {
	for _, e := range m.Entries {
		if e.URI == uri {
			return e, true
		}
	}
	return Entry{}, false
}

// KeyID is the id of a content key: hex of the first 8 bytes of the
// SHA-256 of the public key.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

var (
	nameRe = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,63}$`)
	uriRe  = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)
	keyRe  = regexp.MustCompile(`^[0-9a-f]{16}$`)
)

func (m *Manifest) check() error {
	switch {
	case !keyRe.MatchString(m.KeyID):
		return errors.New("key id must be 16 lowercase hex digits")
	case !nameRe.MatchString(m.ID):
		return fmt.Errorf("bad stream id %q", m.ID)
	case !nameRe.MatchString(m.Rendition):
		return fmt.Errorf("bad rendition %q", m.Rendition)
	case m.Time.UnixMilli() < 0:
		return errors.New("time before 1970")
	case len(m.Entries) > MaxEntries:
		return fmt.Errorf("%d entries, more than %d", len(m.Entries), MaxEntries)
	}
	for _, e := range m.Entries {
		if e.Kind != KindInit && e.Kind != KindSegment && e.Kind != KindPart && e.Kind != KindGap {
			return fmt.Errorf("bad entry kind %q", e.Kind)
		}
		if e.Kind == KindGap && (e.Size != 0 || e.SHA256 != [32]byte{}) {
			return fmt.Errorf("the gap %s has a size or digest", e.URI)
		}
		if !uriRe.MatchString(e.URI) || strings.Contains(e.URI, "..") {
			return fmt.Errorf("bad uri %q", e.URI)
		}
		if e.Size < 0 {
			return fmt.Errorf("negative size for %s", e.URI)
		}
		if e.Duration < 0 || e.Duration > maxDuration || (e.Kind == KindInit && e.Duration != 0) {
			return fmt.Errorf("bad duration for %s", e.URI)
		}
	}
	return nil
}

// Sign returns the signed manifest's bytes. m.KeyID is set from priv.
func Sign(m Manifest, priv ed25519.PrivateKey) ([]byte, error) {
	m.KeyID = KeyID(priv.Public().(ed25519.PublicKey))
	if err := m.check(); err != nil {
		return nil, fmt.Errorf("manifest: %w", err)
	}
	var b bytes.Buffer
	b.Grow(160 + len(m.Entries)*110)
	b.WriteString(Magic + "\n")
	b.WriteString("key " + m.KeyID + "\n")
	b.WriteString("id " + m.ID + "\n")
	b.WriteString("rendition " + m.Rendition + "\n")
	b.WriteString("seq " + strconv.FormatUint(m.Seq, 10) + "\n")
	b.WriteString("time " + strconv.FormatInt(m.Time.UnixMilli(), 10) + "\n")
	if m.Ended {
		b.WriteString("ended 1\n")
	} else {
		b.WriteString("ended 0\n")
	}
	for _, e := range m.Entries {
		if e.Kind == KindGap {
			b.WriteString(e.Kind + " " + e.URI + " " + strconv.FormatInt(e.Duration.Milliseconds(), 10) + "\n")
			continue
		}
		b.WriteString(e.Kind + " " + e.URI + " " + strconv.FormatInt(e.Size, 10) + " " + hex.EncodeToString(e.SHA256[:]))
		if e.Kind != KindInit {
			b.WriteString(" " + strconv.FormatInt(e.Duration.Milliseconds(), 10))
		}
		b.WriteString("\n")
	}
	sig := ed25519.Sign(priv, b.Bytes())
	b.WriteString("sig " + base64.RawURLEncoding.EncodeToString(sig) + "\n")
	return b.Bytes(), nil
}

// maxDuration bounds a segment's duration.
const maxDuration = 24 * time.Hour

// Errors of Parse and Verify.
var (
	ErrMalformed    = errors.New("manifest: malformed")
	ErrUnknownKey   = errors.New("manifest: signed with an unknown key")
	ErrBadSignature = errors.New("manifest: bad signature")
)

// Parse reads a manifest without checking its signature. It returns the
// content, the signed bytes and the signature.
func Parse(data []byte) (Manifest, []byte, []byte, error) {
	bad := func(format string, args ...any) (Manifest, []byte, []byte, error) {
		return Manifest{}, nil, nil, fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, args...))
	}
	if len(data) > MaxBytes {
		return bad("more than %d bytes", MaxBytes)
	}
	if len(data) == 0 || data[len(data)-1] != '\n' {
		return bad("must end with a newline")
	}
	i := bytes.LastIndex(data[:len(data)-1], []byte("\nsig "))
	if i < 0 {
		return bad("no sig line")
	}
	signed := data[:i+1]
	sig, err := base64.RawURLEncoding.DecodeString(string(data[i+5 : len(data)-1]))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return bad("the signature is not %d bytes of unpadded base64url", ed25519.SignatureSize)
	}
	lines := strings.Split(string(signed[:len(signed)-1]), "\n")
	if len(lines) < 7 || lines[0] != Magic {
		return bad("must start with %q and 6 header lines", Magic)
	}
	field := func(n int, name string) (string, bool) {
		v, ok := strings.CutPrefix(lines[n], name+" ")
		return v, ok
	}
	var m Manifest
	var ok bool
	if m.KeyID, ok = field(1, "key"); !ok {
		return bad("line 2 must be key")
	}
	if m.ID, ok = field(2, "id"); !ok {
		return bad("line 3 must be id")
	}
	if m.Rendition, ok = field(3, "rendition"); !ok {
		return bad("line 4 must be rendition")
	}
	s, ok := field(4, "seq")
	if !ok {
		return bad("line 5 must be seq")
	}
	if m.Seq, err = parseUint(s); err != nil {
		return bad("seq: %v", err)
	}
	if s, ok = field(5, "time"); !ok {
		return bad("line 6 must be time")
	}
	ms, err := parseUint(s)
	if err != nil || ms > 1<<53 {
		return bad("time must be unix milliseconds")
	}
	m.Time = time.UnixMilli(int64(ms)).UTC()
	switch lines[6] {
	case "ended 0":
	case "ended 1":
		m.Ended = true
	default:
		return bad("line 7 must be ended 0 or ended 1")
	}
	if len(lines)-7 > MaxEntries {
		return bad("more than %d entries", MaxEntries)
	}
	m.Entries = make([]Entry, 0, len(lines)-7)
	for n, l := range lines[7:] {
		parts := strings.Split(l, " ")
		if len(parts) == 3 && parts[0] == KindGap {
			ms, err := parseUint(parts[2])
			if err != nil || ms > uint64(maxDuration/time.Millisecond) {
				return bad("line %d: bad duration", n+8)
			}
			m.Entries = append(m.Entries, Entry{Kind: KindGap, URI: parts[1], Duration: time.Duration(ms) * time.Millisecond})
			continue
		}
		if !(len(parts) == 4 && parts[0] == KindInit) && !(len(parts) == 5 && (parts[0] == KindSegment || parts[0] == KindPart)) {
			return bad("line %d: want init <uri> <size> <sha256>, seg <uri> <size> <sha256> <ms>, part <uri> <size> <sha256> <ms> or gap <uri> <ms>", n+8)
		}
		size, err := parseUint(parts[2])
		if err != nil || size > 1<<53 {
			return bad("line %d: bad size", n+8)
		}
		e := Entry{Kind: parts[0], URI: parts[1], Size: int64(size)}
		if len(parts[3]) != 64 || strings.ToLower(parts[3]) != parts[3] {
			return bad("line %d: the digest must be 64 lowercase hex digits", n+8)
		}
		if _, err := hex.Decode(e.SHA256[:], []byte(parts[3])); err != nil {
			return bad("line %d: the digest must be 64 lowercase hex digits", n+8)
		}
		if len(parts) == 5 {
			ms, err := parseUint(parts[4])
			if err != nil || ms > uint64(maxDuration/time.Millisecond) {
				return bad("line %d: bad duration", n+8)
			}
			e.Duration = time.Duration(ms) * time.Millisecond
		}
		m.Entries = append(m.Entries, e)
	}
	if err := m.check(); err != nil {
		return bad("%v", err)
	}
	return m, signed, sig, nil
}

// parseUint parses a canonical decimal (no sign, no leading zeros).
func parseUint(s string) (uint64, error) {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return 0, errors.New("not a canonical decimal")
	}
	return strconv.ParseUint(s, 10, 64)
}

// Verify parses data and checks its signature with the key it names, which
// keys must hold (by KeyID).
func Verify(data []byte, keys map[string]ed25519.PublicKey) (Manifest, error) {
	m, signed, sig, err := Parse(data)
	if err != nil {
		return Manifest{}, err
	}
	pub, ok := keys[m.KeyID]
	if !ok || len(pub) != ed25519.PublicKeySize {
		return Manifest{}, fmt.Errorf("%w %s", ErrUnknownKey, m.KeyID)
	}
	if !ed25519.Verify(pub, signed, sig) {
		return Manifest{}, ErrBadSignature
	}
	return m, nil
}

// Check compares data, an object's bytes, with the entry for it. A gap
// matches nothing: it was never written.
func (e Entry) Check(data []byte) error {
	if e.Kind == KindGap {
		return fmt.Errorf("manifest: %s is a gap: it has no bytes", e.URI)
	}
	if int64(len(data)) != e.Size {
		return fmt.Errorf("manifest: %s is %d bytes, the manifest says %d", e.URI, len(data), e.Size)
	}
	if sha256.Sum256(data) != e.SHA256 {
		return fmt.Errorf("manifest: %s does not match its SHA-256", e.URI)
	}
	return nil
}

// Object is an object a media playlist references.
type Object struct {
	Kind     string // KindInit, KindSegment or KindPart
	URI      string
	Duration time.Duration // segments: EXTINF, parts: DURATION, rounded to the millisecond
	// Gap: a segment the playlist marks EXT-X-GAP (its manifest entry is
	// a KindGap).
	Gap bool
}

// PlaylistObjects lists the initialization sections, partial segments and
// segments (gaps marked) of a media playlist in order (each init section once; preload
// hints are not objects: they do not exist yet), with the sequence
// number the next segment would have and whether the playlist ended. URIs
// are returned as written; only relative file names are manifest entries.
func PlaylistObjects(data []byte) (objs []Object, next uint64, ended bool) {
	seen := map[string]bool{}
	var seq uint64
	var dur time.Duration
	gap := false
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "#EXTINF:"):
			v, _, _ := strings.Cut(strings.TrimPrefix(line, "#EXTINF:"), ",")
			if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && f < maxDuration.Seconds() {
				dur = time.Duration(math.Round(f*1000)) * time.Millisecond
			}
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			if n, err := strconv.ParseUint(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64); err == nil {
				seq = n
			}
		case strings.HasPrefix(line, "#EXT-X-MAP:"):
			if uri := attr(line, "URI"); uri != "" && !seen[uri] {
				seen[uri] = true
				objs = append(objs, Object{Kind: KindInit, URI: uri})
			}
		case strings.HasPrefix(line, "#EXT-X-PART:"):
			if uri := attr(line, "URI"); uri != "" {
				objs = append(objs, Object{Kind: KindPart, URI: uri, Duration: plainAttrDuration(line, "DURATION")})
			}
		case line == "#EXT-X-ENDLIST":
			ended = true
		case line == "#EXT-X-GAP":
			gap = true
		case line[0] == '#':
		default:
			objs = append(objs, Object{Kind: KindSegment, URI: line, Duration: dur, Gap: gap})
			dur, gap = 0, false
			seq++
		}
	}
	return objs, seq, ended
}

// plainAttrDuration reads an unquoted decimal attribute in seconds.
func plainAttrDuration(line, name string) time.Duration {
	_, rest, ok := strings.Cut(line, ":")
	if !ok {
		return 0
	}
	for a := range strings.SplitSeq(rest, ",") {
		if v, ok := strings.CutPrefix(a, name+"="); ok {
			if f, err := strconv.ParseFloat(v, 64); err == nil && f >= 0 && f < maxDuration.Seconds() {
				return time.Duration(math.Round(f*1000)) * time.Millisecond
			}
		}
	}
	return 0
}

// attr returns the quoted attribute name of a tag line.
func attr(line, name string) string {
	i := strings.Index(line, name+`="`)
	if i < 0 {
		return ""
	}
	rest := line[i+len(name)+2:]
	j := strings.IndexByte(rest, '"')
	if j < 0 {
		return ""
	}
	return rest[:j]
}

// Tail returns the last n segments of objs (in order, as PlaylistObjects
// lists them), each preceded by the initialization section it uses when
// that differs from the previous segment's.
func Tail(objs []Object, n int) []Object {
	segs := 0
	start := len(objs)
	for start > 0 && segs < n {
		start--
		if objs[start].Kind == KindSegment {
			segs++
		}
	}
	init := ""
	for i := start - 1; i >= 0; i-- {
		if objs[i].Kind == KindInit {
			init = objs[i].URI
			break
		}
	}
	var out []Object
	if init != "" && (start >= len(objs) || objs[start].Kind != KindInit) {
		out = append(out, Object{Kind: KindInit, URI: init})
	}
	return append(out, objs[start:]...)
}
