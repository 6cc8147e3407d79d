package rtmp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/bluenviron/gortmplib/pkg/rawmessage"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// plainHandshake is what a plain RTMP client sends of the handshake, as the
// guard sees it: C0 (version 3), C1 and C2.
func plainHandshake() []byte {
	b := make([]byte, handshakeBytes)
	b[0] = plainRTMP
	return b
}

// chunk0 is a type-0 chunk header on chunk stream csid announcing a
// message of length bytes and type typ, followed by body.
func chunk0(csid byte, length uint32, typ byte, body []byte) []byte {
	h := []byte{csid, 0, 0, 0, byte(length >> 16), byte(length >> 8), byte(length), typ, 0, 0, 0, 0}
	return append(h, body...)
}

// Before the stream key is accepted, a client cannot make the server hold
// memory it announces: a 10 MiB Set Chunk Size, or a 10 MiB message header,
// closes the connection before gortmplib allocates the body.
func TestPreauthLimits(t *testing.T) {
	t.Parallel()
	r := newRig(t, 5*time.Second)
	addr := r.srv.Addr().String()
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, 10<<20)
	attacks := map[string][]byte{
		"set chunk size": append(chunk0(2, 4, 1, huge), chunk0(3, 10<<20, 20, []byte{2})...),
		"message length": append(chunk0(2, 4, 1, []byte{0, 0, 0x10, 0}), chunk0(3, 10<<20, 20, []byte{2})...),
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for name, attack := range attacks {
		for range 5 {
			c, err := net.Dial("tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := handshake.DoClient(c, false, false); err != nil {
				t.Fatalf("%s: handshake: %v", name, err)
			}
			if _, err := c.Write(attack); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Errorf("%s: the server did not close the connection: %v", name, err)
			}
			c.Close()
		}
	}
	runtime.ReadMemStats(&after)
	if grown := after.TotalAlloc - before.TotalAlloc; grown > 8<<20 {
		t.Errorf("ten hostile connections allocated %d MiB", grown>>20)
	}
	if got := testutil.ToFloat64(r.srv.m.Refused.WithLabelValues("preauth_too_large")); got != 10 {
		t.Errorf("refused{preauth_too_large} = %v, want 10", got)
	}
}

// The guard follows a real client's chunk stream: a chunk size raised to
// 4096 and messages split over several chunks pass; what exceeds the limit
// does not; once authorized, nothing is checked.
func TestGuardFollowsChunks(t *testing.T) {
	t.Parallel()
	var stream bytes.Buffer
	stream.Write(plainHandshake())
	stream.Write(chunk0(2, 4, 1, []byte{0, 0, 0x10, 0}))        // chunk size 4096
	body := bytes.Repeat([]byte{7}, 5000)                       // two chunks
	stream.Write(chunk0(3, 5000, 20, body[:4096]))              // first chunk
	stream.Write(append([]byte{0xc3}, body[4096:]...))          // fmt 3: the rest
	stream.Write(append([]byte{0x83, 0, 0, 1}, body[:4096]...)) // fmt 2: same length, a new message
	stream.Write(append([]byte{0xc3}, body[4096:]...))
	g := newGuard(&stream, 64<<10)
	if _, err := io.Copy(io.Discard, g); err != nil {
		t.Fatalf("a well-formed stream was refused: %v", err)
	}
	if g.chunkSize != 4096 || g.body != 0 {
		t.Fatalf("chunk size %d, %d body bytes pending", g.chunkSize, g.body)
	}
	var big bytes.Buffer
	big.Write(plainHandshake())
	big.Write(chunk0(3, 70<<10, 9, nil))
	if _, err := io.Copy(io.Discard, newGuard(&big, 64<<10)); err == nil {
		t.Fatal("a 70 KiB message passed a 64 KiB guard")
	}
	big.Reset()
	big.Write(plainHandshake())
	g = newGuard(&big, 64<<10)
	g.authorized()
	big.Write(chunk0(3, 70<<10, 9, nil))
	if _, err := io.Copy(io.Discard, g); err != nil {
		t.Fatalf("an authorized connection was checked: %v", err)
	}
}

// The guard never panics and never lets an oversized header through,
// whatever the bytes.
func FuzzGuard(f *testing.F) {
	f.Add(chunk0(2, 4, 1, []byte{0, 0, 0x10, 0}), uint8(7))
	f.Add(chunk0(3, 1<<20, 20, []byte{1, 2, 3}), uint8(1))
	f.Add([]byte{0x40, 1, 2, 3, 0xff, 0xff, 0xff, 0x43, 0, 1, 2}, uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		g := newGuard(bytes.NewReader(append(plainHandshake(), data...)), 1<<10)
		buf := make([]byte, int(split)%64+1)
		for {
			if _, err := g.Read(buf); err != nil {
				break
			}
		}
		if g.refused != nil {
			return
		}
		// Not refused: nothing it passed announced more than the limit.
		for _, st := range g.streams {
			if st.msgLen > g.limit {
				t.Fatalf("a %d-byte message was let through", st.msgLen)
			}
		}
		if g.chunkSize > g.limit {
			t.Fatalf("a chunk size of %d was let through", g.chunkSize)
		}
	})
}

// Whatever chunk stream a Set Chunk Size comes on, it is checked (gortmplib
// applies it on any); an Abort before authorization is refused; an
// extended timestamp is followed as gortmplib reads it (by its value).
func TestGuardFollowsGortmplib(t *testing.T) {
	t.Parallel()
	huge := make([]byte, 4)
	binary.BigEndian.PutUint32(huge, 10<<20)
	for name, body := range map[string][]byte{
		"set chunk size on stream 3": chunk0(3, 4, 1, huge),
		"abort":                      chunk0(2, 4, 2, []byte{0, 0, 0, 3}),
	} {
		var b bytes.Buffer
		b.Write(plainHandshake())
		b.Write(body)
		if _, err := io.Copy(io.Discard, newGuard(&b, 64<<10)); err == nil {
			t.Errorf("%s passed", name)
		}
	}
	// A timestamp marker with an extended value below 0xFFFFFF: gortmplib
	// reads the next continuation chunk without an extended timestamp.
	var b bytes.Buffer
	b.Write(plainHandshake())
	h := chunk0(3, 200, 8, nil)
	h[1], h[2], h[3] = 0xff, 0xff, 0xff
	b.Write(h)
	b.Write([]byte{0, 0, 0, 1})             // extended timestamp 1
	b.Write(bytes.Repeat([]byte{9}, 128))   // first chunk
	b.Write([]byte{0xc3})                   // fmt 3, no extended timestamp
	b.Write(bytes.Repeat([]byte{9}, 72))    // the rest
	b.Write(chunk0(4, 70<<10, 9, nil)[:12]) // a header the guard must see as one
	if _, err := io.Copy(io.Discard, newGuard(&b, 64<<10)); err == nil {
		t.Fatal("the guard lost track of the chunk stream: an oversized header passed")
	}
}

// An encrypted (RTMPE, C0 version 6) handshake is refused at its first
// byte: gortmplib's server accepts it, and the chunk stream after it is
// RC4 ciphertext that the guard cannot follow (a client that negotiated
// the keystream could shape it to pass the guard and announce a 10 MiB
// chunk size and message). Any C0 but 3 is refused.
func TestPreauthRefusesEncryptedHandshake(t *testing.T) {
	t.Parallel()
	for _, version := range []byte{6, 0, 31} {
		hs := plainHandshake()
		hs[0] = version
		g := newGuard(bytes.NewReader(hs), preauthLimit)
		if n, err := g.Read(make([]byte, 1)); err == nil || n != 0 || g.reason != reasonHandshake {
			t.Errorf("C0 %d: read %d, %v (reason %q), want a refusal", version, n, err, g.reason)
		}
	}
	if _, err := io.Copy(io.Discard, newGuard(bytes.NewReader(plainHandshake()), preauthLimit)); err != nil {
		t.Fatalf("a plain handshake was refused: %v", err)
	}

	// End to end: gortmplib's client, encrypted, gets no answer.
	r := newRig(t, 5*time.Second)
	c, err := net.Dial("tcp", r.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := handshake.DoClient(c, true, false); err == nil {
		t.Fatal("the server completed an encrypted handshake")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("the server neither refused nor closed: %v", err)
	}
	wantRefusedOnce(t, r, c, reasonHandshake)
}

// wantRefusedOnce reads c until the server closes it (it counts a refusal
// before it closes) and checks the refusal was counted under reason.
func wantRefusedOnce(t *testing.T, r *rig, c net.Conn, reason string) {
	t.Helper()
	if _, err := io.Copy(io.Discard, c); err != nil && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the server did not close the connection: %v", err)
	}
	if got := testutil.ToFloat64(r.srv.m.Refused.WithLabelValues(reason)); got != 1 {
		t.Fatalf("refused{%s} = %v, want 1", reason, got)
	}
}

// A Set Chunk Size split over chunks (a chunk size of 1 makes every body
// byte its own chunk) and interleaved with a message on another chunk
// stream: the guard forgot the value it was collecting, gortmplib applied
// it (here 0x9FFFFF), and from then on the two read the stream
// differently. The guard took what gortmplib reads as one 16-byte audio
// body for sixteen 1-byte chunks, so the header gortmplib read next, for
// a 10 MiB message, was body bytes to the guard: gortmplib allocated it
// before the stream key was sent. Now a chunk size under 128 is refused
// (the first message here).
//
// Not parallel: it measures what the process allocates.
func TestPreauthInterleavedSetChunkSize(t *testing.T) {
	r := newRig(t, 5*time.Second)
	c, err := net.Dial("tcp", r.srv.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, _, err := handshake.DoClient(c, false, false); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := c.Write(interleavedSetChunkSize(true)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, rerr := io.Copy(io.Discard, c)
	runtime.ReadMemStats(&after)
	grown := after.TotalAlloc - before.TotalAlloc
	if rerr != nil || grown > 8<<20 {
		t.Fatalf("an unauthenticated client made the server allocate %d MiB and was not disconnected (%v)", grown>>20, rerr)
	}
	wantRefusedOnce(t, r, c, reasonTooLarge)
}

// interleavedSetChunkSize is the attack above, after the handshake; with
// setOne, it starts by setting the chunk size to 1.
func interleavedSetChunkSize(setOne bool) []byte {
	var b bytes.Buffer
	if setOne {
		b.Write(chunk0(2, 4, 1, []byte{0, 0, 0, 1})) // chunk size 1
	}
	b.Write(chunk0(2, 4, 1, []byte{0x00})) // Set Chunk Size, first byte
	// An Acknowledge on chunk stream 3, between the chunks of the above.
	b.Write(chunk0(3, 4, 3, []byte{0}))
	b.Write([]byte{0xc3, 0, 0xc3, 0, 0xc3, 0})
	// The rest of the Set Chunk Size: 0x009FFFFF.
	b.Write([]byte{0xc2, 0x9f, 0xc2, 0xff, 0xc2, 0xff})
	// A 16-byte MP3 audio message: gortmplib reads one chunk; a guard
	// that forgot the chunk size sees 1 byte, then fmt-3 chunks (0xc4) of
	// 1 byte each.
	body := make([]byte, 16)
	for i := range body {
		body[i] = 0x2f
		if i%2 == 1 {
			body[i] = 0xc4
		}
	}
	b.Write(chunk0(4, uint32(len(body)), 8, body))
	// gortmplib: a type-0 header on stream 5 for a 0x9FC4FF-byte message.
	b.Write([]byte{0x05, 0xc4, 0, 0xc4, 0x9f, 0xc4, 0xff, 0xc4, 0, 0xc4, 0, 0xc4})
	return b.Bytes()
}

// The guard keeps each chunk stream's partial Set Chunk Size apart: with a
// chunk size of 1 (no longer reachable before authorization, set here
// directly), the interleaved Acknowledge leaves the value being collected
// on stream 2 as it is, and 0x9FFFFF is refused when its last byte comes.
func TestGuardSetChunkSizePerChunkStream(t *testing.T) {
	t.Parallel()
	g := newGuard(bytes.NewReader(append(plainHandshake(), interleavedSetChunkSize(false)...)), preauthLimit)
	g.chunkSize = 1
	if _, err := io.Copy(io.Discard, g); err == nil || !strings.Contains(err.Error(), "chunk size 10485759") {
		t.Fatalf("the interleaved Set Chunk Size of 0x9FFFFF passed: %v", err)
	}
}

// Before authorization a Set Chunk Size is 4 bytes and sets 128 or more.
func TestGuardSetChunkSizeRules(t *testing.T) {
	t.Parallel()
	size := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	for name, tc := range map[string]struct {
		msg []byte
		ok  bool
	}{
		"128":          {chunk0(2, 4, 1, size(128)), true},
		"4096":         {chunk0(2, 4, 1, size(4096)), true},
		"the limit":    {chunk0(2, 4, 1, size(preauthLimit)), true},
		"127":          {chunk0(2, 4, 1, size(127)), false},
		"1":            {chunk0(2, 4, 1, size(1)), false},
		"0":            {chunk0(2, 4, 1, size(0)), false},
		"over":         {chunk0(2, 4, 1, size(preauthLimit+1)), false},
		"top bit":      {chunk0(2, 4, 1, size(1<<31|4096)), false},
		"3 bytes":      {chunk0(2, 3, 1, size(4096)[1:]), false},
		"5 bytes":      {chunk0(2, 5, 1, append(size(4096), 0)), false},
		"0 bytes":      {chunk0(2, 0, 1, nil), false},
		"fmt 3, again": {append(chunk0(2, 4, 1, size(4096)), 0xc2), true}, // same length: a 4-byte message follows
	} {
		g := newGuard(bytes.NewReader(append(plainHandshake(), tc.msg...)), preauthLimit)
		_, err := io.Copy(io.Discard, g)
		if (err == nil) != tc.ok {
			t.Errorf("%s: %v, want ok %v", name, err, tc.ok)
		}
	}
}

// oneByte hands out at most one byte a Read, so that gortmplib's buffered
// reader takes from the guard exactly the bytes it has parsed so far.
type oneByte struct{ r io.Reader }

func (o oneByte) Read(p []byte) (int, error) { return o.r.Read(p[:min(len(p), 1)]) }

// The guard and gortmplib read the same chunk stream the same way: after
// every message gortmplib's reader returns, the guard has seen the end of
// that message (same chunk stream, type and length, nothing of another
// chunk pending) and the same chunk size applies. A guard that drifts from
// gortmplib checks headers that gortmplib does not read.
func FuzzGuardMatchesGortmplib(f *testing.F) {
	size := func(v uint32) []byte { return binary.BigEndian.AppendUint32(nil, v) }
	f.Add(chunk0(2, 4, 1, size(4096)))
	f.Add(append(chunk0(2, 4, 1, size(128)), chunk0(3, 300, 20, make([]byte, 128))...))
	f.Add(interleavedSetChunkSize(true))
	f.Add(interleavedSetChunkSize(false))
	f.Add([]byte{0x40, 1, 2, 3, 0xff, 0xff, 0xff, 0x43, 0, 1, 2})
	f.Fuzz(func(t *testing.T, data []byte) {
		const limit = 1 << 10
		g := newGuard(bytes.NewReader(append(plainHandshake(), data...)), limit)
		src := oneByte{g}
		if _, err := io.ReadFull(src, make([]byte, handshakeBytes)); err != nil {
			t.Fatal(err)
		}
		bc := bytecounter.NewReader(src)
		mr := rawmessage.NewReader(bc, bc, func(uint32) error { return nil })
		for {
			msg, err := mr.Read()
			if err != nil {
				return
			}
			st := g.streams[uint32(msg.ChunkStreamID)]
			if st == nil || g.cur != st || g.body != 0 || len(g.hdr) != 0 || st.remaining != 0 ||
				st.msgType != msg.Type || st.msgLen != uint32(len(msg.Body)) {
				t.Fatalf("gortmplib read a %d-byte message of type %d on chunk stream %d; the guard is elsewhere (%+v, %d body bytes pending)",
					len(msg.Body), msg.Type, msg.ChunkStreamID, st, g.body)
			}
			if msg.Type == 1 { // as gortmplib's message reader does
				if len(msg.Body) != 4 {
					return
				}
				v := binary.BigEndian.Uint32(msg.Body)
				if err := mr.SetChunkSize(v); err != nil {
					return
				}
				if v > limit || g.chunkSize != v {
					t.Fatalf("gortmplib applied a chunk size of %d, the guard %d", v, g.chunkSize)
				}
			}
		}
	})
}
