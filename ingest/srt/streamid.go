package srt

import (
	"errors"
	"strings"

	"github.com/shoal-video/shoal/internal/ingest"
)

// maxKeyLen bounds a stream key (SRT stream ids are at most 512 bytes).
const maxKeyLen = 256

var (
	// errNotPublish: the stream id asks to read (or to do both); only
	// publishing is offered.
	errNotPublish = errors.New("only publishing is offered over SRT (mode publish); watch over HLS")
	// errBadStreamID: the stream id names no stream key.
	errBadStreamID = errors.New("set the SRT stream id to publish:<stream_key> (or #!::r=live/<stream_key>,m=publish)")
)

// parseStreamID returns the stream key an SRT stream id publishes to. It
// reads two forms:
//
//	publish:<stream_key>                (also publish:live/<stream_key>)
//	#!::r=live/<stream_key>,m=publish   (SRT access control; r=<stream_key> too)
//
// In the access-control form the mode defaults to "request", as the SRT
// specification says, so m=publish is required. A stream id that asks to
// read returns errNotPublish; anything else errBadStreamID. Errors never
// quote the stream id: it may hold a key.
func parseStreamID(sid string) (string, error) {
	if rest, ok := strings.CutPrefix(sid, "#!::"); ok {
		return parseAccessControl(rest)
	}
	mode, rest, ok := strings.Cut(sid, ":")
	if !ok {
		return "", errBadStreamID
	}
	switch strings.ToLower(mode) {
	case "publish":
		return validKey(rest)
	case "read", "play", "request", "subscribe":
		return "", errNotPublish
	}
	return "", errBadStreamID
}

// parseAccessControl reads the comma-separated key=value list of the SRT
// access-control stream id syntax (after "#!::").
func parseAccessControl(s string) (string, error) {
	var resource, mode string
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" || seen[k] {
			return "", errBadStreamID
		}
		seen[k] = true
		switch k {
		case "r":
			resource = v
		case "m":
			mode = strings.ToLower(v)
		}
		// u (user), s (session), h (host), t (type) and custom keys are not
		// used: the stream key is the credential.
	}
	switch mode {
	case "publish":
	case "", "request", "bidirectional":
		return "", errNotPublish
	default:
		return "", errBadStreamID
	}
	return validKey(resource)
}

// validKey strips an optional "live/" (the path other protocols use) and
// checks what is left looks like a stream key.
func validKey(k string) (string, error) {
	k = strings.TrimPrefix(k, "/")
	k = strings.TrimPrefix(k, ingest.App+"/")
	if k == "" || len(k) > maxKeyLen || strings.ContainsFunc(k, func(r rune) bool {
		return r <= ' ' || r >= 0x7f || strings.ContainsRune("/?#,:=&", r)
	}) {
		return "", errBadStreamID
	}
	return k, nil
}
