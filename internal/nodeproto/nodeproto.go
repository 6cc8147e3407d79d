// Package nodeproto is the protocol between independently run nodes (edges
// and remote workers) and the origin's registry: join, then heartbeat every
// few seconds; remote workers then do VOD jobs through the worker protocol
// (worker.go). Nodes never touch Redis; the origin records them.
//
// A node proves who it is with an ed25519 key it generated on first start:
// its id is derived from the public key, and every request body is signed
// with the private key (header Shoal-Node-Signature), so a node token lets a
// machine join but never lets it speak for another node. Bodies carry their
// time, and the origin refuses bodies more than MaxSkew old, so a captured
// heartbeat cannot be replayed later.
//
//	POST /v1/nodes/join              Authorization: Bearer <node token or admin key>
//	POST /v1/nodes/<id>/heartbeat    Authorization: Bearer <node token or admin key>
package nodeproto

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/originset"
)

// SignatureHeader carries the base64 ed25519 signature of the request body.
const SignatureHeader = "Shoal-Node-Signature"

// MaxSkew is how far a body's time may be from the origin's clock.
const MaxSkew = 60 * time.Second

// HeartbeatInterval is how often nodes heartbeat; a node that misses
// heartbeats for NodeTTL leaves the registry.
const (
	HeartbeatInterval = 2 * time.Second
	NodeTTL           = 7 * time.Second
)

// JoinRequest is the body of POST /v1/nodes/join.
type JoinRequest struct {
	Role      string    `json:"role"`
	Region    string    `json:"region"`
	PublicURL string    `json:"public_url"`
	PublicKey string    `json:"public_key"` // base64 (std) ed25519 public key
	Time      time.Time `json:"time"`
	// TokenSHA256 is the hex SHA-256 of the bearer token the join is sent
	// with: the signed body is bound to it, so that a join captured and
	// replayed with another token is refused.
	TokenSHA256 string `json:"token_sha256"`
	// Transcode is what a worker transcodes with (role "worker" only).
	Transcode *Transcoding `json:"transcode,omitempty"`
	// InvalidationCursor (edges) is the last JoinResponse.InvalidationCursor
	// the edge applied and kept with its cache (across restarts): the
	// answer holds the invalidations after it. Empty: every one the
	// origin keeps; an edge without a cursor cannot know what it missed
	// and must not trust what its cache holds.
	InvalidationCursor string `json:"invalidation_cursor,omitempty"`
}

// Node roles that join.
const (
	RoleEdge   = "edge"
	RoleWorker = "worker"
)

// TokenSHA256 is the hex SHA-256 of a bearer token, as JoinRequest binds it.
func TokenSHA256(token string) string {
	sum := sha256.Sum256([]byte(token))
	return hex.EncodeToString(sum[:])
}

// Sibling is another live edge of the same region. PublicKey (base64
// ed25519) is its node key: an edge believes the viewer addresses its
// siblings vouch for (see Vouch) with it.
type Sibling struct {
	ID        string `json:"id"`
	URL       string `json:"url"`
	PublicKey string `json:"public_key,omitempty"`
}

// JoinResponse answers a join, and HeartbeatResponse a heartbeat: the
// node's id, its region's other edges and the key that signs playback
// tokens (edges verify tokens with it).
type JoinResponse struct {
	ID                       string    `json:"id"`
	HeartbeatIntervalSeconds float64   `json:"heartbeat_interval_seconds"`
	PlaybackPublicKey        string    `json:"playback_public_key,omitempty"`
	Siblings                 []Sibling `json:"siblings"`
	// Invalidations are the ids whose cached objects the node must drop
	// (deleted, or their playback policy changed) since the cursor of its
	// heartbeat (every one the origin keeps, after a join); the node sends
	// InvalidationCursor back with its next heartbeat.
	Invalidations      []Invalidation `json:"invalidations,omitempty"`
	InvalidationCursor string         `json:"invalidation_cursor,omitempty"`
	// InvalidationsReset: the node missed invalidations the origin no
	// longer has (its cursor fell behind the feed's trimming, or the feed
	// lost its history; with no cursor, the feed was ever trimmed). It
	// must drop, or revalidate, everything it cached before applying
	// Invalidations.
	InvalidationsReset bool `json:"invalidations_reset,omitempty"`
	// InvalidationsMore: more invalidations follow InvalidationCursor
	// (an answer carries at most 1000); the node has caught up with the
	// feed once an answer says none.
	InvalidationsMore bool `json:"invalidations_more,omitempty"`
	// Origins are the public URLs of the origins announced in the
	// registry (the one answering among them, normally): a node adds them
	// to the origins it fails over to, and drops those it learned that
	// are no longer listed. Absent when the origin could not list them
	// (then the node keeps what it knows).
	Origins []string `json:"origins,omitempty"`
}

// Invalidation tells a node to drop what it cached of a live stream or
// video: it was deleted, or its playback policy is now Signed or not.
type Invalidation struct {
	ID      string `json:"id"`
	Deleted bool   `json:"deleted,omitempty"`
	Signed  bool   `json:"signed,omitempty"`
}

// HeartbeatResponse answers a heartbeat.
type HeartbeatResponse = JoinResponse

// Heartbeat is the body of POST /v1/nodes/<id>/heartbeat.
type Heartbeat struct {
	Time              time.Time        `json:"time"`
	Connections       int64            `json:"connections"`
	EgressBytesPerSec float64          `json:"egress_bytes_per_sec"`
	CacheBytes        int64            `json:"cache_bytes"`
	BytesServed       int64            `json:"bytes_served"`
	Hits              int64            `json:"hits"`
	Misses            int64            `json:"misses"`
	OriginFetches     int64            `json:"origin_fetches"`
	StreamBytes       map[string]int64 `json:"stream_bytes,omitempty"`
	// Viewers is how many distinct viewers the node served recently;
	// MaxViewers how many it can take (0: not declared). Both are claims:
	// the origin bounds them by what it observes.
	Viewers    int64 `json:"viewers,omitempty"`
	MaxViewers int64 `json:"max_viewers,omitempty"`
	// MaxEgressBytesPerSec is the egress the node can send (0: not declared).
	MaxEgressBytesPerSec float64 `json:"max_egress_bytes_per_sec,omitempty"`
	// InvalidationCursor is the last JoinResponse.InvalidationCursor seen.
	InvalidationCursor string `json:"invalidation_cursor,omitempty"`
	// P2PStreamBytes are the bytes the players on the node's P2P tracker
	// reported downloading since the node's previous batch, per live
	// stream or video id (at most MaxP2PStreams, the biggest first; the
	// rest wait for the next heartbeat). P2PBatch names the batch: a node
	// sends the same batch, under the same name, until a heartbeat
	// carrying it is answered 200, and the origin adds a batch once, so a
	// lost answer neither loses nor doubles the figures. Players' figures
	// are claims (the tracker clamps them to what a player can download).
	P2PStreamBytes map[string]P2PBytes `json:"p2p_stream_bytes,omitempty"`
	P2PBatch       string              `json:"p2p_batch,omitempty"`
	// Transcode is what a worker transcodes with now (role "worker"
	// only; its self-benchmark may have changed the figures since it
	// joined). The origin keeps the latest.
	Transcode *Transcoding `json:"transcode,omitempty"`
}

// P2PBytes are bytes players reported downloading, by source.
type P2PBytes struct {
	HTTP int64 `json:"http"`
	P2P  int64 `json:"p2p"`
}

// MaxP2PStreams is the most ids a heartbeat's P2PStreamBytes may hold.
const MaxP2PStreams = 500

var idEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// NodeID is the id of the node whose public key is pub: 20 base32
// characters of its SHA-256.
func NodeID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return idEncoding.EncodeToString(sum[:])[:20]
}

// ParsePublicKey decodes a base64 ed25519 public key.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, errors.New("public_key must be a base64 ed25519 public key (32 bytes)")
	}
	return ed25519.PublicKey(b), nil
}

// Sign returns the SignatureHeader value for body.
func Sign(priv ed25519.PrivateKey, body []byte) string {
	return base64.StdEncoding.EncodeToString(ed25519.Sign(priv, body))
}

// Verify checks the SignatureHeader value sig of body against pub.
func Verify(pub ed25519.PublicKey, body []byte, sig string) error {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(sig))
	if err != nil || len(b) != ed25519.SignatureSize || !ed25519.Verify(pub, body, b) {
		return errors.New("bad or missing " + SignatureHeader)
	}
	return nil
}

// CheckTime refuses a body time more than MaxSkew from now.
func CheckTime(t, now time.Time) error {
	if d := now.Sub(t); d > MaxSkew || d < -MaxSkew {
		return fmt.Errorf("the request's time is %s away from the origin's clock (more than %s): check the node's clock", d.Round(time.Second), MaxSkew)
	}
	return nil
}

// Client is a node's side of the protocol.
//
// With several origins (Origins), each request goes to the preferred one,
// and to the next one on a connection error or a 502, 503 or 504, down the
// origins not avoided now (originset.Set.Attempts); an origin that failed
// is tried after the others for originset.AvoidFor. Every origin shares the registry (Redis), so a node
// that joined at one heartbeats at any other.
type Client struct {
	OriginURL string // e.g. http://origin:8080; ignored when Origins is set
	// Origins, when set, are the origins the client talks to (shared with
	// the edge cache; the origins a JoinResponse lists are added to them
	// by the caller, Origins.Learn).
	Origins *originset.Set
	Token   string // node token (or the admin key)
	Key     ed25519.PrivateKey
	HTTP    *http.Client
	// TransferHTTP, when set, is the client of a worker's downloads and
	// uploads (no overall timeout: they last as long as the file needs);
	// default http.DefaultClient.
	TransferHTTP *http.Client
	// MaxSourceBytes is the largest job source a worker downloads
	// (max_upload_bytes); 0: DefaultMaxSourceBytes.
	MaxSourceBytes int64
	// LiveSourceIdle is how long a read of a live source body may wait
	// for data before it fails; 0: DefaultLiveSourceIdle.
	LiveSourceIdle time.Duration

	// afterFunc, when set, makes the live source's idle timer (tests).
	afterFunc func(time.Duration, func()) idleTimer
}

// ErrRefused wraps an answer of the origin that the node cannot fix by
// retrying (a bad or revoked token: 401/403).
var ErrRefused = errors.New("the origin refused this node")

// ErrUnknownNode is returned by Heartbeat when the origin no longer knows
// the node (it must join again).
var ErrUnknownNode = errors.New("the origin does not know this node: join again")

// Join joins the registry.
func (c *Client) Join(ctx context.Context, req JoinRequest) (JoinResponse, error) {
	req.PublicKey = base64.StdEncoding.EncodeToString(c.Key.Public().(ed25519.PublicKey))
	req.Time = time.Now().UTC()
	req.TokenSHA256 = TokenSHA256(c.Token)
	var out JoinResponse
	return out, c.post(ctx, "/v1/nodes/join", req, &out)
}

// Heartbeat reports hb for node id.
func (c *Client) Heartbeat(ctx context.Context, id string, hb Heartbeat) (HeartbeatResponse, error) {
	hb.Time = time.Now().UTC()
	var out HeartbeatResponse
	return out, c.post(ctx, "/v1/nodes/"+id+"/heartbeat", hb, &out)
}

func (c *Client) post(ctx context.Context, path string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	sig := Sign(c.Key, body)
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	origins := []string{strings.TrimSuffix(c.OriginURL, "/")}
	if c.Origins != nil {
		origins = c.Origins.Attempts()
	}
	var (
		resp *http.Response
		data []byte
	)
	for i, base := range origins {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+path, bytes.NewReader(body))
		if err != nil {
			return err
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+c.Token)
		req.Header.Set(SignatureHeader, sig)
		last := i == len(origins)-1
		resp, err = hc.Do(req)
		if err != nil {
			if c.Origins != nil && ctx.Err() == nil {
				c.Origins.Failed(base)
			}
			if last || ctx.Err() != nil {
				return err
			}
			continue
		}
		data, _ = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		resp.Body.Close()
		if c.Origins == nil {
			break
		}
		if !originset.FailoverStatus(resp.StatusCode) {
			c.Origins.Succeeded(base)
			break
		}
		c.Origins.Failed(base)
		if last {
			break
		}
	}
	switch {
	case resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusCreated:
		return json.Unmarshal(data, out)
	case resp.StatusCode == http.StatusNotFound && strings.Contains(path, "/heartbeat"):
		return ErrUnknownNode
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return fmt.Errorf("%w: %s", ErrRefused, errorMessage(data))
	default:
		return fmt.Errorf("origin answered %d: %s", resp.StatusCode, errorMessage(data))
	}
}

// errorMessage extracts the message of a JSON error body.
func errorMessage(data []byte) string {
	var e struct {
		Error struct {
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(data, &e) == nil && e.Error.Message != "" {
		return e.Error.Message
	}
	if len(data) > 200 {
		data = data[:200]
	}
	return strings.TrimSpace(string(data))
}
