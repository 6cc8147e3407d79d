package nodeproto

import (
	"encoding/json"
	"math"
	"reflect"
	"testing"
)

// The origin decodes worker messages from strangers: whatever the bytes,
// decoding never panics, and what it accepts holds to the protocol's
// bounds and survives a round trip. Seeds: testdata/fuzz/FuzzDecodeWorkerMessages.
func FuzzDecodeWorkerMessages(f *testing.F) {
	good, _ := json.Marshal(validComplete())
	for _, seed := range []struct {
		kind uint8
		body string
	}{
		{0, `{}`}, {1, `{"progress":42}`}, {2, `{"error":"not a video file: no video stream found","permanent":true}`},
		{3, string(good)}, {3, `{"job":"a.1.1-0","duration_seconds":1e308,"renditions":[],"files":[]}`},
		{3, `{"job":"a.1.1-0","duration_seconds":2,"renditions":[{"name":"480p","width":2,"height":2,"bitrate":1}],"files":[{"path":"480p/../x.m4s","size":1,"sha256":""}]}`},
		{1, `{"progress":-1}`}, {2, `{"error":"\u0000"}`}, {0, `{"x":1}`},
	} {
		f.Add(seed.kind, []byte(seed.body))
	}
	f.Fuzz(func(t *testing.T, kind uint8, body []byte) {
		switch kind % 4 {
		case 0:
			_, _ = DecodeClaim(body)
		case 1:
			if p, err := DecodeProgress(body); err == nil && (p.Progress < 0 || p.Progress > 100) {
				t.Fatalf("accepted progress %d", p.Progress)
			}
		case 2:
			if fl, err := DecodeFailure(body); err == nil && (len(fl.Error) == 0 || len(fl.Error) > MaxFailureMessage) {
				t.Fatalf("accepted a failure of %d bytes", len(fl.Error))
			}
		case 3:
			c, err := DecodeComplete(body)
			if err != nil {
				return
			}
			if _, err := ParseJobRef(c.Job); err != nil {
				t.Fatalf("accepted job %q", c.Job)
			}
			if math.IsNaN(c.DurationSeconds) || c.DurationSeconds <= 0 || len(c.Renditions) == 0 || len(c.Files) == 0 {
				t.Fatalf("accepted %+v", c)
			}
			for _, fl := range c.Files {
				if CheckOutputPath(fl.Path) != nil || !ValidSHA256(fl.SHA256) || fl.Size < 0 || fl.Size > MaxFileBytes(fl.Path) {
					t.Fatalf("accepted file %+v", fl)
				}
			}
			again, err := json.Marshal(c)
			if err != nil {
				t.Fatal(err)
			}
			c2, err := DecodeComplete(again)
			if err != nil || !reflect.DeepEqual(c, c2) {
				t.Fatalf("round trip: %v\n%+v\n%+v", err, c, c2)
			}
		}
	})
}

// Paths and job names from strangers: an accepted path has no way out of
// the video's directory; an accepted job name round-trips. Seeds:
// testdata/fuzz/FuzzWorkerNames.
func FuzzWorkerNames(f *testing.F) {
	for _, s := range []string{"master.m3u8", "480p/x.m4s", "../x", "480p/../x.m4s", "abc.1.1-0", "abc.9999.99999999999999999999-1", "storyboard-1.jpg"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckOutputPath(s) == nil {
			for _, part := range []string{"..", "./", "//", "\\", "\x00"} {
				if containsPart(s, part) {
					t.Fatalf("accepted path %q", s)
				}
			}
			if s[0] == '/' || len(s) > 200 {
				t.Fatalf("accepted path %q", s)
			}
		}
		if ref, err := ParseJobRef(s); err == nil {
			if ref.String() != s || ref.Attempt < 1 {
				t.Fatalf("job %q reads as %+v", s, ref)
			}
		}
	})
}

func containsPart(s, part string) bool {
	for i := 0; i+len(part) <= len(s); i++ {
		if s[i:i+len(part)] == part {
			return true
		}
	}
	return false
}
