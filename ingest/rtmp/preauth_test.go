package rtmp

import (
	"bytes"
	"encoding/binary"
	"io"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

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
	stream.Write(make([]byte, handshakeBytes))
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
	big.Write(make([]byte, handshakeBytes))
	big.Write(chunk0(3, 70<<10, 9, nil))
	if _, err := io.Copy(io.Discard, newGuard(&big, 64<<10)); err == nil {
		t.Fatal("a 70 KiB message passed a 64 KiB guard")
	}
	big.Reset()
	big.Write(make([]byte, handshakeBytes))
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
		g := newGuard(bytes.NewReader(append(make([]byte, handshakeBytes), data...)), 1<<10)
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
		b.Write(make([]byte, handshakeBytes))
		b.Write(body)
		if _, err := io.Copy(io.Discard, newGuard(&b, 64<<10)); err == nil {
			t.Errorf("%s passed", name)
		}
	}
	// A timestamp marker with an extended value below 0xFFFFFF: gortmplib
	// reads the next continuation chunk without an extended timestamp.
	var b bytes.Buffer
	b.Write(make([]byte, handshakeBytes))
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
