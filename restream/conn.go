package restream

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/bytecounter"
	"github.com/bluenviron/gortmplib/pkg/handshake"
	"github.com/bluenviron/gortmplib/pkg/message"

	"github.com/shoal-video/shoal/internal/netguard"
)

// The publish session is gortmplib's client sequence (connect,
// releaseStream, FCPublish, createStream, publish), written here on
// gortmplib's handshake, message and AMF0 packages because
// gortmplib.Client (v1.0.1) gives up on the first server message it cannot
// decode: ffmpeg's RTMP server, for one, answers FCPublish with a bare
// "onFCPublish". Undecodable messages are skipped instead. The media is
// written with gortmplib.Writer over this connection.

// messageStreamID is the message stream of the published stream as
// gortmplib.Writer addresses it (stream 1, as its chunk writer encodes it).
const messageStreamID = 0x1000000

// maxSkipped bounds the undecodable server messages skipped in a row.
const maxSkipped = 32

// rtmpConn is a publishing RTMP client connection. After publish, one
// goroutine (readLoop) reads what the server sends: it answers pings,
// acknowledges as the server asked, and notes an error status; the session's
// goroutine writes the media. Writes are serialized by wmu.
type rtmpConn struct {
	nc      net.Conn
	bc      *bytecounter.ReadWriter
	r       *message.Reader
	timeout time.Duration // per write

	wmu sync.Mutex
	w   *message.Writer

	mu          sync.Mutex
	closed      bool
	stopping    bool // interrupt was called: no new write starts
	writing     bool // a write is under way
	interrupted bool // interrupt cut a write short
	writeFailed bool
	readErr     error         // why readLoop ended
	readDone    chan struct{} // closed when readLoop returned; nil before it started
}

// errPrivateAddress refuses a target on a loopback, private or link-local
// address: the API's users must not reach the origin's own network.
var errPrivateAddress = errors.New("the target resolves to a loopback, private or link-local address (set ingest.restream_allow_private to allow it)")

// publicOnly is a net.Dialer Control that refuses the addresses of
// errPrivateAddress, checked after name resolution so DNS cannot smuggle
// one in.
var publicOnly = netguard.Control(errPrivateAddress)

// dialPublish connects to tgt and publishes its stream key, within ctx.
// Unless allowPrivate, only public addresses are dialed.
func dialPublish(ctx context.Context, tgt *target, writeTimeout time.Duration, allowPrivate bool) (*rtmpConn, error) {
	u := tgt.u
	addr := u.Host
	if u.Port() == "" {
		port := "1935"
		if u.Scheme == "rtmps" {
			port = "443"
		}
		addr = net.JoinHostPort(u.Hostname(), port)
	}
	var d net.Dialer
	if !allowPrivate {
		d.Control = publicOnly
	}
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	if u.Scheme == "rtmps" {
		nc = tls.Client(nc, &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12})
	}
	// The handshake honours ctx: its deadline, and cancellation closes the
	// socket.
	if dl, ok := ctx.Deadline(); ok {
		_ = nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = nc.Close() })
	c := &rtmpConn{nc: nc, bc: bytecounter.NewReadWriter(nc), timeout: writeTimeout}
	err = c.publish(tgt)
	if !stop() || err != nil {
		_ = nc.Close()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	_ = nc.SetDeadline(time.Time{})
	return c, nil
}

func (c *rtmpConn) publish(tgt *target) error {
	if tc, ok := c.nc.(*tls.Conn); ok {
		if err := tc.Handshake(); err != nil {
			return fmt.Errorf("TLS: %w", err)
		}
	}
	if _, _, err := handshake.DoClient(c.bc, false, false); err != nil {
		return fmt.Errorf("RTMP handshake: %w", err)
	}
	c.w = message.NewWriter(c.bc.Writer, c.bc.Writer, false)
	c.r = message.NewReader(c.bc.Reader, c.bc.Reader, func(n uint32) error {
		return c.Write(&message.Acknowledge{Value: n})
	})
	for _, m := range []message.Message{
		&message.SetWindowAckSize{Value: 2500000},
		&message.SetPeerBandwidth{Value: 2500000, Type: 2},
		&message.SetChunkSize{Value: 65536},
	} {
		if err := c.Write(m); err != nil {
			return err
		}
	}
	app := strings.TrimPrefix(tgt.app, "/")
	tcURL := tgt.tcURL()
	if err := c.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "connect", CommandID: 1, Arguments: []any{amf0.Object{
		{Key: "app", Value: app},
		{Key: "type", Value: "nonprivate"},
		{Key: "flashVer", Value: "FMLE/3.0 (compatible; Shoal)"},
		{Key: "tcUrl", Value: tcURL},
	}}}); err != nil {
		return err
	}
	res, err := c.readResult(1)
	if err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if res.Name != "_result" {
		return fmt.Errorf("connect refused: %s", statusText(res))
	}
	for _, m := range []*message.CommandAMF0{
		{ChunkStreamID: 3, Name: "releaseStream", CommandID: 2, Arguments: []any{nil, tgt.key}},
		{ChunkStreamID: 3, Name: "FCPublish", CommandID: 3, Arguments: []any{nil, tgt.key}},
		{ChunkStreamID: 3, Name: "createStream", CommandID: 4, Arguments: []any{nil}},
	} {
		if err := c.Write(m); err != nil {
			return err
		}
	}
	res, err = c.readResult(4)
	if err != nil {
		return fmt.Errorf("createStream: %w", err)
	}
	if res.Name != "_result" {
		return fmt.Errorf("createStream refused: %s", statusText(res))
	}
	if len(res.Arguments) < 2 || res.Arguments[1] != float64(1) {
		// gortmplib.Writer addresses stream 1, as servers assign.
		return fmt.Errorf("createStream: the server assigned stream %v, only 1 is supported", res.Arguments)
	}
	if err := c.Write(&message.CommandAMF0{ChunkStreamID: 4, MessageStreamID: messageStreamID, Name: "publish",
		CommandID: 5, Arguments: []any{nil, tgt.key, "live"}}); err != nil {
		return err
	}
	for {
		res, err = c.readCommand(func(cmd *message.CommandAMF0) bool {
			return cmd.Name == "onStatus" || cmd.CommandID == 5
		})
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		level, code := status(res)
		switch {
		case res.Name == "onStatus" && level == "status" && code != "NetStream.Publish.Start" && code != "":
			continue // e.g. NetStream.Play.Reset: not the answer yet
		case res.Name == "onStatus" && level == "status", res.Name == "_result":
			return nil
		default:
			return fmt.Errorf("publish refused: %s", statusText(res))
		}
	}
}

// readResult waits for the _result or _error of command id.
func (c *rtmpConn) readResult(id int) (*message.CommandAMF0, error) {
	return c.readCommand(func(cmd *message.CommandAMF0) bool {
		return (cmd.Name == "_result" || cmd.Name == "_error") && (cmd.CommandID == id || cmd.CommandID == 0)
	})
}

// readCommand reads until a command satisfies match, answering pings and
// skipping what does not decode.
func (c *rtmpConn) readCommand(match func(*message.CommandAMF0) bool) (*message.CommandAMF0, error) {
	skipped := 0
	for {
		msg, err := c.r.Read()
		if err != nil {
			if isConnError(err) {
				return nil, err
			}
			if skipped++; skipped > maxSkipped {
				return nil, fmt.Errorf("undecodable server messages: %w", err)
			}
			continue
		}
		skipped = 0
		switch m := msg.(type) {
		case *message.UserControlPingRequest:
			if err := c.Write(&message.UserControlPingResponse{ServerTime: m.ServerTime}); err != nil {
				return nil, err
			}
		case *message.CommandAMF0:
			if match(m) {
				return m, nil
			}
		}
	}
}

func isConnError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne)
}

// status returns the level and code of a command's info object.
func status(cmd *message.CommandAMF0) (level, code string) {
	for _, a := range cmd.Arguments {
		var o amf0.Object
		switch v := a.(type) {
		case amf0.Object:
			o = v
		case amf0.ECMAArray:
			o = amf0.Object(v)
		default:
			continue
		}
		level, _ = o.GetString("level")
		code, _ = o.GetString("code")
		return level, code
	}
	return "", ""
}

// statusText describes a refusal by its code and description.
func statusText(cmd *message.CommandAMF0) string {
	for _, a := range cmd.Arguments {
		var o amf0.Object
		switch v := a.(type) {
		case amf0.Object:
			o = v
		case amf0.ECMAArray:
			o = amf0.Object(v)
		default:
			continue
		}
		code, _ := o.GetString("code")
		desc, _ := o.GetString("description")
		// Whole: it may quote the stream key, which is scrubbed before
		// the message is cut to length (pusher.fail).
		return strings.TrimSpace(code + " " + desc)
	}
	return cmd.Name
}

// start starts readLoop.
func (c *rtmpConn) start() {
	c.mu.Lock()
	c.readDone = make(chan struct{})
	c.mu.Unlock()
	go c.readLoop()
}

// readLoop reads the server's messages until the connection ends. An error
// status (the server stopped the publication) or the server closing the
// connection closes it, so that the next write fails and cause explains
// why.
func (c *rtmpConn) readLoop() {
	defer close(c.readDone)
	cmd, err := c.readCommand(func(cmd *message.CommandAMF0) bool {
		level, _ := status(cmd)
		return cmd.Name == "_error" || level == "error"
	})
	if err == nil {
		err = fmt.Errorf("the target stopped the stream: %s", statusText(cmd))
	}
	c.mu.Lock()
	c.readErr = err
	c.mu.Unlock()
	_ = c.nc.Close()
}

// errStopping refuses writes once the session is being stopped.
var errStopping = errors.New("the target is being stopped")

// Write implements gortmplib.Conn: one message under the write deadline.
func (c *rtmpConn) Write(msg message.Message) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		return errStopping
	}
	c.writing = true
	// Set under mu, so that interrupt's deadline cannot be overwritten.
	_ = c.nc.SetWriteDeadline(time.Now().Add(c.timeout))
	c.mu.Unlock()
	err := c.w.Write(msg)
	c.mu.Lock()
	c.writing = false
	if err != nil {
		c.writeFailed = true
	}
	c.mu.Unlock()
	return err
}

// Read implements gortmplib.Conn; readLoop is the only reader.
func (c *rtmpConn) Read() (message.Message, error) {
	return nil, errors.New("restream: the connection is read by its read loop")
}

// BytesReceived implements gortmplib.Conn.
func (c *rtmpConn) BytesReceived() uint64 { return c.bc.Reader.Count() }

// BytesSent implements gortmplib.Conn.
func (c *rtmpConn) BytesSent() uint64 { return c.bc.Writer.Count() }

// cause explains a write error: what readLoop saw is the better reason.
func (c *rtmpConn) cause(err error) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.readErr == nil || c.closed || c.interrupted {
		return err
	}
	if errors.Is(c.readErr, io.EOF) {
		return errors.New("the target closed the connection")
	}
	if isConnError(c.readErr) {
		return fmt.Errorf("the connection broke: %w", c.readErr)
	}
	return c.readErr
}

// interrupt stops the session's writes: no new one starts, and one under
// way (perhaps blocked on a stalled target) is cut short.
func (c *rtmpConn) interrupt() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopping = true
	if c.writing && !c.closed {
		c.interrupted = true
		_ = c.nc.SetWriteDeadline(time.Unix(1, 0))
	}
}

// unpublish tells the server the broadcast is over (FCUnpublish,
// deleteStream), as OBS and ffmpeg do, when the connection is sound (no
// write failed or was cut short); best effort, under a short deadline.
func (c *rtmpConn) unpublish(streamKey string) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.mu.Lock()
	ok := !c.writeFailed && !c.interrupted && c.readErr == nil
	c.mu.Unlock()
	if !ok {
		return
	}
	_ = c.nc.SetWriteDeadline(time.Now().Add(min(c.timeout, time.Second)))
	_ = c.w.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "FCUnpublish", CommandID: 6, Arguments: []any{nil, streamKey}})
	_ = c.w.Write(&message.CommandAMF0{ChunkStreamID: 3, Name: "deleteStream", CommandID: 7, Arguments: []any{nil, float64(1)}})
}

// close closes the connection and waits for readLoop.
func (c *rtmpConn) close() {
	c.mu.Lock()
	c.closed = true
	done := c.readDone
	c.mu.Unlock()
	_ = c.nc.Close()
	if done != nil {
		<-done
	}
}
