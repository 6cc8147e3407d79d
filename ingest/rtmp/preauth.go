package rtmp

import (
	"encoding/binary"
	"fmt"
	"io"
	"sync/atomic"
)

// Before a publisher is authorized, gortmplib would allocate whatever a
// client announces: a SetChunkSize of 10 MiB and a message header of that
// length make it hold 10 MiB before a byte of the body arrives. guard
// follows the RTMP chunk stream as gortmplib reads it and refuses, before
// gortmplib sees the header, a message or chunk size above its limit. Once
// the stream key is accepted it steps aside (gortmplib's own limits apply).
//
// Chunk stream format (RTMP 1.0, 5.3): after the 3,073 bytes of the
// client's handshake (C0, C1, C2), chunks of a basic header (fmt and chunk
// stream id, 1 to 3 bytes), a message header (11, 7, 3 or 0 bytes by fmt),
// an optional extended timestamp (4 bytes), and up to the chunk size of
// message body. Protocol control message 1 (Set Chunk Size) changes the
// chunk size.
//
// Only plain RTMP is followed: C0 must be 3. After an RTMPE handshake (C0
// 6, which gortmplib's server accepts) the chunk stream is RC4-encrypted
// and the guard would read ciphertext, which a client that negotiated the
// key shapes as it likes; encoders (OBS, ffmpeg) do not use RTMPE.
//
// Before authorization the guard is stricter than RTMP needs, so that
// what it follows cannot drift from what gortmplib reads: a Set Chunk Size
// is a 4-byte message (gortmplib refuses others, but only once the message
// is whole) setting a chunk size of 128 (the initial one) or more, so it
// always comes in one chunk.
type guard struct {
	r     io.Reader
	limit uint32
	off   atomic.Bool // authorized: pass everything through

	skip      int // handshake bytes still to pass
	chunkSize uint32
	streams   map[uint32]*guardStream
	hdr       []byte       // the chunk header read so far
	body      uint32       // bytes of the current chunk's body still to pass
	cur       *guardStream // the chunk stream of the current chunk
	refused   error        // why the connection was refused, once it was
	// reason is refused's label in shoal_ingest_refused_total.
	reason string
}

type guardStream struct {
	msgLen    uint32
	msgType   byte
	remaining uint32 // body bytes of the current message still to come
	// extTS: its continuation chunks carry an extended timestamp, as
	// gortmplib decides it: the last header's timestamp (extended when
	// its 3-byte field was 0xFFFFFF) is at least 0xFFFFFF.
	extTS bool
	// setChunk is the body read so far of a Set Chunk Size on this chunk
	// stream: gortmplib assembles each chunk stream's message apart, so a
	// message on another chunk stream between its chunks leaves it be.
	setChunk []byte
}

// handshakeBytes is what a client sends of the handshake: C0, C1, C2.
const handshakeBytes = 1 + 1536 + 1536

// plainRTMP is the C0 version byte of plain (unencrypted) RTMP.
const plainRTMP = 3

// minChunkSize is the smallest chunk size a client may set before it is
// authorized: RTMP's initial one.
const minChunkSize = 128

// maxGuardStreams bounds the chunk streams followed before authorization.
const maxGuardStreams = 16

// Refusal reasons (shoal_ingest_refused_total's label).
const (
	reasonTooLarge  = "preauth_too_large"
	reasonHandshake = "unsupported_handshake"
)

func newGuard(r io.Reader, limit uint32) *guard {
	return &guard{r: r, limit: limit, skip: handshakeBytes, chunkSize: minChunkSize, streams: map[uint32]*guardStream{}}
}

// authorized makes the guard pass everything through from now on.
func (g *guard) authorized() { g.off.Store(true) }

func (g *guard) Read(p []byte) (int, error) {
	if g.refused != nil {
		return 0, g.refused
	}
	n, err := g.r.Read(p)
	if n > 0 && !g.off.Load() {
		if verr := g.inspect(p[:n]); verr != nil {
			if g.reason == "" {
				g.reason = reasonTooLarge
			}
			g.refused = verr
			return 0, verr
		}
	}
	return n, err
}

func (g *guard) inspect(b []byte) error {
	for len(b) > 0 {
		switch {
		case g.skip > 0:
			if g.skip == handshakeBytes && b[0] != plainRTMP {
				g.reason = reasonHandshake
				if b[0] == 6 {
					return fmt.Errorf("encrypted RTMP (RTMPE) handshake refused: only plain RTMP is accepted")
				}
				return fmt.Errorf("RTMP handshake of version %d refused: only plain RTMP (3) is accepted", b[0])
			}
			k := min(g.skip, len(b))
			g.skip -= k
			b = b[k:]
		case g.body > 0:
			k := min(g.body, uint32(len(b)))
			st := g.cur
			if st.msgType == 1 {
				st.setChunk = append(st.setChunk, b[:k]...) // 4 bytes in all (header)
			}
			g.body -= k
			b = b[k:]
			if g.body == 0 && st.remaining == 0 && st.msgType == 1 {
				// The Set Chunk Size message is read whole: gortmplib
				// applies it now (its own chunks were of the old size).
				size := binary.BigEndian.Uint32(st.setChunk)
				if size < minChunkSize || size > g.limit {
					return fmt.Errorf("RTMP chunk size %d before the stream key was accepted (%d to %d)", size, minChunkSize, g.limit)
				}
				g.chunkSize = size
			}
		default:
			g.hdr = append(g.hdr, b[0])
			b = b[1:]
			if err := g.header(); err != nil {
				return err
			}
		}
	}
	return nil
}

// header parses g.hdr when it holds a whole chunk header, and starts the
// chunk's body.
func (g *guard) header() error {
	h := g.hdr
	fmtType := h[0] >> 6
	basic := 1
	switch h[0] & 0x3f {
	case 0:
		basic = 2
	case 1:
		basic = 3
	}
	if len(h) < basic {
		return nil
	}
	var csid uint32
	switch basic {
	case 1:
		csid = uint32(h[0] & 0x3f)
	case 2:
		csid = uint32(h[1]) + 64
	default:
		csid = uint32(h[2])*256 + uint32(h[1]) + 64
	}
	msgHeader := [4]int{11, 7, 3, 0}[fmtType]
	if len(h) < basic+msgHeader {
		return nil
	}
	st := g.streams[csid]
	if st == nil {
		if fmtType != 0 || len(g.streams) >= maxGuardStreams {
			return fmt.Errorf("RTMP chunk stream %d before the stream key was accepted", csid)
		}
		st = &guardStream{}
		g.streams[csid] = st
	}
	m := h[basic:]
	ext := st.extTS
	if fmtType < 3 {
		ext = m[0] == 0xff && m[1] == 0xff && m[2] == 0xff
	}
	if ext && len(h) < basic+msgHeader+4 {
		return nil
	}
	// The whole header is here.
	if fmtType < 3 {
		st.extTS = ext && binary.BigEndian.Uint32(h[basic+msgHeader:]) >= 0xffffff
	}
	newMessage := fmtType < 3 || st.remaining == 0
	if fmtType < 2 {
		st.msgLen = uint32(m[3])<<16 | uint32(m[4])<<8 | uint32(m[5])
		st.msgType = m[6]
	}
	if newMessage {
		if st.msgLen > g.limit {
			return fmt.Errorf("RTMP message of %d bytes before the stream key was accepted (at most %d)", st.msgLen, g.limit)
		}
		switch st.msgType {
		case 1:
			if st.msgLen != 4 {
				return fmt.Errorf("RTMP Set Chunk Size of %d bytes before the stream key was accepted (4)", st.msgLen)
			}
		case 2:
			// Abort Message: gortmplib drops a half-read message, which
			// a publisher has no reason to do before it is accepted.
			return fmt.Errorf("RTMP abort message before the stream key was accepted")
		}
		st.remaining = st.msgLen
		st.setChunk = st.setChunk[:0]
	}
	g.body = min(st.remaining, g.chunkSize)
	st.remaining -= g.body
	g.cur = st
	g.hdr = g.hdr[:0]
	return nil
}
