package webhook

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

const testSecret = "whsec_abcdefghijklmnopqrstuvwxyz234567"

var (
	testBody = []byte(`{"id":"evt_1-0","type":"video.ready","created_at":"2030-01-02T03:04:05Z","data":{"id":"v1"}}`)
	testTime = time.Unix(1_900_000_000, 0)
)

func TestSignMatchesSpec(t *testing.T) {
	t.Parallel()
	// Computed independently of Sign, from the documented definition.
	h := hmac.New(sha256.New, []byte(testSecret))
	h.Write([]byte("1900000000." + string(testBody)))
	want := "t=1900000000,v1=" + hex.EncodeToString(h.Sum(nil))
	if got := Sign(testSecret, testTime.Add(999*time.Millisecond), testBody); got != want {
		t.Errorf("Sign = %q, want %q", got, want)
	}
}

// verifyCase is one header for Verify of testBody with testSecret at
// testTime and a tolerance of one minute; want is nil or the error it wraps.
type verifyCase struct {
	name   string
	header string
	want   error
}

func verifyCases() []verifyCase {
	good := Sign(testSecret, testTime, testBody)
	goodSig := strings.TrimPrefix(good, "t=1900000000,")
	other := Sign("whsec_other", testTime, testBody)
	otherSig := strings.TrimPrefix(other, "t=1900000000,")
	ts := func(t time.Time) string { return strconv.FormatInt(t.Unix(), 10) }
	return []verifyCase{
		{"good", good, nil},
		{"reordered with spaces", goodSig + ", t=1900000000", nil},
		{"rotated secret", "t=1900000000," + otherSig + "," + goodSig, nil},
		{"unknown scheme ignored", good + ",v0=whatever,x=1", nil},
		{"30 s late", Sign(testSecret, testTime.Add(-30*time.Second), testBody), nil},
		{"30 s early", Sign(testSecret, testTime.Add(30*time.Second), testBody), nil},
		{"other secret", other, ErrSignatureMismatch},
		{"other body", Sign(testSecret, testTime, append(testBody, ' ')), ErrSignatureMismatch},
		{"timestamp changed", "t=1900000001," + goodSig, ErrSignatureMismatch},
		{"too old", Sign(testSecret, testTime.Add(-2*time.Minute), testBody), ErrTooOld},
		{"too far ahead", Sign(testSecret, testTime.Add(2*time.Minute), testBody), ErrTooOld},
		{"ancient", Sign(testSecret, time.Unix(0, 0), testBody), ErrTooOld},
		{"empty", "", ErrMalformedHeader},
		{"no t", goodSig, ErrMalformedHeader},
		{"no v1", "t=1900000000", ErrMalformedHeader},
		{"two t", "t=1900000000,t=1900000000," + goodSig, ErrMalformedHeader},
		{"negative t", "t=-1," + goodSig, ErrMalformedHeader},
		{"signed t", "t=+1900000000," + goodSig, ErrMalformedHeader},
		{"huge t", "t=99999999999999999999," + goodSig, ErrMalformedHeader},
		{"empty t", "t=," + goodSig, ErrMalformedHeader},
		{"short v1", "t=1900000000,v1=abcd", ErrMalformedHeader},
		{"non-hex v1", "t=1900000000,v1=" + strings.Repeat("zz", 32), ErrMalformedHeader},
		{"not key=value", good + ",garbage", ErrMalformedHeader},
		{"trailing comma", good + ",", ErrMalformedHeader},
		{"too many v1", "t=" + ts(testTime) + strings.Repeat(","+otherSig, maxSignatures) + "," + goodSig, ErrMalformedHeader},
		{"too long", good + "," + strings.Repeat("x=1,", maxHeaderLen/4), ErrMalformedHeader},
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	for _, tc := range verifyCases() {
		err := Verify(testSecret, tc.header, testBody, time.Minute, testTime)
		switch {
		case tc.want == nil && err != nil:
			t.Errorf("%s: Verify(%q) = %v, want nil", tc.name, tc.header, err)
		case tc.want != nil && !errors.Is(err, tc.want):
			t.Errorf("%s: Verify(%q) = %v, want %v", tc.name, tc.header, err, tc.want)
		}
	}
}

func TestVerifyDefaults(t *testing.T) {
	t.Parallel()
	h := Sign(testSecret, testTime.Add(-4*time.Minute), testBody)
	if err := Verify(testSecret, h, testBody, 0, testTime); err != nil {
		t.Errorf("4 min old with the default tolerance: %v", err)
	}
	h = Sign(testSecret, testTime.Add(-6*time.Minute), testBody)
	if err := Verify(testSecret, h, testBody, 0, testTime); !errors.Is(err, ErrTooOld) {
		t.Errorf("6 min old with the default tolerance: %v", err)
	}
	if err := Verify("", Sign("", testTime, testBody), testBody, 0, testTime); err == nil {
		t.Errorf("an empty secret verified")
	}
}

func FuzzVerify(f *testing.F) {
	for _, tc := range verifyCases() {
		f.Add(tc.header, testBody)
	}
	f.Fuzz(func(t *testing.T, header string, body []byte) {
		err := Verify(testSecret, header, body, time.Minute, testTime)
		if err == nil {
			// Accepted: it must carry the right signature for its own
			// timestamp, and that timestamp must be recent.
			ts, _, perr := parseHeader(header)
			if perr != nil {
				t.Fatalf("accepted %q, which does not parse: %v", header, perr)
			}
			want := strings.TrimPrefix(Sign(testSecret, time.Unix(ts, 0), body), "t="+strconv.FormatInt(ts, 10)+",")
			if !strings.Contains(strings.ToLower(header), want) {
				t.Fatalf("accepted %q without %s", header, want)
			}
			if d := testTime.Unix() - ts; d > 60 || d < -60 {
				t.Fatalf("accepted a timestamp %d s off", d)
			}
		} else if !errors.Is(err, ErrMalformedHeader) && !errors.Is(err, ErrSignatureMismatch) && !errors.Is(err, ErrTooOld) {
			t.Fatalf("Verify(%q) = %v: not one of the documented errors", header, err)
		}
		// What Sign makes always verifies.
		if err := Verify(testSecret, Sign(testSecret, testTime, body), body, time.Minute, testTime); err != nil {
			t.Fatalf("Verify(Sign) = %v", err)
		}
	})
}
