package playerapi

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

// FuzzCreateLiveStreamBody sends arbitrary bytes as the body of
// POST /v1/live-streams: the answer must be 201, or a JSON error with 400 or
// 413, never a server error.
func FuzzCreateLiveStreamBody(f *testing.F) {
	const maxBody = 256
	e := newEnv(f, Config{MaxBodyBytes: maxBody})
	for _, seed := range []string{
		`{"name":"show"}`,
		`{"name":" x "}`,
		`{"name":""}`,
		`{"name":null}`,
		`{"name":5}`,
		`{"name":"a","x":1}`,
		`{"name":"\u0000"}`,
		`{"name":"\ud800"}`,
		"{\"name\":\"\xff\xfe\"}",
		`{"NAME":"case"}`,
		`{"name":"a"} {"name":"b"}`,
		`[`, `{`, `"`, `null`, `[]`, `1e999`, ``,
		`{"name":"` + strings.Repeat("a", maxBody) + `"}`,
		`{"name":"` + strings.Repeat("é", 120) + `"}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest("POST", "/v1/live-streams", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusCreated:
			ls := decode[liveStreamJSON](t, response{status: rec.Code, body: rec.Body.Bytes()})
			if ls.ID == "" || ls.Name == "" || ls.StreamKey == "" {
				t.Fatalf("201 with incomplete stream %s", rec.Body.Bytes())
			}
		case http.StatusBadRequest:
			checkErrorBody(t, rec.Header(), rec.Body.Bytes(), "invalid_request")
		case http.StatusRequestEntityTooLarge:
			if len(body) <= maxBody {
				t.Fatalf("413 for a %d-byte body", len(body))
			}
			checkErrorBody(t, rec.Header(), rec.Body.Bytes(), "payload_too_large")
		default:
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body.Bytes())
		}
	})
}
