package remote

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/grafov/m3u8"

	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// output is a worker's staged output and what the origin knows to check
// it with.
type output struct {
	dir      string // the staged tree (the video's directory)
	manifest nodeproto.Complete
	// rungs are the renditions the output must have: the ladder's rungs
	// for the source's height, as a local worker makes them.
	rungs                     media.Ladder
	sourceWidth, sourceHeight int
	// source is the source's duration, as the upload's probe found it.
	source  time.Duration
	segment time.Duration
	// frameRate is the source's, as the upload's probe guessed it (0:
	// unknown): it caps the frames credited per segment.
	frameRate float64
	// sample re-checks a share of the segments; nil: none.
	sample *sampler
}

// rejection is a check an output failed: it is refused for reason.
// verify: it was the sampled re-check (it counts towards quarantine).
type rejection struct {
	reason string
	verify bool
}

func (r *rejection) Error() string { return r.reason }

func reject(format string, args ...any) error {
	return &rejection{reason: fmt.Sprintf(format, args...)}
}

// checked is what the checks of an output found: what the finished job
// records, the pixels of its video renditions (width x height x frames,
// summed: the worker's credit) and how many segments the sampled re-check
// passed.
type checked struct {
	routing.JobOutcome
	pixels   int64
	verified int
	// playlists are the playlists to publish, by path, written by the
	// origin from what it checked (rewrite.go).
	playlists map[string][]byte
}

// checkOutput runs the origin's checks of a worker's output, in order, and
// returns what the finished job records. The first check that fails
// refuses the output (a *rejection); a re-check the origin could not make
// is a *checkError; another error is the origin's own trouble (a file it
// cannot read). The checks:
//
//   - files: the staged files are exactly those of the worker's signed
//     manifest, each of the size and SHA-256 it declares;
//   - playlists: the master and every rendition's playlists parse, list
//     only files of the output, and every file is listed;
//   - renditions: they are exactly the ladder's rungs for the source's
//     height, with the rungs' heights and bitrates, widths in the source's
//     proportions;
//   - durations: each rendition lasts as long as the source, within one
//     segment;
//   - stills: the poster and storyboard are what they claim to be;
//   - segments: every video segment parses, with pictures of its
//     rendition's size, and lasts at most a minute (verifying.go);
//   - audio: every segment of the audio rendition is AAC-LC in fMP4 of
//     its initialization section, lasts as its playlist says, and the
//     segments follow each other from where the video starts
//     (verifying.go);
//   - samples: the sampled segments of each video rendition, transcoded
//     again by the origin, match (transcode/verify; verifying.go), and
//     the output has audio only if the source has. The costly check,
//     last: it relies on everything checked before.
func checkOutput(ctx context.Context, o output) (checked, error) {
	c := &checker{output: o, durations: map[string]time.Duration{}, segments: map[string][]videoSegment{},
		codecs: map[string]string{}, frames: map[string]int64{}, videoStart: -1}
	for _, check := range []func(context.Context) error{
		c.checkFiles,
		c.checkPlaylists,
		c.checkRenditions,
		c.checkDurations,
		c.checkStills,
		c.checkSegments,
		c.checkAudioSegments,
		c.checkPublished,
		c.checkSamples,
	} {
		if err := ctx.Err(); err != nil {
			return checked{}, err
		}
		if err := check(ctx); err != nil {
			return checked{}, err
		}
	}
	return checked{JobOutcome: c.outcome(), pixels: c.pixels, verified: c.verified, playlists: c.published}, nil
}

// checkPublished writes the playlists the origin will publish in place of
// the worker's (rewrite.go), from what the checks before found.
func (c *checker) checkPublished(context.Context) error {
	c.published = c.playlists()
	return nil
}

// checker holds what the checks learn as they go.
type checker struct {
	output
	files     map[string]nodeproto.OutputFile // the manifest's, by path
	variants  []variant                       // the master playlist's, in order
	audio     bool                            // the master has the audio group
	durations map[string]time.Duration        // each rendition's (audio too), from its playlist
	segments  map[string][]videoSegment       // each rendition's (audio too), in order
	pixels    int64                           // of the video renditions' segments
	verified  int                             // sampled segments that passed
	codecs    map[string]string               // each video rendition's, RFC 6381, from its SPS
	frames    map[string]int64                // each video rendition's, counted
	published map[string][]byte               // the playlists to publish (rewrite.go)
	// videoStart is the decode time of the first video segment of the
	// first rung, in fMP4 (90 kHz; -1: none), where the audio starts.
	videoStart int64
	// videoShown is when that segment's first frame is presented (90
	// kHz): where the sound of the source's first frame belongs.
	videoShown int64
	audioTrack audioTrack // the audio rendition's, once its segments are checked
}

// variant is a variant stream of the master playlist.
type variant struct {
	name          string
	width, height int
}

func (c *checker) path(rel string) string { return filepath.Join(c.dir, filepath.FromSlash(rel)) }

// checkFiles: the staged files are exactly the manifest's, byte for byte.
func (c *checker) checkFiles(ctx context.Context) error {
	c.files = make(map[string]nodeproto.OutputFile, len(c.manifest.Files))
	for _, f := range c.manifest.Files {
		c.files[f.Path] = f
	}
	staged := map[string]bool{}
	err := filepath.WalkDir(c.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) && p == c.dir {
				return nil // nothing uploaded
			}
			return err
		}
		if d.IsDir() {
			return nil
		}
		rel, err := filepath.Rel(c.dir, p)
		if err != nil {
			return err
		}
		staged[filepath.ToSlash(rel)] = true
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading the staged output: %w", err)
	}
	for _, f := range c.manifest.Files {
		if !staged[f.Path] {
			return reject("%s is in the manifest but was never uploaded", f.Path)
		}
	}
	var extra []string
	for p := range staged {
		if _, ok := c.files[p]; !ok {
			extra = append(extra, p)
		}
	}
	if len(extra) > 0 {
		slices.Sort(extra)
		return reject("%s was uploaded but is not in the manifest", extra[0])
	}
	for _, f := range c.manifest.Files {
		if err := ctx.Err(); err != nil {
			return err
		}
		size, sum, err := hashFile(c.path(f.Path))
		if err != nil {
			return fmt.Errorf("hashing %s: %w", f.Path, err)
		}
		if size != f.Size || sum != f.SHA256 {
			return reject("%s does not match the manifest: %d bytes with SHA-256 %s uploaded, the manifest says %d bytes with SHA-256 %s",
				f.Path, size, sum, f.Size, f.SHA256)
		}
	}
	return nil
}

var variantURIRe = regexp.MustCompile(`^([a-z0-9]{1,64})/index\.m3u8$`)

// checkPlaylists: the master playlist and the renditions' parse, and the
// output's files are exactly what they list.
func (c *checker) checkPlaylists(ctx context.Context) error {
	if _, ok := c.files["master.m3u8"]; !ok {
		return reject("the output has no master.m3u8")
	}
	data, err := os.ReadFile(c.path("master.m3u8"))
	if err != nil {
		return err
	}
	if i, bad := controlChar(data); bad {
		return reject("master.m3u8 has a control character (0x%02x) at byte %d", data[i], i)
	}
	if i, bad := unicodeLineBreak(data); bad {
		return reject("master.m3u8 has a line separator (U+2028 or U+2029) at byte %d", i)
	}
	pl, kind, err := m3u8.DecodeFrom(bytes.NewReader(data), true)
	if err != nil || kind != m3u8.MASTER {
		return reject("master.m3u8 is not a master playlist: %v", errOrKind(err, kind))
	}
	seen := map[string]bool{}
	for _, v := range pl.(*m3u8.MasterPlaylist).Variants {
		if v == nil {
			continue
		}
		m := variantURIRe.FindStringSubmatch(v.URI)
		if m == nil || m[1] == nodeproto.AudioRendition {
			return reject("master.m3u8 lists the variant %q: variants are <rendition>/index.m3u8", clip(v.URI))
		}
		if seen[m[1]] {
			return reject("master.m3u8 lists %s twice", m[1])
		}
		seen[m[1]] = true
		w, h, ok := parseResolution(v.Resolution)
		if !ok {
			return reject("master.m3u8 gives %s the resolution %q", m[1], clip(v.Resolution))
		}
		c.variants = append(c.variants, variant{name: m[1], width: w, height: h})
		for _, a := range v.Alternatives {
			if a == nil || a.URI == "" {
				continue
			}
			if a.Type != "AUDIO" || a.URI != nodeproto.AudioRendition+"/index.m3u8" {
				return reject("master.m3u8 lists the alternative %q of type %s: only the audio group, audio/index.m3u8, is made", clip(a.URI), clip(a.Type))
			}
			c.audio = true
		}
	}
	if len(c.variants) == 0 {
		return reject("master.m3u8 lists no variant")
	}
	dirs := map[string]bool{}
	for p := range c.files {
		if dir, _, nested := strings.Cut(p, "/"); nested {
			dirs[dir] = true
		}
	}
	renditions := make([]string, 0, len(c.variants)+1)
	for _, v := range c.variants {
		renditions = append(renditions, v.name)
	}
	if c.audio {
		renditions = append(renditions, nodeproto.AudioRendition)
	}
	for d := range dirs {
		if !slices.Contains(renditions, d) {
			return reject("%s/ is not a rendition master.m3u8 lists", d)
		}
	}
	for _, r := range renditions {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := c.checkRendition(r); err != nil {
			return err
		}
	}
	return nil
}

// checkRendition checks rendition r's playlists and files and records its
// duration.
func (c *checker) checkRendition(r string) error {
	index := r + "/index.m3u8"
	if _, ok := c.files[index]; !ok {
		return reject("%s is missing", index)
	}
	objs, err := c.mediaPlaylist(index)
	if err != nil {
		return err
	}
	listed := map[string]bool{index: true}
	var segments []string
	var d time.Duration
	init := ""
	for _, o := range objs {
		p := r + "/" + o.URI
		if strings.Contains(o.URI, "/") || nodeproto.CheckOutputPath(p) != nil || strings.HasSuffix(o.URI, ".m3u8") {
			return reject("%s lists %q: a rendition's playlist lists the files next to it", index, clip(o.URI))
		}
		if _, ok := c.files[p]; !ok {
			return reject("%s lists %s, which the output does not have", index, o.URI)
		}
		if listed[p] && o.Kind != manifest.KindInit {
			return reject("%s lists %s twice", index, o.URI)
		}
		switch {
		case o.Gap:
			return reject("%s has a gap at %s", index, o.URI)
		case o.Kind == manifest.KindSegment:
			if o.Duration <= 0 || o.Duration > c.segment*3/2 {
				return reject("%s gives %s the duration %s: a segment of this ladder lasts more than 0 and at most %s",
					index, clip(o.URI), seconds(o.Duration), seconds(c.segment*3/2))
			}
			segments = append(segments, o.URI)
			c.segments[r] = append(c.segments[r], videoSegment{uri: o.URI, duration: o.Duration, init: init})
			d += o.Duration
		case o.Kind == manifest.KindInit:
			if init != "" {
				return reject("%s lists the initialization sections %s and %s: a rendition has one", index, init, o.URI)
			}
			init = o.URI
		default:
			return reject("%s lists %s, which is not a segment or an initialization section", index, o.URI)
		}
		listed[p] = true
	}
	if len(segments) == 0 {
		return reject("%s lists no segment", index)
	}
	if most := c.maxSegments(); most > 0 && len(segments) > most {
		return reject("%s lists %d segments: a rendition of this source has at most %d", index, len(segments), most)
	}
	if rec := r + "/recording.m3u8"; c.files[rec].Path != "" {
		robjs, err := c.mediaPlaylist(rec)
		if err != nil {
			return err
		}
		var rsegs []string
		for _, o := range robjs {
			if o.Kind == manifest.KindSegment {
				rsegs = append(rsegs, o.URI)
			}
			if !listed[r+"/"+o.URI] {
				return reject("%s lists %q, which %s does not", rec, clip(o.URI), index)
			}
		}
		if !slices.Equal(rsegs, segments) {
			return reject("%s does not list the segments of %s", rec, index)
		}
		listed[rec] = true
	}
	for p := range c.files {
		if strings.HasPrefix(p, r+"/") && !listed[p] {
			return reject("%s is not listed by %s", p, index)
		}
	}
	c.durations[r] = d
	return nil
}

// maxSegments bounds a rendition's segments: twice the source's duration
// over the segment duration, and 4 (0: the source's duration is unknown;
// checkDurations bounds the output by its first rendition's then).
func (c *checker) maxSegments() int {
	if c.source <= 0 || c.segment <= 0 {
		return 0
	}
	return int(2*c.source/c.segment) + 4
}

// mediaPlaylist parses the media playlist rel strictly (a finished VOD
// playlist) and returns the objects it lists.
func (c *checker) mediaPlaylist(rel string) ([]manifest.Object, error) {
	data, err := os.ReadFile(c.path(rel))
	if err != nil {
		return nil, err
	}
	if i, bad := controlChar(data); bad {
		return nil, reject("%s has a control character (0x%02x) at byte %d", rel, data[i], i)
	}
	if i, bad := unicodeLineBreak(data); bad {
		return nil, reject("%s has a line separator (U+2028 or U+2029) at byte %d", rel, i)
	}
	pl, kind, err := m3u8.DecodeFrom(bytes.NewReader(data), true)
	if err != nil || kind != m3u8.MEDIA {
		return nil, reject("%s is not a media playlist: %v", rel, errOrKind(err, kind))
	}
	if !pl.(*m3u8.MediaPlaylist).Closed {
		return nil, reject("%s does not end (no EXT-X-ENDLIST)", rel)
	}
	// Read as the origin reads it to sign its manifests.
	objs, _, ended := manifest.PlaylistObjects(data)
	if !ended {
		return nil, reject("%s does not end (no EXT-X-ENDLIST)", rel)
	}
	return objs, nil
}

// checkRenditions: the renditions are the ladder's rungs for the source,
// in the manifest and in master.m3u8.
func (c *checker) checkRenditions(context.Context) error {
	want := make([]string, len(c.rungs))
	for i, r := range c.rungs {
		want[i] = r.Name()
	}
	got := make([]string, len(c.variants))
	for i, v := range c.variants {
		got[i] = v.name
	}
	claimed := make([]string, len(c.manifest.Renditions))
	for i, r := range c.manifest.Renditions {
		claimed[i] = r.Name
	}
	source := "a source of unknown height"
	if c.sourceHeight > 0 {
		source = fmt.Sprintf("a %dx%d source", c.sourceWidth, c.sourceHeight)
	}
	if !sameSet(got, want) {
		return reject("master.m3u8 lists the renditions %s; the ladder's rungs for %s are %s", strings.Join(got, ", "), source, strings.Join(want, ", "))
	}
	if !sameSet(claimed, want) {
		return reject("the manifest lists the renditions %s; the ladder's rungs for %s are %s", strings.Join(claimed, ", "), source, strings.Join(want, ", "))
	}
	for _, rung := range c.rungs {
		var r nodeproto.Rendition
		for _, x := range c.manifest.Renditions {
			if x.Name == rung.Name() {
				r = x
			}
		}
		var v variant
		for _, x := range c.variants {
			if x.name == rung.Name() {
				v = x
			}
		}
		switch {
		case r.Height != rung.Height || r.Bitrate != rung.Bitrate:
			return reject("rendition %s is %dp at %d b/s; the rung is %dp at %d b/s", r.Name, r.Height, r.Bitrate, rung.Height, rung.Bitrate)
		case v.width != r.Width || v.height != r.Height:
			return reject("master.m3u8 gives %s the resolution %dx%d, the manifest %dx%d", r.Name, v.width, v.height, r.Width, r.Height)
		}
		if c.sourceWidth > 0 && c.sourceHeight > 0 {
			exp := ffmpeg.EvenWidth(c.sourceWidth, c.sourceHeight, r.Height)
			if d := r.Width - exp; d > max(4, exp/50) || -d > max(4, exp/50) {
				return reject("rendition %s is %d pixels wide; a %dx%d source scaled to %d lines is %d", r.Name, r.Width, c.sourceWidth, c.sourceHeight, r.Height, exp)
			}
		}
	}
	return nil
}

// checkDurations: every rendition lasts as long as the source, within one
// segment, and so does the manifest's duration.
func (c *checker) checkDurations(context.Context) error {
	ref, what := c.source, "the source"
	if ref <= 0 {
		// The upload did not record it: the renditions must agree.
		ref, what = c.durations[c.variants[0].name], "rendition "+c.variants[0].name
	}
	far := func(d time.Duration) bool { return d-ref > c.segment || ref-d > c.segment }
	names := make([]string, 0, len(c.durations))
	for r := range c.durations {
		names = append(names, r)
	}
	slices.Sort(names)
	for _, r := range names {
		if d := c.durations[r]; far(d) {
			return reject("rendition %s lasts %s, %s %s: more than one segment (%s) apart", r, seconds(d), what, seconds(ref), seconds(c.segment))
		}
	}
	if d := c.manifest.Duration(); far(d) {
		return reject("the manifest says the output lasts %s, %s %s: more than one segment (%s) apart", seconds(d), what, seconds(ref), seconds(c.segment))
	}
	return nil
}

// The lines of a storyboard's cues, exactly as the VOD worker writes them
// (transcode/vod's storyboard.go): a timing, then the sprite's name and
// the frame's place in it. Nothing else is accepted: the player resolves
// the name against the storyboard's URL and adds the playback token.
var (
	vttTimingRe  = regexp.MustCompile(`^([0-9]{2}):([0-5][0-9]):([0-5][0-9])\.([0-9]{3}) --> ([0-9]{2}):([0-5][0-9]):([0-5][0-9])\.([0-9]{3})$`)
	vttPayloadRe = regexp.MustCompile(`^(storyboard-[0-9]{1,6}\.jpg)#xywh=[0-9]{1,5},[0-9]{1,5},[0-9]{1,5},[0-9]{1,5}$`)
)

// parseStoryboard checks a storyboard track line by line and returns the
// sprites its cues name.
func parseStoryboard(vtt []byte) (map[string]bool, error) {
	lines := strings.Split(string(vtt), "\n")
	if lines[0] != "WEBVTT" {
		return nil, reject("storyboard.vtt does not begin with the line WEBVTT")
	}
	named := map[string]bool{}
	ms := func(m []string) int64 {
		var n [4]int64
		for i := range n {
			n[i], _ = strconv.ParseInt(m[i], 10, 64)
		}
		return ((n[0]*60+n[1])*60+n[2])*1000 + n[3]
	}
	for i := 1; i < len(lines); i++ {
		if lines[i] == "" {
			continue
		}
		t := vttTimingRe.FindStringSubmatch(lines[i])
		if t == nil {
			return nil, reject("storyboard.vtt line %d is %q: a cue's timing (hh:mm:ss.mmm --> hh:mm:ss.mmm) was expected", i+1, clip(lines[i]))
		}
		if ms(t[1:5]) >= ms(t[5:9]) {
			return nil, reject("storyboard.vtt line %d: the cue ends before it begins", i+1)
		}
		if i+1 >= len(lines) {
			return nil, reject("storyboard.vtt ends after a cue's timing")
		}
		i++
		p := vttPayloadRe.FindStringSubmatch(lines[i])
		if p == nil {
			return nil, reject("storyboard.vtt line %d is %q: a cue names a sprite of the output (storyboard-N.jpg#xywh=x,y,w,h)", i+1, clip(lines[i]))
		}
		named[p[1]] = true
		if i+1 < len(lines) && lines[i+1] != "" {
			return nil, reject("storyboard.vtt line %d: a cue has one line", i+2)
		}
	}
	return named, nil
}

// checkStills: the poster and the storyboard's sprites are JPEG, the
// storyboard is WebVTT naming exactly the sprites the output has.
func (c *checker) checkStills(context.Context) error {
	isJPEG := func(rel string) (bool, error) {
		f, err := os.Open(c.path(rel))
		if err != nil {
			return false, err
		}
		defer f.Close()
		var b [3]byte
		n, _ := f.Read(b[:])
		return n == 3 && b == [3]byte{0xff, 0xd8, 0xff}, nil
	}
	var sprites []string
	for p := range c.files {
		if strings.HasPrefix(p, "storyboard-") {
			sprites = append(sprites, p)
		}
	}
	for _, p := range append([]string{"poster.jpg"}, sprites...) {
		if _, ok := c.files[p]; !ok {
			continue
		}
		ok, err := isJPEG(p)
		if err != nil {
			return err
		}
		if !ok {
			return reject("%s is not a JPEG picture", p)
		}
	}
	if _, ok := c.files["storyboard.vtt"]; !ok {
		if len(sprites) > 0 {
			return reject("%s without storyboard.vtt", sprites[0])
		}
		return nil
	}
	vtt, err := os.ReadFile(c.path("storyboard.vtt"))
	if err != nil {
		return err
	}
	named, err := parseStoryboard(vtt)
	if err != nil {
		return err
	}
	for n := range named {
		if _, ok := c.files[n]; !ok {
			return reject("storyboard.vtt names %s, which the output does not have", n)
		}
	}
	for _, s := range sprites {
		if !named[s] {
			return reject("%s is not named by storyboard.vtt", s)
		}
	}
	return nil
}

// outcome is what the finished job records: the duration of the top
// rendition as its playlist says, the renditions in the ladder's order.
func (c *checker) outcome() routing.JobOutcome {
	out := routing.JobOutcome{Duration: c.durations[c.rungs[0].Name()]}
	for _, rung := range c.rungs {
		for _, r := range c.manifest.Renditions {
			if r.Name == rung.Name() {
				out.Renditions = append(out.Renditions, routing.VideoRendition{Name: r.Name, Width: r.Width, Height: r.Height, Bitrate: r.Bitrate})
			}
		}
	}
	_, out.Poster = c.files["poster.jpg"]
	_, out.Storyboard = c.files["storyboard.vtt"]
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

func parseResolution(s string) (int, int, bool) {
	ws, hs, ok := strings.Cut(s, "x")
	w, err1 := strconv.Atoi(ws)
	h, err2 := strconv.Atoi(hs)
	return w, h, ok && err1 == nil && err2 == nil && w > 0 && h > 0
}

func errOrKind(err error, kind m3u8.ListType) string {
	if err != nil {
		return clip(err.Error())
	}
	if kind == m3u8.MASTER {
		return "it is a master playlist"
	}
	return "it is a media playlist"
}

func seconds(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + " s" }

func clip(s string, n ...int) string {
	limit := 80
	if len(n) > 0 {
		limit = n[0]
	}
	if len(s) > limit {
		s = s[:limit] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
