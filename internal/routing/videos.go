package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
)

// Video statuses.
const (
	VideoWaiting    = "waiting"    // created, no source yet
	VideoProcessing = "processing" // source received, queued or being transcoded
	VideoReady      = "ready"      // playable
	VideoFailed     = "failed"     // see Error
)

// ErrConflict is returned when a request conflicts with the record's state,
// for example an upload to a video that already has a source.
var ErrConflict = errors.New("conflict")

// Video is an uploaded video and the state of its processing.
type Video struct {
	ID             string
	Title          string
	Status         string
	Progress       int // 0-100
	Error          string
	Duration       time.Duration // of the source once probed, of the output once ready
	Renditions     []VideoRendition
	Ladder         string // per-video ladder ("" = the worker's default)
	PlaybackPolicy string
	SourceBytes    int64
	// SourceWidth and SourceHeight are the source's picture size as the
	// upload's probe found it (0: not recorded, a video uploaded before
	// they were).
	SourceWidth  int
	SourceHeight int
	// SourceFrameRate is the source's frame rate as the upload's probe
	// guessed it (0: not recorded).
	SourceFrameRate float64
	Poster          bool // poster.jpg exists
	Storyboard      bool // storyboard.vtt and its sprite exist
	P2POff          bool // peer-assisted delivery turned off
	Attempts        int  // processing attempts started
	CreatedAt       time.Time
	UpdatedAt       time.Time

	// upload is how the source is arriving ("" none, "put", "tus:<id>",
	// "received" once complete).
	upload string
}

// HasSource tells whether a source upload has started or completed.
func (v Video) HasSource() bool { return v.upload != "" }

// HeldBy tells whether the video waits for its source and the upload how
// ("put" or "tus:<id>") holds its reservation.
func (v Video) HeldBy(how string) bool { return v.Status == VideoWaiting && v.upload == how }

// VideoRendition is one rung of a ready video.
type VideoRendition struct {
	Name    string `json:"name"`
	Width   int    `json:"width"`
	Height  int    `json:"height"`
	Bitrate int    `json:"bitrate"`
}

// VideoSpec is what a new video is created with.
type VideoSpec struct {
	Title          string
	Ladder         string
	PlaybackPolicy string // "" means PlaybackPublic; else PlaybackPublic or PlaybackSigned
	P2POff         bool   // peer-assisted delivery turned off
}

// VideoUpdate lists the fields to change; nil fields are left alone.
type VideoUpdate struct {
	Title *string
	P2P   *bool // false turns peer-assisted delivery off, true on
}

// VideoPage is a page of ListVideos: Next is the cursor of the following
// page, "" on the last one.
type VideoPage struct {
	Videos []Video
	Next   string
}

const (
	videoPrefix = "video:"
	videosIndex = "videos"

	fieldTitle       = "title"
	fieldStatus      = "status"
	fieldProgress    = "progress"
	fieldError       = "error"
	fieldDuration    = "duration"
	fieldRenditions  = "renditions"
	fieldUpload      = "upload"
	fieldSourceBytes = "source_bytes"
	fieldSourceW     = "source_width"
	fieldSourceH     = "source_height"
	fieldSourceFPS   = "source_fps"
	fieldPoster      = "poster"
	fieldStoryboard  = "storyboard"
	fieldAttempts    = "attempts"
	fieldUpdatedAt   = "updated_at"
)

func (s *Store) videoKey(id string) string { return s.k(videoPrefix) + id }

// CreateVideo creates a video waiting for its source.
func (s *Store) CreateVideo(ctx context.Context, spec VideoSpec) (Video, error) {
	t := now()
	v := Video{
		ID: ids.New(), Title: spec.Title, Status: VideoWaiting, Ladder: spec.Ladder,
		PlaybackPolicy: spec.PlaybackPolicy, P2POff: spec.P2POff, CreatedAt: t, UpdatedAt: t,
	}
	if v.PlaybackPolicy == "" {
		v.PlaybackPolicy = PlaybackPublic
	}
	if !ValidPlaybackPolicy(v.PlaybackPolicy) {
		return Video{}, errPlaybackPolicy(v.PlaybackPolicy)
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.videoKey(v.ID),
			fieldTitle, v.Title,
			fieldStatus, v.Status,
			fieldProgress, 0,
			fieldLadder, v.Ladder,
			fieldPlaybackPolicy, v.PlaybackPolicy,
			fieldP2P, p2pValue(v.P2POff),
			fieldCreatedAt, formatTime(t),
			fieldUpdatedAt, formatTime(t),
		)
		p.ZAdd(ctx, s.k(videosIndex), redis.Z{Score: float64(t.UnixMicro()), Member: v.ID})
		return nil
	})
	if err != nil {
		return Video{}, wrapErr("create video", err)
	}
	return v, nil
}

// GetVideo returns the video id, or ErrNotFound.
func (s *Store) GetVideo(ctx context.Context, id string) (Video, error) {
	f, err := s.rdb.HGetAll(ctx, s.videoKey(id)).Result()
	if err != nil {
		return Video{}, wrapErr("get video", err)
	}
	return s.decodeVideo(id, f)
}

// ListVideos returns up to limit videos, newest first, starting after the
// cursor (a page's Next; "" for the first page). A malformed cursor is an
// error that wraps ErrInvalidCursor.
func (s *Store) ListVideos(ctx context.Context, cursor string, limit int) (VideoPage, error) {
	if limit < 1 {
		limit = 1
	}
	maxScore, afterID := "+inf", ""
	if cursor != "" {
		score, id, ok := strings.Cut(cursor, "-")
		if _, err := strconv.ParseInt(score, 10, 64); !ok || err != nil || !ids.Valid(id) {
			return VideoPage{}, fmt.Errorf("%w: %q", ErrInvalidCursor, cursor)
		}
		maxScore, afterID = score, id
	}
	// Members with the cursor's score sort in reverse lexical order; those
	// not after the cursor are skipped, so fetch a little more than asked,
	// and more again while the skipped ones leave the page short (many
	// videos created in one microsecond).
	var page VideoPage
	var keep []redis.Z
	for offset := int64(0); len(keep) <= limit; {
		zs, err := s.rdb.ZRevRangeByScoreWithScores(ctx, s.k(videosIndex), &redis.ZRangeBy{
			Max: maxScore, Min: "-inf", Offset: offset, Count: int64(limit) + 32,
		}).Result()
		if err != nil {
			return VideoPage{}, wrapErr("list videos", err)
		}
		for _, z := range zs {
			id, _ := z.Member.(string)
			if afterID != "" && strconv.FormatInt(int64(z.Score), 10) == maxScore && id >= afterID {
				continue
			}
			keep = append(keep, z)
		}
		if int64(len(zs)) < int64(limit)+32 {
			break
		}
		offset += int64(len(zs))
	}
	if len(keep) > limit {
		last := keep[limit-1]
		page.Next = strconv.FormatInt(int64(last.Score), 10) + "-" + last.Member.(string)
		keep = keep[:limit]
	}
	idList := make([]string, len(keep))
	for i, z := range keep {
		idList[i] = z.Member.(string)
	}
	var err error
	if page.Videos, _, err = records(ctx, s, "list videos", s.k(videoPrefix), idList, s.decodeVideo); err != nil {
		return VideoPage{}, err
	}
	return page, nil
}

// ErrInvalidCursor is wrapped by ListVideos' error for a cursor it did not
// make.
var ErrInvalidCursor = errors.New("invalid cursor")

// UpdateVideo changes the fields set in u and returns the video. A change
// of its P2P flag tells the edges (an invalidation that keeps the policy)
// in the same transaction.
func (s *Store) UpdateVideo(ctx context.Context, id string, u VideoUpdate) (Video, error) {
	const op = "update video"
	key := s.videoKey(id)
	var v Video
	err := s.watchTx(ctx, op, func(tx *redis.Tx) error {
		f, err := tx.HGetAll(ctx, key).Result()
		if err != nil {
			return err
		}
		if v, err = s.decodeVideo(id, f); err != nil {
			return err
		}
		stamp := formatTime(now())
		v.UpdatedAt, _ = parseTime(stamp) // as a read gives it back
		set := []any{fieldUpdatedAt, stamp}
		if u.Title != nil {
			v.Title = *u.Title
			set = append(set, fieldTitle, v.Title)
		}
		p2pChanged := false
		if u.P2P != nil {
			p2pChanged = v.P2POff == *u.P2P
			v.P2POff = !*u.P2P
			set = append(set, fieldP2P, p2pValue(v.P2POff))
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, set...)
			if p2pChanged {
				s.addInvalidation(ctx, p, id, false, v.PlaybackPolicy == PlaybackSigned)
			}
			return nil
		})
		return err
	}, key)
	if err != nil {
		return Video{}, txErr(op, err)
	}
	return v, nil
}

// DeleteVideo deletes the video's record. A job still queued for it is
// dropped by the worker that picks it up; the caller removes the files.
func (s *Store) DeleteVideo(ctx context.Context, id string) error {
	var del *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		del = p.Del(ctx, s.videoKey(id))
		p.Del(ctx, s.p2pKey(id))
		p.ZRem(ctx, s.k(videosIndex), id)
		// Harmless for an unknown id: edges forget what they never had.
		s.addInvalidation(ctx, p, id, true, false)
		return nil
	})
	if err != nil {
		return wrapErr("delete video", err)
	}
	if del.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

// BeginUpload reserves the video's source for one upload, named how ("put"
// or "tus:<upload id>"). It fails with ErrNotFound for an unknown video and
// with an error wrapping ErrConflict when the video already has a source or
// an upload in progress.
func (s *Store) BeginUpload(ctx context.Context, id, how string) error {
	res, err := beginUploadScript.Run(ctx, s.rdb, []string{s.videoKey(id)}, how, formatTime(now()),
		s.leaseNow(), UploadLease.Milliseconds()).Result()
	if err != nil {
		return wrapErr("begin upload", err)
	}
	switch r := res.(string); r {
	case "ok":
		return nil
	case "missing":
		return ErrNotFound
	case "uploading":
		return fmt.Errorf("%w: an upload of this video's source is already in progress (a stalled one is given up after %s without progress)", ErrConflict, UploadLease)
	default:
		return fmt.Errorf("%w: this video already has a source (status %s); create a new video to upload another file", ErrConflict, r)
	}
}

// UploadLease is how long an upload's reservation lasts without progress
// (RenewUpload): a crashed or stalled client's is then taken over by the
// next upload instead of keeping the video in 409 forever.
const UploadLease = 10 * time.Minute

// RenewUpload extends the lease of the reservation how holds on video id.
// It reports false when the reservation is not how's any more: another
// upload holds the video now (the lease ran out and it was taken over), or
// the video is no longer waiting for its source (the one that took over
// finished); and ErrNotFound when the video was deleted.
func (s *Store) RenewUpload(ctx context.Context, id, how string) (bool, error) {
	res, err := renewUploadScript.Run(ctx, s.rdb, []string{s.videoKey(id)}, how, s.leaseNow(), UploadLease.Milliseconds()).Int()
	if err != nil {
		return false, wrapErr("renew upload", err)
	}
	if res == -2 {
		return false, ErrNotFound
	}
	return res == 1, nil
}

// A reservation is the video's upload field (who uploads) and upload_until
// (when its lease ends, unix ms on Redis's clock; an old record without it
// has none left). ARGV: 1 how, 2 updated_at, 3 leaseNow, 4 the lease (ms).
var beginUploadScript = redis.NewScript(luaNowMs + `
local v = redis.call('HMGET', KEYS[1], 'status', 'upload', 'upload_until')
if not v[1] then return 'missing' end
local now = nowms(ARGV[3])
if v[2] and v[2] ~= '' then
  if v[2] == 'received' then return v[1] end
  if (tonumber(v[3] or '0') or 0) > now then return 'uploading' end
end
if v[1] ~= 'waiting' then return v[1] end
redis.call('HSET', KEYS[1], 'upload', ARGV[1], 'upload_until', string.format('%d', now + tonumber(ARGV[4])), 'updated_at', ARGV[2])
return 'ok'`)

// ARGV: 1 how, 2 leaseNow, 3 the lease (ms). Answers 1 renewed, 0 not
// waiting, -1 held by another upload, -2 no such video.
var renewUploadScript = redis.NewScript(luaNowMs + `
local v = redis.call('HMGET', KEYS[1], 'status', 'upload')
if not v[1] then return -2 end
if v[1] ~= 'waiting' then return 0 end
if v[2] ~= ARGV[1] then return -1 end
redis.call('HSET', KEYS[1], 'upload_until', string.format('%d', nowms(ARGV[2]) + tonumber(ARGV[3])))
return 1`)

// AbortUpload releases a reservation made by BeginUpload with the same how,
// so that the source can be uploaded again. Other states are left alone.
func (s *Store) AbortUpload(ctx context.Context, id, how string) error {
	err := abortUploadScript.Run(ctx, s.rdb, []string{s.videoKey(id)}, how, formatTime(now())).Err()
	return wrapErr("abort upload", err)
}

var abortUploadScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'upload')
if v[1] == 'waiting' and v[2] == ARGV[1] then
  redis.call('HSET', KEYS[1], 'upload', '', 'updated_at', ARGV[2])
end
return 1`)

// SourceInfo is what the probe found in an uploaded source.
type SourceInfo struct {
	Bytes    int64
	Duration time.Duration
	// Width and Height are the picture's size (0: unknown).
	Width, Height int
	// FrameRate is the video's frame rate as the probe guessed it (0:
	// unknown).
	FrameRate float64
}

// SourceReceived records that the upload how completed and queues the video
// for processing, in one step: the video becomes "processing" and a job
// entry is added to the queue. It fails with ErrConflict when how does not
// hold the upload reservation (the video was reset or deleted meanwhile:
// ErrNotFound).
func (s *Store) SourceReceived(ctx context.Context, id, how string, info SourceInfo) error {
	res, err := sourceReceivedScript.Run(ctx, s.rdb, []string{s.videoKey(id), s.k(jobsKey)},
		how, info.Bytes, formatSeconds(info.Duration), formatTime(now()), id, info.Width, info.Height,
		strconv.FormatFloat(info.FrameRate, 'f', 3, 64)).Result()
	return uploadOutcome("queue video", res, err)
}

// uploadOutcome turns the answer of a script that needs the upload
// reservation into an error.
func uploadOutcome(op string, res any, err error) error {
	if err != nil {
		return wrapErr(op, err)
	}
	switch res {
	case "ok":
		return nil
	case "missing":
		return ErrNotFound
	default:
		return fmt.Errorf("%w: the upload no longer holds this video's source", ErrConflict)
	}
}

var sourceReceivedScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'upload')
if not v[1] then return 'missing' end
if v[1] ~= 'waiting' or v[2] ~= ARGV[1] then return 'conflict' end
redis.call('HSET', KEYS[1], 'status', 'processing', 'upload', 'received', 'progress', 0,
  'source_bytes', ARGV[2], 'duration', ARGV[3], 'updated_at', ARGV[4], 'source_width', ARGV[6], 'source_height', ARGV[7], 'source_fps', ARGV[8])
redis.call('XADD', KEYS[2], '*', 'video', ARGV[5])
return 'ok'`)

// FailVideo marks a video that holds the upload reservation how as failed
// with msg (a message for people) and announces video.failed. It is for
// sources refused on arrival; failures of jobs go through FailJob.
func (s *Store) FailVideo(ctx context.Context, id, how, msg string) error {
	res, err := failVideoScript.Run(ctx, s.rdb, []string{s.videoKey(id), s.k(eventsKey)},
		how, msg, formatTime(now()), eventsMaxLen, id).Result()
	return uploadOutcome("fail video", res, err)
}

var failVideoScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'upload', 'title')
if not v[1] then return 'missing' end
if v[1] ~= 'waiting' or v[2] ~= ARGV[1] then return 'conflict' end
redis.call('HSET', KEYS[1], 'status', 'failed', 'upload', 'received', 'error', ARGV[2], 'updated_at', ARGV[3])
local data = cjson.encode({id = ARGV[5], title = v[3], status = 'failed', error = ARGV[2]})
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[4], '*', 'type', 'video.failed', 'data', data, 'at', ARGV[3])
return 'ok'`)

func formatSeconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 3, 64)
}

func (s *Store) decodeVideo(id string, f map[string]string) (Video, error) {
	if len(f) == 0 {
		return Video{}, ErrNotFound
	}
	v := Video{
		ID: id, Title: f[fieldTitle], Status: f[fieldStatus], Error: f[fieldError],
		Ladder: f[fieldLadder], PlaybackPolicy: f[fieldPlaybackPolicy], upload: f[fieldUpload],
		Poster: f[fieldPoster] == "1", Storyboard: f[fieldStoryboard] == "1", P2POff: f[fieldP2P] == p2pOff,
	}
	bad := func(field string, err error) (Video, error) {
		return Video{}, &decodeError{key: s.videoKey(id), err: fmt.Errorf("field %s: %w", field, err)}
	}
	var err error
	if v.CreatedAt, err = parseTime(f[fieldCreatedAt]); err != nil {
		return bad(fieldCreatedAt, err)
	}
	if s := f[fieldUpdatedAt]; s != "" {
		if v.UpdatedAt, err = parseTime(s); err != nil {
			return bad(fieldUpdatedAt, err)
		}
	}
	ints := []struct {
		field string
		dst   *int
	}{{fieldProgress, &v.Progress}, {fieldAttempts, &v.Attempts}, {fieldSourceW, &v.SourceWidth}, {fieldSourceH, &v.SourceHeight}}
	for _, it := range ints {
		if s := f[it.field]; s != "" {
			if *it.dst, err = strconv.Atoi(s); err != nil {
				return bad(it.field, err)
			}
		}
	}
	if s := f[fieldSourceFPS]; s != "" {
		if v.SourceFrameRate, err = strconv.ParseFloat(s, 64); err != nil {
			return bad(fieldSourceFPS, err)
		}
	}
	if s := f[fieldSourceBytes]; s != "" {
		if v.SourceBytes, err = strconv.ParseInt(s, 10, 64); err != nil {
			return bad(fieldSourceBytes, err)
		}
	}
	if s := f[fieldDuration]; s != "" {
		sec, err := strconv.ParseFloat(s, 64)
		if err != nil {
			return bad(fieldDuration, err)
		}
		v.Duration = time.Duration(sec * float64(time.Second))
	}
	if s := f[fieldRenditions]; s != "" {
		if err := json.Unmarshal([]byte(s), &v.Renditions); err != nil {
			return bad(fieldRenditions, err)
		}
	}
	return v, nil
}
