package playerapi

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
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

// FuzzPutSourceMultipart sends arbitrary bytes as a multipart/form-data
// upload of a video's source: the answer is 202 (a video), or a JSON error
// (400 no file part or a broken body, 413, 422 not a video), never a
// server error, and a refused upload leaves the video waiting.
func FuzzPutSourceMultipart(f *testing.F) {
	const boundary = "shoalfuzzboundary"
	e := newEnv(f, Config{MaxUploadBytes: 4096})
	for _, seed := range []string{
		"--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.mp4\"\r\n\r\nnot a video\r\n--" + boundary + "--\r\n",
		"--" + boundary + "\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--" + boundary + "--\r\n",
		"--" + boundary + "--\r\n", "", "--" + boundary, "garbage",
		"--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"../../x\"\r\n\r\n" + strings.Repeat("A", 5000) + "\r\n--" + boundary + "--\r\n",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := e.store.CreateVideo(t.Context(), routing.VideoSpec{Title: "fuzz"})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("PUT", "/v1/videos/"+v.ID+"/source", bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		req.Header.Set("Content-Type", "multipart/form-data; boundary="+boundary)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusAccepted:
		case http.StatusBadRequest, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" {
				t.Fatalf("status %d without a JSON error: %s", rec.Code, rec.Body.Bytes())
			}
			got, err := e.store.GetVideo(t.Context(), v.ID)
			if err != nil {
				t.Fatal(err)
			}
			want := routing.VideoWaiting
			if rec.Code == http.StatusUnprocessableEntity {
				want = routing.VideoFailed
			}
			if got.Status != want {
				t.Fatalf("after a %d the video is %s, want %s", rec.Code, got.Status, want)
			}
		default:
			t.Fatalf("status %d for body %q: %s", rec.Code, body, rec.Body.Bytes())
		}
	})
}

// FuzzTusUploadMetadata sends arbitrary Upload-Metadata headers to the tus
// creation endpoint: never a server error, and nothing is created for a
// video id that does not exist.
func FuzzTusUploadMetadata(f *testing.F) {
	e := newEnv(f, Config{MaxUploadBytes: 4096})
	v, err := e.store.CreateVideo(f.Context(), routing.VideoSpec{Title: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	for _, seed := range []string{
		"video_id " + base64.StdEncoding.EncodeToString([]byte(v.ID)),
		"video_id " + base64.StdEncoding.EncodeToString([]byte("../../etc/passwd")),
		"video_id", "video_id !!!", "filename eA==,video_id", "", ",,,", "video_id " + strings.Repeat("QUFB", 300),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, meta string) {
		req := httptest.NewRequest("POST", "/v1/uploads/", nil)
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		req.Header.Set("Tus-Resumable", "1.0.0")
		req.Header.Set("Upload-Length", "10")
		req.Header.Set("Upload-Metadata", meta)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusCreated:
			loc := rec.Header().Get("Location")
			if !strings.HasPrefix(loc, testPublicURL+"/v1/uploads/"+v.ID+"-") {
				t.Fatalf("created %q for metadata %q", loc, meta)
			}
			// Free the video for the next input.
			del := httptest.NewRequest("DELETE", strings.TrimPrefix(loc, testPublicURL), nil)
			del.Header.Set("Authorization", "Bearer "+testAdminKey)
			del.Header.Set("Tus-Resumable", "1.0.0")
			drec := httptest.NewRecorder()
			e.h.ServeHTTP(drec, del)
			if drec.Code != http.StatusNoContent {
				t.Fatalf("terminating %s: %d %s", loc, drec.Code, drec.Body.Bytes())
			}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusConflict:
		default:
			t.Fatalf("status %d for metadata %q: %s", rec.Code, meta, rec.Body.Bytes())
		}
	})
}

// FuzzDeliveryReport sends arbitrary bytes to POST /v1/delivery-reports
// (public, no key): the answer is 202 for a live node, or a JSON 400, 404,
// 413 or 429, never a server error, and nothing is quarantined without
// the audit or enough networks.
func FuzzDeliveryReport(f *testing.F) {
	e := newEnv(f, Config{})
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, ed25519.SeedSize))
	jb := joinBody(k, "eu", time.Now())
	jb.TokenSHA256 = nodeproto.TokenSHA256(testAdminKey)
	b, _ := json.Marshal(jb)
	req := httptest.NewRequest("POST", "/v1/nodes/join", bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set(nodeproto.SignatureHeader, nodeproto.Sign(k, b))
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		f.Fatalf("join: %d %s", rec.Code, rec.Body.Bytes())
	}
	id := nodeproto.NodeID(k.Public().(ed25519.PublicKey))
	seg := "http://edge.test:8081/hls/abc/720p/s-0-1.m4s"
	for _, seed := range []string{
		`{"node_id":"` + id + `","url":"` + seg + `","kind":"hash_mismatch","expected_sha256":"` + strings.Repeat("a", 64) + `"}`,
		`{"node_id":"` + id + `","url":"` + seg + `","kind":"timeout","detail":"\u0000\n"}`,
		`{"node_id":"` + id + `","url":"http://edge.test:8081/hls/abc/720p/manifest.txt","kind":"stale_manifest"}`,
		`{"node_id":"` + id + `","url":"http://edge.test:8081/hls/%2e%2e/x.m4s","kind":"timeout"}`,
		`{"node_id":"` + id + `","url":"javascript:alert(1)","kind":"timeout"}`,
		`{"node_id":"aaaaaaaaaaaaaaaaaaaa","url":"` + seg + `","kind":"unlisted"}`,
		`{}`, `[`, `null`, ``,
	} {
		f.Add([]byte(seed), uint8(1))
	}
	f.Fuzz(func(t *testing.T, body []byte, net uint8) {
		req := httptest.NewRequest("POST", "/v1/delivery-reports", bytes.NewReader(body))
		req.RemoteAddr = fmt.Sprintf("10.%d.0.1:1000", net)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusAccepted:
			var out deliveryReportJSON
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || !out.Accepted {
				t.Fatalf("202 with %s", rec.Body.Bytes())
			}
		case http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" {
				t.Fatalf("%d without a JSON error: %s", rec.Code, rec.Body.Bytes())
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.Bytes())
		}
	})
}

// FuzzNodeProtocol sends arbitrary bodies, signed by the key they may name,
// to the node join and heartbeat: the answer is a join or heartbeat that
// took, or a JSON 4xx, never a server error (the untrusted node protocol).
func FuzzNodeProtocol(f *testing.F) {
	e := newEnv(f, Config{})
	k := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize))
	id := nodeproto.NodeID(k.Public().(ed25519.PublicKey))
	good := joinBody(k, "eu", time.Now())
	good.TokenSHA256 = nodeproto.TokenSHA256(testAdminKey)
	gb, _ := json.Marshal(good)
	hb, _ := json.Marshal(nodeproto.Heartbeat{Time: time.Now(), Connections: 3, StreamBytes: map[string]int64{"abc": 10}})
	for _, seed := range [][]byte{gb, hb, []byte(`{}`), []byte(`{"role":"edge","public_key":"AAAA","time":"x"}`),
		[]byte(`{"time":"2026-12-05T00:00:00Z","stream_bytes":{"../../x":-1}}`), []byte(`[`), nil} {
		f.Add(seed, false)
		f.Add(seed, true)
	}
	f.Fuzz(func(t *testing.T, body []byte, heartbeat bool) {
		path := "/v1/nodes/join"
		if heartbeat {
			path = "/v1/nodes/" + id + "/heartbeat"
		}
		req := httptest.NewRequest("POST", path, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		req.Header.Set(nodeproto.SignatureHeader, nodeproto.Sign(k, body))
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		switch {
		case rec.Code == http.StatusCreated && !heartbeat, rec.Code == http.StatusOK && heartbeat:
		case rec.Code >= 400 && rec.Code < 500:
			var out errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Error.Code == "" {
				t.Fatalf("%d without a JSON error: %s", rec.Code, rec.Body.Bytes())
			}
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, body, rec.Body.Bytes())
		}
	})
}

// FuzzVerifyReport gives VerifyReport arbitrary signature headers for a
// body: it never panics, and accepts only the header the key made for
// exactly that body (the order of keyid and sig, and spaces, aside).
func FuzzVerifyReport(f *testing.F) {
	_, key, _ := ed25519.GenerateKey(nil)
	pub := key.Public().(ed25519.PublicKey)
	a := &API{acct: Accounting{Key: key}.withDefaults()}
	body := []byte(`{"epoch":"20261205T070000Z","nodes":[]}`)
	good := a.sign(body).sig
	keyID, sig, _ := strings.Cut(strings.TrimPrefix(good, "keyid="), ", sig=")
	for _, seed := range []string{
		good, "sig=" + sig + ", keyid=" + keyID, " keyid=" + keyID + " ,sig=" + sig + " ",
		"keyid=" + keyID, "sig=" + sig, "keyid=,sig=", ",", "=", "", "keyid=" + keyID + ", sig=" + sig + "==",
		"keyid=" + keyID + ", sig=" + sig + ", sig=" + sig, strings.Repeat("k", 600),
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, header string) {
		err := VerifyReport(pub, body, header)
		if err != nil {
			return
		}
		k, s := "", ""
		for _, part := range strings.Split(header, ",") {
			name, v, _ := strings.Cut(strings.TrimSpace(part), "=")
			if name == "keyid" {
				k = v
			} else {
				s = v
			}
		}
		if k != keyID || s != sig {
			t.Fatalf("verified %q, which is not the signature (%q)", header, good)
		}
	})
}
