package playerapi

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
)

// nodeReq sends a node-protocol request with body signed by signer.
func (e *env) nodeReq(t *testing.T, path, token string, body any, signer ed25519.PrivateKey) response {
	t.Helper()
	b, _ := json.Marshal(body)
	req := httptest.NewRequest("POST", path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(nodeproto.SignatureHeader, nodeproto.Sign(signer, b))
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func joinBody(k ed25519.PrivateKey, region string, at time.Time) nodeproto.JoinRequest {
	return nodeproto.JoinRequest{Role: "edge", Region: region, PublicURL: "http://edge.test:8081",
		PublicKey: base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey)), Time: at}
}

func TestNodeJoinHeartbeatAndIdentity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := decode[nodeTokenJSON](t, e.doJSON(t, "POST", "/v1/node-tokens", testAdminKey, `{"name":"eu"}`).wantStatus(t, http.StatusCreated))
	if !strings.HasPrefix(tok.Token, "nt_") {
		t.Fatalf("token %+v", tok)
	}
	a, b := newKey(t), newKey(t)
	now := time.Now()
	// A join signed by another key than the one it names is refused.
	e.nodeReq(t, "/v1/nodes/join", tok.Token, joinBody(a, "eu", now), b).wantError(t, http.StatusForbidden, "forbidden")
	// So is a stale one, a wrong token, and a bad region.
	e.nodeReq(t, "/v1/nodes/join", tok.Token, joinBody(a, "eu", now.Add(-5*time.Minute)), a).wantError(t, http.StatusForbidden, "forbidden")
	e.nodeReq(t, "/v1/nodes/join", "nt_wrongwrongwrongwrongwrongwrongwron", joinBody(a, "eu", now), a).wantError(t, http.StatusUnauthorized, codeUnauthorized)
	e.nodeReq(t, "/v1/nodes/join", tok.Token, joinBody(a, "eu west!", now), a).wantError(t, http.StatusBadRequest, codeInvalidRequest)

	ra := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", tok.Token, joinBody(a, "eu", now), a).wantStatus(t, http.StatusCreated))
	if ra.ID != nodeproto.NodeID(a.Public().(ed25519.PublicKey)) || len(ra.Siblings) != 0 {
		t.Fatalf("join answer %+v", ra)
	}
	rb := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(b, "eu", now), b).wantStatus(t, http.StatusCreated))
	if len(rb.Siblings) != 1 || rb.Siblings[0].ID != ra.ID {
		t.Fatalf("second edge's siblings %+v", rb.Siblings)
	}
	// b cannot heartbeat for a, even with a's token.
	hb := nodeproto.Heartbeat{Time: now, Connections: 7, Hits: 3, Misses: 1, StreamBytes: map[string]int64{"abc": 100, "../x": 1}}
	e.nodeReq(t, "/v1/nodes/"+ra.ID+"/heartbeat", tok.Token, hb, b).wantError(t, http.StatusForbidden, "forbidden")
	e.nodeReq(t, "/v1/nodes/"+ra.ID+"/heartbeat", tok.Token, hb, a).wantStatus(t, http.StatusOK)
	e.nodeReq(t, "/v1/nodes/nosuchnode/heartbeat", tok.Token, hb, a).wantError(t, http.StatusNotFound, codeNotFound)

	list := decode[nodeListJSON](t, e.doJSON(t, "GET", "/v1/nodes", testAdminKey, "").wantStatus(t, http.StatusOK))
	var got nodeJSON
	for _, n := range list.Data {
		if n.ID == ra.ID {
			got = n
		}
	}
	if got.Connections != 7 || got.HitRatio != 0.75 || got.StreamBytes["abc"] != 100 || len(got.StreamBytes) != 1 || got.Region != "eu" {
		t.Fatalf("listed node %+v", got)
	}
	e.doJSON(t, "GET", "/v1/nodes", "", "").wantError(t, http.StatusUnauthorized, codeUnauthorized)

	// Revoking the token drops its node at the next heartbeat.
	e.doJSON(t, "DELETE", "/v1/node-tokens/"+tok.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	e.nodeReq(t, "/v1/nodes/"+ra.ID+"/heartbeat", tok.Token, hb, a).wantError(t, http.StatusUnauthorized, codeUnauthorized)
	e.doJSON(t, "DELETE", "/v1/node-tokens/"+tok.ID, testAdminKey, "").wantError(t, http.StatusNotFound, codeNotFound)
}

func TestRouteAndPlay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	v := e.createVideo(t, `{"title":"routed"}`)
	// No edge: the origin serves.
	r := decode[routeJSON](t, e.doJSON(t, "GET", "/v1/route/"+v.ID, "", "").wantStatus(t, http.StatusOK))
	if r.URL != testPublicURL+"/hls/"+v.ID+"/master.m3u8" || r.NodeID != "" || r.Reason == "" {
		t.Fatalf("route without edges: %+v", r)
	}
	k := newKey(t)
	e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(k, "eu", time.Now()), k).wantStatus(t, http.StatusCreated)
	res := e.doJSON(t, "GET", "/play/"+v.ID+"?region=eu&token=abc", "", "").wantStatus(t, http.StatusFound)
	if loc := res.header.Get("Location"); loc != "http://edge.test:8081/hls/"+v.ID+"/master.m3u8?token=abc" {
		t.Fatalf("/play Location %q", loc)
	}
	e.doJSON(t, "GET", "/play/nosuchvideo", "", "").wantError(t, http.StatusNotFound, codeNotFound)
	e.doJSON(t, "GET", "/v1/route/NOT-AN-ID", "", "").wantError(t, http.StatusNotFound, codeNotFound)
}
