package nodeproto

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/shoal-video/shoal/internal/ids"
)

// The worker protocol: a remote VOD worker (`shoal worker` with
// SHOAL_ORIGIN_URL) joins like an edge, with role "worker", and then does
// its jobs over HTTP, never touching Redis or the origin's disk:
//
//	POST /v1/worker/claim                      {}             -> 200 WorkerJob, 204 no job now
//	GET  /v1/worker/jobs/<job>/source          (Range)        -> 200/206 the source's bytes
//	POST /v1/worker/jobs/<job>/progress        Progress       -> 204, 410 the job is gone
//	PUT  /v1/worker/jobs/<job>/files/<path>    the file       -> 204
//	POST /v1/worker/jobs/<job>/complete        Complete       -> 200 Completed, 410, 422 refused
//	POST /v1/worker/jobs/<job>/fail            Failure        -> 200 Failed, 410
//
// Every request carries the node token (Authorization: Bearer) and is
// signed with the node key: SignatureHeader holds the ed25519 signature
// of WorkerMessage (the method, the request target, the node id, the time
// and the body's SHA-256 and size), NodeHeader the node id and the time.
// The origin refuses a request whose node is not joined as a worker, is
// quarantined, or joined with another token (or whose token was revoked),
// whose signature does not verify with the node's registered key, or whose
// time is more than MaxSkew from its clock. A PUT declares its body's
// SHA-256 (ContentSHA256Header) and length before sending it: both are
// signed, and the origin keeps the file only if the bytes match.
//
// A job is named by a JobRef ("<video>.<attempt>.<queue entry>"): the
// origin claimed it from its job queue for the node (the consumer is the
// node id), and only that node may work on that attempt. A job the node
// no longer holds (it stopped reporting progress for the queue's idle
// timeout and the job went to another worker, or the video was deleted)
// is answered 410 Gone: the worker stops and discards its work.

// Worker protocol headers.
const (
	// NodeHeader is "<node id> <unix seconds>": who signs the request, and
	// when.
	NodeHeader = "Shoal-Node"
	// ContentSHA256Header is the hex SHA-256 of the request's body.
	ContentSHA256Header = "Shoal-Content-SHA256"
)

// WorkerPrefix is the path prefix of the worker protocol.
const WorkerPrefix = "/v1/worker"

// Bounds of what a worker may send.
const (
	// MaxOutputFileBytes is the largest output file a worker may upload
	// (a segment or an initialization section).
	MaxOutputFileBytes = 256 << 20
	// MaxTextFileBytes is the largest playlist, storyboard or poster.
	MaxTextFileBytes = 16 << 20
	// MaxOutputFiles is the most files one job's output may have.
	MaxOutputFiles = 200_000
	// MaxCompleteBytes bounds the body of a completion (its manifest).
	MaxCompleteBytes = 32 << 20
	// MaxMessageBytes bounds the other JSON bodies.
	MaxMessageBytes = 16 << 10
	// MaxRenditions is the most renditions an output may have.
	MaxRenditions = 16
	// MaxFailureMessage is the longest failure message kept.
	MaxFailureMessage = 1000
	// MaxOutputDuration bounds a completion's duration (a VOD source may
	// last 12 hours).
	MaxOutputDuration = 13 * time.Hour
)

// Error codes of the worker protocol's JSON errors, besides the API's.
const (
	CodeJobGone        = "job_gone"        // 410: the node no longer holds the job
	CodeNotYourJob     = "not_your_job"    // 403: another node holds it
	CodeOutputRejected = "output_rejected" // 422: the output failed the origin's checks
	CodeBadOutputPath  = "bad_output_path" // 400: not a file of a VOD tree
	CodeHashMismatch   = "hash_mismatch"   // 400: the body is not what its header declared
	CodeTooLarge       = "payload_too_large"
)

// WorkerMessage is the byte string a worker request's signature covers:
// target is the path and query as sent, bodySHA256 the hex SHA-256 of the
// body (that of no bytes for a GET) and size its length.
func WorkerMessage(method, target, nodeID string, unix int64, bodySHA256 string, size int64) []byte {
	return []byte("shoal-worker-v1\n" + method + "\n" + target + "\n" + nodeID + "\n" +
		strconv.FormatInt(unix, 10) + "\n" + bodySHA256 + "\n" + strconv.FormatInt(size, 10))
}

// EmptySHA256 is the hex SHA-256 of no bytes.
var EmptySHA256 = hexSHA256(nil)

func hexSHA256(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// SignWorkerRequest sets the headers that sign req, sent by the node whose
// key is priv at time now, with a body of size bytes whose hex SHA-256 is
// bodySHA256. target is the request's path and query as the origin
// receives them.
func SignWorkerRequest(req *http.Request, priv ed25519.PrivateKey, target, bodySHA256 string, size int64, now time.Time) {
	id := NodeID(priv.Public().(ed25519.PublicKey))
	unix := now.Unix()
	req.Header.Set(NodeHeader, id+" "+strconv.FormatInt(unix, 10))
	req.Header.Set(ContentSHA256Header, bodySHA256)
	req.Header.Set(SignatureHeader, Sign(priv, WorkerMessage(req.Method, target, id, unix, bodySHA256, size)))
}

// ClaimedNode is what a worker request's NodeHeader says, before the
// signature is checked.
type ClaimedNode struct {
	ID   string
	Time time.Time
	unix int64
}

// ParseNodeHeader reads NodeHeader.
func ParseNodeHeader(h http.Header) (ClaimedNode, error) {
	v := h.Values(NodeHeader)
	if len(v) != 1 {
		return ClaimedNode{}, fmt.Errorf("send one %s header: \"<node id> <unix seconds>\"", NodeHeader)
	}
	id, ts, ok := strings.Cut(v[0], " ")
	unix, err := strconv.ParseInt(ts, 10, 64)
	if !ok || !ValidNodeID(id) || err != nil || unix < 0 || unix > 1<<40 {
		return ClaimedNode{}, fmt.Errorf("%s must be \"<node id> <unix seconds>\"", NodeHeader)
	}
	return ClaimedNode{ID: id, Time: time.Unix(unix, 0), unix: unix}, nil
}

// VerifyWorkerRequest checks the signature of a request that NodeHeader
// says node c sent, against the node's key pub: target, bodySHA256 and size
// as in WorkerMessage.
func (c ClaimedNode) VerifyWorkerRequest(pub ed25519.PublicKey, method, target, bodySHA256 string, size int64, sig string) error {
	return Verify(pub, WorkerMessage(method, target, c.ID, c.unix, bodySHA256, size), sig)
}

// ValidNodeID checks the shape of a node id (NodeID).
func ValidNodeID(id string) bool {
	if len(id) != 20 {
		return false
	}
	for _, ch := range id {
		if (ch < 'a' || ch > 'z') && (ch < '2' || ch > '7') {
			return false
		}
	}
	return true
}

// ValidSHA256 checks a lower-case hex SHA-256.
func ValidSHA256(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// JobRef names one attempt at a VOD job: "<video id>.<attempt>.<queue entry id>".
type JobRef struct {
	VideoID string
	Attempt int
	// Entry is the job's entry in the queue (a Redis stream id).
	Entry string
}

func (j JobRef) String() string {
	return j.VideoID + "." + strconv.Itoa(j.Attempt) + "." + j.Entry
}

var jobRefRe = regexp.MustCompile(`^([a-z0-9]{1,64})\.([1-9][0-9]{0,3})\.([0-9]{1,20}-[0-9]{1,20})$`)

// ParseJobRef reads a JobRef.
func ParseJobRef(s string) (JobRef, error) {
	m := jobRefRe.FindStringSubmatch(s)
	if m == nil {
		return JobRef{}, errors.New(`a job is "<video id>.<attempt>.<queue entry>", as the claim answered`)
	}
	n, _ := strconv.Atoi(m[2])
	return JobRef{VideoID: m[1], Attempt: n, Entry: m[3]}, nil
}

// WorkerJob is a claimed job: what the worker transcodes, how, and where
// it gets the source.
type WorkerJob struct {
	Job     string `json:"job"` // a JobRef
	VideoID string `json:"video_id"`
	Attempt int    `json:"attempt"`
	// Ladder is the ladder to transcode to (media.ParseLadder): the
	// video's own, or the origin's default; the renditions are its rungs
	// for the source's height.
	Ladder                 string  `json:"ladder"`
	Preset                 string  `json:"preset"`
	SegmentDurationSeconds float64 `json:"segment_duration_seconds"`
	SourceBytes            int64   `json:"source_bytes"`
	// SourceURL is where the source is fetched: a path on the origin that
	// answered the claim (signed like every request; ranged, so that a
	// download resumes), or an absolute URL.
	SourceURL string `json:"source_url"`
	// SourcePresignedURL, when set, is a presigned URL of the source in
	// the origin's object store, fetched without signing; SourceURL
	// is the fallback.
	SourcePresignedURL string `json:"source_presigned_url,omitempty"`
	// ProgressIntervalSeconds is how often the worker reports progress:
	// a job not reported for the queue's idle timeout goes to another
	// worker.
	ProgressIntervalSeconds float64 `json:"progress_interval_seconds"`
	// MaxFileBytes and MaxOutputBytes bound one output file and the whole
	// output.
	MaxFileBytes   int64 `json:"max_file_bytes"`
	MaxOutputBytes int64 `json:"max_output_bytes"`
}

// Check checks what a worker trusts of a claimed job before it names files
// after it: a JobRef, whose video is VideoID (a valid id: the worker's
// scratch directory and output tree are named after it) and whose attempt
// is Attempt, and a source to fetch.
func (j WorkerJob) Check() error {
	ref, err := ParseJobRef(j.Job)
	switch {
	case err != nil:
		return fmt.Errorf(`"job": %w`, err)
	case j.VideoID != ref.VideoID || !ids.Valid(j.VideoID):
		return fmt.Errorf(`"video_id" %q is not the job's video %q`, clipMessage(j.VideoID), ref.VideoID)
	case j.Attempt != ref.Attempt:
		return fmt.Errorf(`"attempt" %d is not the job's attempt %d`, j.Attempt, ref.Attempt)
	case j.SourceURL == "":
		return errors.New(`"source_url" is missing`)
	case j.SourceBytes < 0:
		return fmt.Errorf(`"source_bytes" must not be negative, got %d`, j.SourceBytes)
	}
	return nil
}

// ClaimRequest is the body of a claim.
type ClaimRequest struct {
	// VODBusy, in a live claim, is how many of the worker's advertised
	// ladders its VOD jobs take now: the origin hands it live ladders
	// only while it has room beside them.
	VODBusy int `json:"vod_busy,omitempty"`
}

// MaxLadders bounds the ladders a worker may say it runs.
const MaxLadders = 1024

// Progress is the body of a progress report: the share of the source
// done, in percent (0 to 100).
type Progress struct {
	Progress int `json:"progress"`
}

// Failure is the body of a failure report. Permanent says the source is
// not a video the worker can transcode; otherwise the failure is worth
// another attempt.
type Failure struct {
	Error     string `json:"error"`
	Permanent bool   `json:"permanent"`
}

// Failed answers a failure report: whether the job goes back in the queue.
type Failed struct {
	Retry bool `json:"retry"`
}

// Complete is a job's output manifest, signed by the worker with the
// request that sends it: every file it uploaded (its path in the video's
// HLS tree, size and SHA-256), the output's duration and renditions. The
// origin publishes the output only if the files it received are exactly
// these and the output passes its checks.
type Complete struct {
	Job             string       `json:"job"`
	DurationSeconds float64      `json:"duration_seconds"`
	Renditions      []Rendition  `json:"renditions"`
	Files           []OutputFile `json:"files"`
}

// Rendition is one video rendition of an output.
type Rendition struct {
	Name    string `json:"name"`
	Width   int    `json:"width"`
	Height  int    `json:"height"`
	Bitrate int    `json:"bitrate"`
}

// OutputFile is one file of an output.
type OutputFile struct {
	Path   string `json:"path"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// Completed answers a completion that the origin published.
type Completed struct {
	Status string `json:"status"` // "ready", or CompletionChecking (202)
}

// CompletionChecking is the status of a completion whose checks go on
// (202): the worker sends the same manifest again to wait for them.
const CompletionChecking = "checking"

// ErrStillChecking is the origin's answer (202) to a completion request
// whose checks outlast its wait; they go on.
var ErrStillChecking = &WorkerError{Status: http.StatusAccepted, Code: CompletionChecking,
	Message: "the output is still being checked: send the same manifest again to wait for the answer"}

// Duration is the output's duration.
func (c Complete) Duration() time.Duration {
	return time.Duration(c.DurationSeconds * float64(time.Second))
}

// DecodeClaim decodes and checks a claim's body.
func DecodeClaim(data []byte) (ClaimRequest, error) {
	var c ClaimRequest
	if err := decodeStrict(data, &c, MaxMessageBytes); err != nil {
		return ClaimRequest{}, err
	}
	if c.VODBusy < 0 || c.VODBusy > MaxLadders {
		return ClaimRequest{}, fmt.Errorf(`"vod_busy" must be between 0 and %d, got %d`, MaxLadders, c.VODBusy)
	}
	return c, nil
}

// DecodeProgress decodes and checks a progress report's body.
func DecodeProgress(data []byte) (Progress, error) {
	var p Progress
	if err := decodeStrict(data, &p, MaxMessageBytes); err != nil {
		return Progress{}, err
	}
	if p.Progress < 0 || p.Progress > 100 {
		return Progress{}, fmt.Errorf(`"progress" must be between 0 and 100, got %d`, p.Progress)
	}
	return p, nil
}

// DecodeFailure decodes and checks a failure report's body.
func DecodeFailure(data []byte) (Failure, error) {
	var f Failure
	if err := decodeStrict(data, &f, MaxMessageBytes); err != nil {
		return Failure{}, err
	}
	if strings.TrimSpace(f.Error) == "" {
		return Failure{}, errors.New(`"error" must say what went wrong`)
	}
	if len(f.Error) > MaxFailureMessage || !utf8.ValidString(f.Error) {
		return Failure{}, fmt.Errorf(`"error" must be UTF-8 text of at most %d bytes`, MaxFailureMessage)
	}
	return f, nil
}

// DecodeComplete decodes and checks a completion's body: a job, a
// plausible duration, 1 to MaxRenditions renditions with distinct names and
// sane figures, and 1 to MaxOutputFiles files, each a distinct path of a
// VOD tree (CheckOutputPath) with a size and a SHA-256.
func DecodeComplete(data []byte) (Complete, error) {
	var c Complete
	if err := decodeStrict(data, &c, MaxCompleteBytes); err != nil {
		return Complete{}, err
	}
	if _, err := ParseJobRef(c.Job); err != nil {
		return Complete{}, fmt.Errorf(`"job": %w`, err)
	}
	if math.IsNaN(c.DurationSeconds) || c.DurationSeconds <= 0 || c.DurationSeconds > MaxOutputDuration.Seconds() {
		return Complete{}, fmt.Errorf(`"duration_seconds" must be above 0 and at most %g`, MaxOutputDuration.Seconds())
	}
	if len(c.Renditions) == 0 || len(c.Renditions) > MaxRenditions {
		return Complete{}, fmt.Errorf(`"renditions" must list 1 to %d renditions`, MaxRenditions)
	}
	names := map[string]bool{}
	for i, r := range c.Renditions {
		switch {
		case !ids.Valid(r.Name) || r.Name == AudioRendition:
			return Complete{}, fmt.Errorf(`renditions[%d]: "name" must be a rendition name such as "720p"`, i)
		case names[r.Name]:
			return Complete{}, fmt.Errorf(`renditions[%d]: %q is listed twice`, i, r.Name)
		case r.Width < 2 || r.Width > 8192 || r.Height < 2 || r.Height > 8192:
			return Complete{}, fmt.Errorf(`renditions[%d]: "width" and "height" must be between 2 and 8192`, i)
		case r.Bitrate < 1 || r.Bitrate > 1_000_000_000:
			return Complete{}, fmt.Errorf(`renditions[%d]: "bitrate" must be between 1 and 1000000000`, i)
		}
		names[r.Name] = true
	}
	if len(c.Files) == 0 || len(c.Files) > MaxOutputFiles {
		return Complete{}, fmt.Errorf(`"files" must list 1 to %d files`, MaxOutputFiles)
	}
	paths := make(map[string]bool, len(c.Files))
	for i, f := range c.Files {
		if err := CheckOutputPath(f.Path); err != nil {
			return Complete{}, fmt.Errorf("files[%d]: %w", i, err)
		}
		if paths[f.Path] {
			return Complete{}, fmt.Errorf("files[%d]: %q is listed twice", i, f.Path)
		}
		paths[f.Path] = true
		if limit := MaxFileBytes(f.Path); f.Size < 0 || f.Size > limit {
			return Complete{}, fmt.Errorf(`files[%d]: "size" must be between 0 and %d`, i, limit)
		}
		if !ValidSHA256(f.SHA256) {
			return Complete{}, fmt.Errorf(`files[%d]: "sha256" must be 64 lower-case hex digits`, i)
		}
	}
	return c, nil
}

// decodeStrict decodes data, at most max bytes, into v: one JSON object,
// no unknown field, nothing after it.
func decodeStrict(data []byte, v any, max int) error {
	if len(data) > max {
		return fmt.Errorf("the body is larger than %d bytes", max)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("the body is not the JSON object expected: %s", clipMessage(err.Error()))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return errors.New("the body must be a single JSON object with nothing after it")
	}
	return nil
}

func clipMessage(s string) string {
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.ToValidUTF8(s, "?")
}

// AudioRendition is the directory of a VOD tree's audio.
const AudioRendition = "audio"

// The names of a VOD tree's files: next to master.m3u8 the poster and the
// storyboard; in each rendition's directory (a ladder rung, or "audio")
// its playlists, initialization sections and fMP4 segments, as the
// packager names them.
var (
	topFileRe       = regexp.MustCompile(`^(master\.m3u8|poster\.jpg|storyboard\.vtt|storyboard-[0-9]{1,6}\.jpg)$`)
	renditionFileRe = regexp.MustCompile(`^(index\.m3u8|recording\.m3u8|[a-z0-9][a-z0-9-]{0,63}\.(m4s|mp4))$`)
)

// MaxFileBytes is the largest file p (a path CheckOutputPath accepts) may
// be: MaxOutputFileBytes for media (.m4s, .mp4), MaxTextFileBytes for the
// rest.
func MaxFileBytes(p string) int64 {
	if strings.HasSuffix(p, ".m4s") || strings.HasSuffix(p, ".mp4") {
		return MaxOutputFileBytes
	}
	return MaxTextFileBytes
}

// CheckOutputPath checks that p names a file of a VOD output tree, relative
// to the video's directory: "master.m3u8", "poster.jpg", "storyboard.vtt",
// "storyboard-<n>.jpg", or "<rendition>/<file>" with a rendition name
// (lower-case letters and digits) and the packager's file names
// (index.m3u8, recording.m3u8, <name>.mp4, <name>.m4s). Nothing else
// (no "..", no other directory, no other name) is.
func CheckOutputPath(p string) error {
	dir, file, nested := strings.Cut(p, "/")
	switch {
	case !nested && topFileRe.MatchString(p):
		return nil
	case nested && ids.Valid(dir) && renditionFileRe.MatchString(file):
		return nil
	}
	q := p
	if len(q) > 80 {
		q = q[:80] + "..."
	}
	return fmt.Errorf("%q is not a file of a VOD output (master.m3u8, poster.jpg, storyboard.vtt, storyboard-<n>.jpg, or <rendition>/index.m3u8, recording.m3u8, <name>.mp4, <name>.m4s)",
		strings.ToValidUTF8(q, "?"))
}
