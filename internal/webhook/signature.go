package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader is the header that carries a delivery's signature.
const SignatureHeader = "Shoal-Signature"

// DefaultTolerance is how far from the receiver's clock a signature's
// timestamp may be when Verify is given no tolerance.
const DefaultTolerance = 5 * time.Minute

// Limits on the header Verify parses, so that hostile input costs little.
const (
	maxHeaderLen  = 4096
	maxSignatures = 8
)

// Errors of Verify; each is wrapped with details.
var (
	// ErrMalformedHeader: the header is not "t=<unix seconds>,v1=<hex>[,v1=<hex>...]".
	ErrMalformedHeader = errors.New("webhook: malformed " + SignatureHeader + " header")
	// ErrSignatureMismatch: no v1 signature matches the body and the secret.
	ErrSignatureMismatch = errors.New("webhook: no signature matches the body")
	// ErrTooOld: the signature's timestamp is outside the tolerance
	// (a replayed delivery, or clocks far apart).
	ErrTooOld = errors.New("webhook: signature timestamp outside the tolerance")
)

// Sign returns the Shoal-Signature header value for body sent at t:
// "t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>" keyed with secret>".
func Sign(secret string, t time.Time, body []byte) string {
	ts := t.Unix()
	return "t=" + strconv.FormatInt(ts, 10) + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret string, ts int64, body []byte) []byte {
	h := hmac.New(sha256.New, []byte(secret))
	h.Write(strconv.AppendInt(nil, ts, 10))
	h.Write([]byte{'.'})
	h.Write(body)
	return h.Sum(nil)
}

// Verify checks a Shoal-Signature header for body, as a receiver does:
// one of its v1 signatures (several are allowed, for secret rotation) must
// be the HMAC of its timestamp and body under secret, and the timestamp
// must be within tolerance of now, either way (tolerance <= 0 means
// DefaultTolerance). Keys other than t and v1 are ignored. Signatures are
// compared in constant time. The error wraps ErrMalformedHeader,
// ErrSignatureMismatch or ErrTooOld.
//
// Verify the raw body as received, before any JSON decoding.
func Verify(secret, header string, body []byte, tolerance time.Duration, now time.Time) error {
	if secret == "" {
		return errors.New("webhook: no secret to verify the signature with")
	}
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	ts, sigs, err := parseHeader(header)
	if err != nil {
		return err
	}
	want := mac(secret, ts, body)
	ok := false
	for _, s := range sigs {
		ok = hmac.Equal(s, want) || ok
	}
	if !ok {
		return fmt.Errorf("%w (%d signature(s) checked)", ErrSignatureMismatch, len(sigs))
	}
	// Compare in seconds: durations of far-off timestamps overflow.
	age := now.Unix() - ts
	limit := int64(tolerance / time.Second)
	if age > limit || age < -limit {
		return fmt.Errorf("%w: signed at %d, %d s from now, tolerance %s", ErrTooOld, ts, age, tolerance)
	}
	return nil
}

// parseHeader splits "t=<ts>,v1=<hex>,..." into the timestamp and the
// decoded v1 signatures.
func parseHeader(header string) (ts int64, sigs [][]byte, err error) {
	malformed := func(format string, args ...any) (int64, [][]byte, error) {
		return 0, nil, fmt.Errorf("%w: "+format, append([]any{ErrMalformedHeader}, args...)...)
	}
	if header == "" {
		return malformed("missing")
	}
	if len(header) > maxHeaderLen {
		return malformed("longer than %d bytes", maxHeaderLen)
	}
	haveTS := false
	for i, part := range strings.Split(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return malformed("element %d is not key=value", i+1)
		}
		switch k {
		case "t":
			if haveTS {
				return malformed("more than one t=")
			}
			if v == "" || len(v) > 18 || strings.Trim(v, "0123456789") != "" {
				return malformed("t= must be a Unix time in seconds")
			}
			ts, err = strconv.ParseInt(v, 10, 64)
			if err != nil {
				return malformed("t= must be a Unix time in seconds")
			}
			haveTS = true
		case "v1":
			if len(sigs) == maxSignatures {
				return malformed("more than %d v1= signatures", maxSignatures)
			}
			s, err := hex.DecodeString(v)
			if err != nil || len(s) != sha256.Size {
				return malformed("v1= must be %d hex digits", 2*sha256.Size)
			}
			sigs = append(sigs, s)
		}
	}
	if !haveTS {
		return malformed("no t= timestamp")
	}
	if len(sigs) == 0 {
		return malformed("no v1= signature")
	}
	return ts, sigs, nil
}
