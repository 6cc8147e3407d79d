package playerapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/gin-gonic/gin"
)

// maxErrorDetail caps the part of a JSON decoding error echoed back, since
// it may quote the client's input.
const maxErrorDetail = 200

// nameRequest is the body of the requests that take just a name. Name is a
// pointer to tell a missing name from an empty one.
type nameRequest struct {
	Name *string `json:"name"`
}

// decodeJSON reads the request body, at most a.maxBody bytes, into v: one
// JSON object with no unknown fields and nothing after it. On failure it
// answers 400 or 413 and returns false.
func (a *API) decodeJSON(c *gin.Context, v any) bool {
	data, err := readLimited(c, a.maxBody)
	if err != nil {
		bodyFailed(c, err, fmt.Sprintf("request body is larger than %d bytes", a.maxBody))
		return false
	}
	if msg := decodeStrict(data, v); msg != "" {
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, msg)
		return false
	}
	return true
}

// decodeStrict decodes data into v and returns "" or a message for the
// client.
func decodeStrict(data []byte, v any) string {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return describeJSONError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return "request body must be a single JSON object with nothing after it"
	}
	return ""
}

func describeJSONError(err error) string {
	var (
		syntax    *json.SyntaxError
		wrongType *json.UnmarshalTypeError
	)
	switch {
	case errors.Is(err, io.EOF):
		return "request body must be a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "request body is truncated JSON"
	case errors.As(err, &syntax):
		return fmt.Sprintf("request body is not valid JSON (at byte %d): %s", syntax.Offset, clip(syntax.Error()))
	case errors.As(err, &wrongType):
		if wrongType.Field == "" {
			return "request body must be a JSON object"
		}
		return fmt.Sprintf("field %q must be a %s, not a JSON %s", clip(wrongType.Field), jsonKind(wrongType.Type.Kind().String()), wrongType.Value)
	}
	// encoding/json reports unknown fields only as text:
	// `json: unknown field "x"`.
	return "request body is invalid: " + clip(strings.TrimPrefix(err.Error(), "json: "))
}

// jsonKind names a Go kind as JSON calls it.
func jsonKind(kind string) string {
	switch kind {
	case "string":
		return "string"
	case "bool":
		return "boolean"
	case "slice", "array":
		return "array"
	case "map", "struct":
		return "object"
	}
	return "number"
}

func clip(s string) string {
	if len(s) <= maxErrorDetail {
		return s
	}
	// Cut on a rune boundary so the message stays valid UTF-8.
	cut := maxErrorDetail
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + "..."
}

// A bounded request body must come at bodyMinRate on average, after
// bodyGrace: a client that sends one slowly must not hold the request
// (and what it was admitted to: a completion slot, a limiter's place)
// for ever. The origin's server has no read timeout of its own (uploads
// of any length go through it).
const (
	bodyGrace   = 10 * time.Second
	bodyMinRate = 32 << 10 // bytes a second
)

// readLimited reads the request body, failing past limit bytes or when it
// comes slower than bodyMinRate (after bodyGrace).
func readLimited(c *gin.Context, limit int64) ([]byte, error) {
	return readPaced(c.Writer, c.Request, limit, bodyGrace, bodyMinRate)
}

func readPaced(w http.ResponseWriter, r *http.Request, limit int64, grace time.Duration, rate float64) ([]byte, error) {
	rc := http.NewResponseController(w)
	data, err := io.ReadAll(&pacedBody{r: http.MaxBytesReader(w, r.Body, limit), rc: rc, start: time.Now(), grace: grace, rate: rate})
	// No deadline after the body: the server's read that watches for the
	// client going away would end the request's context at it.
	_ = rc.SetReadDeadline(time.Time{})
	return data, err
}

// codeRequestTimeout: a request body that came too slowly (408).
const codeRequestTimeout = "request_timeout"

// bodyFailed answers a request whose body readLimited could not read: 413
// (tooLarge) past the limit, 408 when it came too slowly (a client may
// send it again), 400 otherwise.
func bodyFailed(c *gin.Context, err error, tooLarge string) {
	var big *http.MaxBytesError
	var ne net.Error
	switch {
	case errors.As(err, &big):
		WriteError(c, http.StatusRequestEntityTooLarge, codePayloadTooLarge, tooLarge)
	case errors.As(err, &ne) && ne.Timeout():
		WriteError(c, http.StatusRequestTimeout, codeRequestTimeout,
			fmt.Sprintf("the request body came too slowly (it must come within %s plus 1 s per %d KiB)", bodyGrace, bodyMinRate>>10))
	default:
		WriteError(c, http.StatusBadRequest, codeInvalidRequest, "could not read the request body")
	}
}

// pacedBody moves the connection's read deadline on before each read: the
// bytes read so far, and the next 64 KiB, at bodyMinRate after bodyGrace.
type pacedBody struct {
	r     io.Reader
	rc    *http.ResponseController
	start time.Time
	grace time.Duration
	rate  float64 // bytes a second
	n     int64
}

func (p *pacedBody) Read(b []byte) (int, error) {
	allowed := p.grace + time.Duration(float64(p.n+64<<10)/p.rate*float64(time.Second))
	// A writer that takes no deadline (a test recorder) reads as it is.
	_ = p.rc.SetReadDeadline(p.start.Add(allowed))
	n, err := p.r.Read(b)
	p.n += int64(n)
	return n, err
}
