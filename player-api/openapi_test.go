package playerapi

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gin-gonic/gin"
	"gopkg.in/yaml.v3"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/webhook"
)

// openAPIMethods are the operation keys of an OpenAPI path item.
var openAPIMethods = []string{"get", "put", "post", "delete", "options", "head", "patch", "trace"}

// parseSpec decodes an OpenAPI document into plain maps and slices.
func parseSpec(t *testing.T, data []byte) map[string]any {
	t.Helper()
	var doc map[string]any
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatalf("the OpenAPI document is not valid YAML: %v", err)
	}
	if doc == nil {
		t.Fatal("the OpenAPI document is empty")
	}
	return doc
}

// specObject returns doc[key] as a map, failing the test when it is not one.
func specObject(t *testing.T, doc map[string]any, key string) map[string]any {
	t.Helper()
	m, ok := doc[key].(map[string]any)
	if !ok {
		t.Fatalf("%q is %T, want a mapping", key, doc[key])
	}
	return m
}

// specOperation is one method of one path (or webhook) of the document.
type specOperation struct {
	where  string // "paths" or "webhooks"
	path   string // "/v1/videos/{id}" or the webhook's name
	method string // "GET"
	op     map[string]any
	item   map[string]any // the path item the operation belongs to
}

func (o specOperation) String() string { return o.where + ": " + o.method + " " + o.path }

// specOperations lists the operations under doc[where], sorted.
func specOperations(t *testing.T, doc map[string]any, where string) []specOperation {
	t.Helper()
	items, ok := doc[where].(map[string]any)
	if !ok {
		if doc[where] == nil {
			return nil
		}
		t.Fatalf("%q is %T, want a mapping", where, doc[where])
	}
	var ops []specOperation
	for path, v := range items {
		item, ok := v.(map[string]any)
		if !ok {
			t.Errorf("%s %q is %T, want a path item", where, path, v)
			continue
		}
		for _, m := range openAPIMethods {
			raw, present := item[m]
			if !present {
				continue
			}
			op, ok := raw.(map[string]any)
			if !ok {
				t.Errorf("%s %s %q is %T, want an operation", where, strings.ToUpper(m), path, raw)
				continue
			}
			ops = append(ops, specOperation{where: where, path: path, method: strings.ToUpper(m), op: op, item: item})
		}
	}
	sort.Slice(ops, func(i, j int) bool { return ops[i].String() < ops[j].String() })
	return ops
}

// ginParam matches a Gin path parameter (":id") or catch-all ("*path").
var ginParam = regexp.MustCompile(`[:*]([A-Za-z0-9_]+)`)

// openAPIPath turns a Gin route path into OpenAPI's path template:
// "/v1/videos/:id" becomes "/v1/videos/{id}". A trailing slash is dropped:
// "/v1/uploads/" is the same operation as "/v1/uploads" (tus clients are
// given either), and the spec has no trailing slashes (Redocly's
// no-path-trailing-slash).
func openAPIPath(ginPath string) string {
	p := ginParam.ReplaceAllString(ginPath, "{$1}")
	if len(p) > 1 {
		p = strings.TrimSuffix(p, "/")
	}
	return p
}

func TestOpenAPIPathConversion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"/v1/videos":                   "/v1/videos",
		"/v1/uploads/":                 "/v1/uploads",
		"/v1/uploads/:upload":          "/v1/uploads/{upload}",
		"/v1/webhooks/:id/deliveries":  "/v1/webhooks/{id}/deliveries",
		"/v1/live-streams/:id/x/:part": "/v1/live-streams/{id}/x/{part}",
	} {
		if got := openAPIPath(in); got != want {
			t.Errorf("openAPIPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestOpenAPIMatchesRoutes checks that the spec describes exactly the routes
// Register mounts (those under /v1 and the viewers' /play/{id}): every route
// has an operation and every operation a route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	engine, ok := e.h.(*gin.Engine)
	if !ok {
		t.Fatalf("the test handler is %T, want *gin.Engine", e.h)
	}
	routes := map[string]bool{}
	for _, r := range engine.Routes() {
		// The engine holds only what Register mounts: every route counts.
		routes[r.Method+" "+openAPIPath(r.Path)] = true
	}
	if len(routes) == 0 {
		t.Fatal("Register mounted no routes")
	}
	spec := map[string]bool{}
	for _, o := range specOperations(t, parseSpec(t, openAPISpec), "paths") {
		spec[o.method+" "+o.path] = true
	}
	var missing, extra []string
	for r := range routes {
		if !spec[r] {
			missing = append(missing, r)
		}
	}
	for o := range spec {
		if !routes[o] {
			extra = append(extra, o)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	if len(missing) > 0 {
		t.Errorf("routes that openapi.yaml does not describe:\n\t%s", strings.Join(missing, "\n\t"))
	}
	if len(extra) > 0 {
		t.Errorf("operations in openapi.yaml that no route serves:\n\t%s", strings.Join(extra, "\n\t"))
	}
}

// TestOpenAPIServedAndValidYAML fetches the spec the way a client does,
// without an API key, and checks the document's structure: the version,
// unique operation ids, responses, path parameters, tags and that every
// $ref points at something.
func TestOpenAPIServedAndValidYAML(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	r := e.do(t, http.MethodGet, "/v1/openapi.yaml", "", nil).wantStatus(t, http.StatusOK)
	if ct := r.header.Get("Content-Type"); !strings.Contains(ct, "yaml") {
		t.Errorf("Content-Type %q, want a YAML type", ct)
	}
	if string(r.body) != string(openAPISpec) {
		t.Error("the served document is not the embedded openapi.yaml")
	}
	doc := parseSpec(t, r.body)

	if v, _ := doc["openapi"].(string); v != "3.1.0" {
		t.Errorf("openapi is %#v, want \"3.1.0\"", doc["openapi"])
	}
	info := specObject(t, doc, "info")
	for _, k := range []string{"title", "version", "description"} {
		if s, _ := info[k].(string); s == "" {
			t.Errorf("info.%s is missing", k)
		}
	}
	components := specObject(t, doc, "components")
	schemes, _ := components["securitySchemes"].(map[string]any)
	if len(schemes) == 0 {
		t.Error("components.securitySchemes is empty")
	}
	if sec, _ := doc["security"].([]any); len(sec) == 0 {
		t.Error("the document has no top-level security requirement")
	}

	declaredTags := map[string]bool{}
	if tags, ok := doc["tags"].([]any); ok {
		for _, tg := range tags {
			m, _ := tg.(map[string]any)
			name, _ := m["name"].(string)
			declaredTags[name] = true
		}
	}

	ops := specOperations(t, doc, "paths")
	if len(ops) == 0 {
		t.Fatal("the document has no operations")
	}
	hooks := specOperations(t, doc, "webhooks")
	if len(hooks) == 0 {
		t.Error("the document has no webhooks section")
	}
	seenIDs := map[string]string{}
	for _, o := range slices.Concat(ops, hooks) {
		id, _ := o.op["operationId"].(string)
		switch {
		case id == "":
			t.Errorf("%s has no operationId", o)
		case seenIDs[id] != "":
			t.Errorf("%s reuses operationId %q of %s", o, id, seenIDs[id])
		default:
			seenIDs[id] = o.String()
		}
		if resp, _ := o.op["responses"].(map[string]any); len(resp) == 0 {
			t.Errorf("%s has no responses", o)
		}
		if s, _ := o.op["summary"].(string); s == "" {
			t.Errorf("%s has no summary", o)
		}
		tags, _ := o.op["tags"].([]any)
		if len(tags) == 0 {
			t.Errorf("%s has no tag", o)
		}
		for _, tg := range tags {
			if name, _ := tg.(string); !declaredTags[name] {
				t.Errorf("%s uses tag %v, which the top-level tags do not declare", o, tg)
			}
		}
		if o.where == "paths" {
			checkPathParams(t, doc, o)
		}
	}

	// The spec and the viewers' routes are public; everything else needs
	// the API key (or, for nodes, a node token and a signature).
	for _, o := range ops {
		sec, present := o.op["security"]
		if publicOperations[o.method+" "+o.path] {
			if list, ok := sec.([]any); !present || !ok || len(list) != 0 {
				t.Errorf("%s must declare security: [] (it is served without a key)", o)
			}
		} else if present {
			if list, _ := sec.([]any); len(list) == 0 {
				t.Errorf("%s declares no security, but the route needs an API key", o)
			}
		}
	}

	var refs []string
	collectRefs(doc, "", &refs)
	if len(refs) == 0 {
		t.Error("the document uses no $ref; expected reusable components")
	}
	for _, ref := range refs {
		if err := resolveRef(doc, ref); err != nil {
			t.Error(err)
		}
	}
}

// publicOperations are the routes served without any credential.
var publicOperations = map[string]bool{
	"GET /v1/openapi.yaml": true,
	// tus discovery and the CORS preflight of uploads.
	"OPTIONS /v1/uploads":          true,
	"OPTIONS /v1/uploads/{upload}": true,
	"GET /v1/route/{id}":           true,
	"GET /play/{id}":               true,
	"GET /v1/keys":                 true,
	"POST /v1/delivery-reports":    true,
	"POST /v1/beacons":             true,
	// WHIP: the session URL is the credential; OPTIONS is CORS.
	"OPTIONS /v1/whip":           true,
	"PATCH /v1/whip/{session}":   true,
	"DELETE /v1/whip/{session}":  true,
	"OPTIONS /v1/whip/{session}": true,
	// WHEP: public streams need nothing, signed ones a playback token
	// (checked by the handler, as on /hls/).
	"POST /v1/whep/{id}":              true,
	"OPTIONS /v1/whep/{id}":           true,
	"PATCH /v1/whep/{id}/{session}":   true,
	"DELETE /v1/whep/{id}/{session}":  true,
	"OPTIONS /v1/whep/{id}/{session}": true,
}

// checkPathParams checks that each {name} of o's path is declared as a
// required path parameter, on the operation or on its path item, and that
// no path parameter is declared that the path lacks.
func checkPathParams(t *testing.T, doc map[string]any, o specOperation) {
	t.Helper()
	declared := map[string]bool{}
	for _, list := range []any{o.item["parameters"], o.op["parameters"]} {
		params, _ := list.([]any)
		for _, p := range params {
			pm, _ := p.(map[string]any)
			if ref, ok := pm["$ref"].(string); ok {
				target, err := lookupRef(doc, ref)
				if err != nil {
					continue // reported by the $ref check
				}
				pm, _ = target.(map[string]any)
			}
			if in, _ := pm["in"].(string); in != "path" {
				continue
			}
			name, _ := pm["name"].(string)
			if req, _ := pm["required"].(bool); !req {
				t.Errorf("%s: path parameter %q must be required: true", o, name)
			}
			declared[name] = true
		}
	}
	inPath := map[string]bool{}
	for _, m := range regexp.MustCompile(`\{([^}]+)\}`).FindAllStringSubmatch(o.path, -1) {
		inPath[m[1]] = true
		if !declared[m[1]] {
			t.Errorf("%s: path parameter {%s} is not declared", o, m[1])
		}
	}
	for name := range declared {
		if !inPath[name] {
			t.Errorf("%s: declares path parameter %q that the path lacks", o, name)
		}
	}
}

// collectRefs appends every $ref value under v; at says where v is.
func collectRefs(v any, at string, refs *[]string) {
	switch x := v.(type) {
	case map[string]any:
		for k, child := range x {
			if k == "$ref" {
				if s, ok := child.(string); ok {
					*refs = append(*refs, s)
				} else {
					*refs = append(*refs, fmt.Sprintf("<non-string $ref at %s>", at))
				}
				continue
			}
			collectRefs(child, at+"/"+k, refs)
		}
	case []any:
		for i, child := range x {
			collectRefs(child, fmt.Sprintf("%s/%d", at, i), refs)
		}
	}
}

// resolveRef checks that ref is a local reference to an existing component.
func resolveRef(doc map[string]any, ref string) error {
	if !strings.HasPrefix(ref, "#/components/") {
		return fmt.Errorf("$ref %q does not point into #/components/", ref)
	}
	_, err := lookupRef(doc, ref)
	return err
}

// lookupRef follows a local JSON pointer ("#/a/b") in doc.
func lookupRef(doc map[string]any, ref string) (any, error) {
	ptr, ok := strings.CutPrefix(ref, "#/")
	if !ok {
		return nil, fmt.Errorf("$ref %q is not a local reference", ref)
	}
	var cur any = doc
	for _, raw := range strings.Split(ptr, "/") {
		tok, err := url.PathUnescape(raw)
		if err != nil {
			return nil, fmt.Errorf("$ref %q: %v", ref, err)
		}
		tok = strings.ReplaceAll(strings.ReplaceAll(tok, "~1", "/"), "~0", "~")
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("$ref %q: %q is not inside a mapping", ref, tok)
		}
		if cur, ok = m[tok]; !ok {
			return nil, fmt.Errorf("$ref %q does not resolve: no %q", ref, tok)
		}
	}
	return cur, nil
}

// TestOpenAPIResponsesMatchSchemas sends real requests and checks each
// answer against the spec: its status must be one the operation declares,
// and its JSON body must match the declared schema, with every required
// field and no field the schema does not declare.
func TestOpenAPIResponsesMatchSchemas(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{PlaybackKey: testPlaybackKey})
	sc := &schemaChecker{doc: parseSpec(t, openAPISpec)}
	call := func(method, path, target, key, body string) response {
		t.Helper()
		r := e.doJSON(t, method, target, key, body)
		sc.check(t, path, method, r)
		return r
	}
	id := func(r response) string {
		t.Helper()
		var v struct {
			ID string `json:"id"`
		}
		if err := json.Unmarshal(r.body, &v); err != nil || v.ID == "" {
			t.Fatalf("no id in %s (status %d)", r.body, r.status)
		}
		return v.ID
	}
	k := testAdminKey

	call("GET", "/v1/live-streams", "/v1/live-streams", "", "").wantStatus(t, http.StatusUnauthorized)
	call("GET", "/v1/live-streams", "/v1/live-streams", k, "").wantStatus(t, http.StatusOK)
	ls := id(call("POST", "/v1/live-streams", "/v1/live-streams", k, `{"name":"show","ladder":"720p:3000k,360p:700k"}`).wantStatus(t, http.StatusCreated))
	call("POST", "/v1/live-streams", "/v1/live-streams", k, `{"name":""}`).wantStatus(t, http.StatusBadRequest)
	e.status.set(ls, true)
	call("GET", "/v1/live-streams", "/v1/live-streams", k, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/live-streams/{id}", "/v1/live-streams/"+ls, k, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/live-streams/{id}", "/v1/live-streams/nosuchstream", k, "").wantStatus(t, http.StatusNotFound)
	call("PATCH", "/v1/live-streams/{id}", "/v1/live-streams/"+ls, k, `{"ladder":""}`).wantStatus(t, http.StatusOK)
	call("PATCH", "/v1/live-streams/{id}", "/v1/live-streams/"+ls, k, `{}`).wantStatus(t, http.StatusBadRequest)
	call("POST", "/v1/live-streams/{id}/reset-stream-key", "/v1/live-streams/"+ls+"/reset-stream-key", k, "").wantStatus(t, http.StatusOK)
	call("PATCH", "/v1/live-streams/{id}", "/v1/live-streams/"+ls, k, `{"playback_policy":"signed"}`).wantStatus(t, http.StatusOK)
	call("GET", "/v1/live-streams/{id}", "/v1/live-streams/"+ls, k, "").wantStatus(t, http.StatusOK)
	call("POST", "/v1/live-streams", "/v1/live-streams", k, `{"name":"members","playback_policy":"signed"}`).wantStatus(t, http.StatusCreated)
	call("POST", "/v1/playback-tokens", "/v1/playback-tokens", k, `{"id":"`+ls+`"}`).wantStatus(t, http.StatusCreated)
	call("POST", "/v1/playback-tokens", "/v1/playback-tokens", k, `{"id":"`+ls+`","ttl_seconds":60,"ip":"203.0.113.0/24","region":"eu-west"}`).
		wantStatus(t, http.StatusCreated)
	call("POST", "/v1/playback-tokens", "/v1/playback-tokens", k, `{"id":"`+ls+`","ttl_seconds":0}`).wantStatus(t, http.StatusBadRequest)
	call("POST", "/v1/playback-tokens", "/v1/playback-tokens", k, `{"id":"nosuchstream"}`).wantStatus(t, http.StatusNotFound)
	call("POST", "/v1/playback-tokens", "/v1/playback-tokens", "", `{"id":"`+ls+`"}`).wantStatus(t, http.StatusUnauthorized)
	unsigned := newEnv(t, Config{})
	r503 := unsigned.doJSON(t, "POST", "/v1/playback-tokens", k, `{"id":"`+ls+`"}`).wantStatus(t, http.StatusServiceUnavailable)
	sc.check(t, "/v1/playback-tokens", "POST", r503)
	call("DELETE", "/v1/live-streams/{id}", "/v1/live-streams/"+ls, k, "").wantStatus(t, http.StatusNoContent)
	call("POST", "/v1/api-keys", "/v1/api-keys", k, `{"name":"ci"}`).wantStatus(t, http.StatusCreated)
	ro := decode[apiKeyJSON](t, call("POST", "/v1/api-keys", "/v1/api-keys", k, `{"name":"dash","scopes":["read-only"]}`).wantStatus(t, http.StatusCreated))
	call("POST", "/v1/api-keys", "/v1/api-keys", k, `{"name":"x","scopes":["root"]}`).wantStatus(t, http.StatusBadRequest)
	call("GET", "/v1/api-keys", "/v1/api-keys", k, "").wantStatus(t, http.StatusOK)
	call("POST", "/v1/live-streams", "/v1/live-streams", ro.Key, `{"name":"x"}`).wantStatus(t, http.StatusForbidden)
	call("GET", "/v1/live-streams", "/v1/live-streams", ro.Key, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/api-keys", "/v1/api-keys", ro.Key, "").wantStatus(t, http.StatusForbidden)
	call("DELETE", "/v1/api-keys/{id}", "/v1/api-keys/"+ro.ID, k, "").wantStatus(t, http.StatusNoContent)
	call("DELETE", "/v1/api-keys/{id}", "/v1/api-keys/"+ro.ID, k, "").wantStatus(t, http.StatusNotFound)

	v1 := id(call("POST", "/v1/videos", "/v1/videos", k, `{}`).wantStatus(t, http.StatusCreated))
	v2 := id(call("POST", "/v1/videos", "/v1/videos", k, `{"title":"talk","ladder":"480p:1200k","playback_policy":"public"}`).wantStatus(t, http.StatusCreated))
	v5 := id(call("POST", "/v1/videos", "/v1/videos", k, `{"playback_policy":"signed"}`).wantStatus(t, http.StatusCreated))
	call("GET", "/v1/videos/{id}", "/v1/videos/"+v5, k, "").wantStatus(t, http.StatusOK)
	call("POST", "/v1/playback-tokens", "/v1/playback-tokens", k, `{"id":"`+v5+`"}`).wantStatus(t, http.StatusCreated)
	call("POST", "/v1/videos", "/v1/videos", k, `{"playback_policy":"private"}`).wantStatus(t, http.StatusBadRequest)
	call("GET", "/v1/videos", "/v1/videos?limit=1", k, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/videos", "/v1/videos?limit=0", k, "").wantStatus(t, http.StatusBadRequest)
	call("GET", "/v1/videos", "/v1/videos?cursor=bogus", k, "").wantStatus(t, http.StatusBadRequest)
	call("PATCH", "/v1/videos/{id}", "/v1/videos/"+v2, k, `{"title":"a talk"}`).wantStatus(t, http.StatusOK)
	clip, err := os.ReadFile(testutil.MakeMP4(t, 160, 120, 1))
	if err != nil {
		t.Fatal(err)
	}
	put := func(vid string, body []byte) response {
		t.Helper()
		r := e.put(t, vid, body, "video/mp4")
		sc.check(t, "/v1/videos/{id}/source", "PUT", r)
		return r
	}
	put(v2, clip).wantStatus(t, http.StatusAccepted)
	put(v2, clip).wantStatus(t, http.StatusConflict)
	put(v1, []byte("not a video\n")).wantStatus(t, http.StatusUnprocessableEntity)
	call("GET", "/v1/videos/{id}", "/v1/videos/"+v1, k, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/videos/{id}", "/v1/videos/"+v2, k, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/videos", "/v1/videos", k, "").wantStatus(t, http.StatusOK)
	call("DELETE", "/v1/videos/{id}", "/v1/videos/"+v1, k, "").wantStatus(t, http.StatusNoContent)
	call("GET", "/v1/videos/{id}", "/v1/videos/"+v1, k, "").wantStatus(t, http.StatusNotFound)

	// tus: the statuses and bodies of a resumed upload and its refusals.
	tusCall := func(method, path, target string, hdr map[string]string, body []byte) response {
		t.Helper()
		r := e.tusReq(t, method, target, hdr, body)
		sc.check(t, path, method, r)
		return r
	}
	const uploads, uploadsSpec = "/v1/uploads/", "/v1/uploads"
	v3 := id(call("POST", "/v1/videos", "/v1/videos", k, `{}`).wantStatus(t, http.StatusCreated))
	tusCall("POST", uploadsSpec, uploads, map[string]string{"Upload-Length": "10"}, nil).wantStatus(t, http.StatusBadRequest)
	tusCall("POST", uploadsSpec, uploads, map[string]string{"Upload-Length": "10", "Upload-Metadata": tusMeta("video_id", "nosuchvideo")}, nil).
		wantStatus(t, http.StatusNotFound)
	tusCall("POST", uploadsSpec, uploads, map[string]string{"Upload-Length": "10", "Upload-Metadata": tusMeta("video_id", v2)}, nil).
		wantStatus(t, http.StatusConflict)
	tusCall("POST", uploadsSpec, uploads, map[string]string{"Upload-Length": "10", "Upload-Metadata": tusMeta("video_id", v3), "Tus-Resumable": ""}, nil).
		wantStatus(t, http.StatusPreconditionFailed)
	tusCall("POST", uploadsSpec, uploads, map[string]string{"Upload-Length": strconv.FormatInt(DefaultMaxUploadBytes+1, 10), "Upload-Metadata": tusMeta("video_id", v3)}, nil).
		wantStatus(t, http.StatusRequestEntityTooLarge)
	text := []byte("hello, this is text\n")
	loc := tusCall("POST", uploadsSpec, uploads, map[string]string{"Upload-Length": strconv.Itoa(len(text)), "Upload-Metadata": tusMeta("video_id", v3)}, nil).
		wantStatus(t, http.StatusCreated).header.Get("Location")
	up := loc[strings.Index(loc, uploads):]
	const upPath = "/v1/uploads/{upload}"
	tusCall("HEAD", upPath, up, nil, nil).wantStatus(t, http.StatusOK)
	tusCall("HEAD", upPath, "/v1/uploads/abc", nil, nil).wantStatus(t, http.StatusNotFound)
	tusCall("HEAD", upPath, "/v1/uploads/"+v3+"-zzzzzzzz", nil, nil).wantStatus(t, http.StatusNotFound)
	patch := func(off int, chunk []byte) response {
		t.Helper()
		return tusCall("PATCH", upPath, up, map[string]string{
			"Upload-Offset": strconv.Itoa(off), "Content-Type": "application/offset+octet-stream",
		}, chunk)
	}
	patch(0, text[:5]).wantStatus(t, http.StatusNoContent)
	patch(2, text[2:]).wantStatus(t, http.StatusConflict)
	patch(5, text[5:]).wantStatus(t, http.StatusUnprocessableEntity)
	tusCall("HEAD", upPath, up, nil, nil).wantStatus(t, http.StatusNotFound)
	v4 := id(call("POST", "/v1/videos", "/v1/videos", k, `{}`).wantStatus(t, http.StatusCreated))
	loc = tusCall("POST", uploadsSpec, uploads, map[string]string{"Upload-Length": "100", "Upload-Metadata": tusMeta("video_id", v4)}, nil).
		wantStatus(t, http.StatusCreated).header.Get("Location")
	tusCall("DELETE", upPath, loc[strings.Index(loc, uploads):], nil, nil).wantStatus(t, http.StatusNoContent)
	tusCall("DELETE", upPath, loc[strings.Index(loc, uploads):], nil, nil).wantStatus(t, http.StatusNotFound)

	// Webhooks, with real deliveries of the events the uploads above made
	// (video.failed) and of a live_stream.started.
	wh := id(call("POST", "/v1/webhooks", "/v1/webhooks", k,
		`{"url":"https://example.com/hook?token=1","events":["live_stream.started","video.failed","live_stream.started"]}`).
		wantStatus(t, http.StatusCreated))
	call("POST", "/v1/webhooks", "/v1/webhooks", k, `{"url":"ftp://example.com/","events":["video.ready"]}`).wantStatus(t, http.StatusBadRequest)
	call("POST", "/v1/webhooks", "/v1/webhooks", k, `{"url":"https://example.com/","events":["video.deleted"]}`).wantStatus(t, http.StatusBadRequest)
	call("GET", "/v1/webhooks", "/v1/webhooks", k, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/webhooks/{id}", "/v1/webhooks/"+wh, k, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/webhooks/{id}", "/v1/webhooks/nosuchhook", k, "").wantStatus(t, http.StatusNotFound)
	ctx := t.Context()
	if err := e.store.PublishEvent(ctx, routing.EventLiveStreamStarted, map[string]string{"id": ls, "name": "show"}); err != nil {
		t.Fatal(err)
	}
	evs, err := e.store.ReadWebhookEvents(ctx, "openapi-test", 100, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	eventSchemas := map[string]string{
		routing.EventVideoReady:        "VideoReadyEvent",
		routing.EventVideoFailed:       "VideoFailedEvent",
		routing.EventLiveStreamStarted: "LiveStreamStartedEvent",
		routing.EventLiveStreamEnded:   "LiveStreamEndedEvent",
	}
	seen := map[string]bool{}
	for _, ev := range evs {
		if _, err := e.store.FanOutWebhookEvent(ctx, ev); err != nil {
			t.Fatal(err)
		}
		name, ok := eventSchemas[ev.Type]
		if !ok {
			t.Errorf("event type %q has no schema in openapi.yaml", ev.Type)
			continue
		}
		seen[ev.Type] = true
		body := routing.WebhookBody(ev)
		dec := json.NewDecoder(bytes.NewReader(body))
		dec.UseNumber()
		var v any
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		for _, p := range sc.validate(map[string]any{"$ref": "#/components/schemas/" + name}, v, "$") {
			t.Errorf("%s delivery body: %s\n\tbody: %s", ev.Type, p, body)
		}
	}
	if !seen[routing.EventVideoFailed] || !seen[routing.EventLiveStreamStarted] {
		t.Errorf("events read: %v; want video.failed and live_stream.started", seen)
	}
	call("GET", "/v1/webhooks/{id}/deliveries", "/v1/webhooks/"+wh+"/deliveries", k, "").wantStatus(t, http.StatusOK)
	claimed, err := e.store.ClaimWebhookDelivery(ctx, time.Now(), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	sc.checkParam(t, "ShoalSignature", webhook.Sign(claimed.Secret, time.Now(), claimed.Body))
	sc.checkParam(t, "ShoalDelivery", claimed.ID)
	sc.checkParam(t, "ShoalEvent", claimed.Type)
	deliveries := call("GET", "/v1/webhooks/{id}/deliveries", "/v1/webhooks/"+wh+"/deliveries", k, "").wantStatus(t, http.StatusOK)
	if !bytes.Contains(deliveries.body, []byte(`"attempts":1`)) {
		t.Errorf("no delivery with an attempt in %s", deliveries.body)
	}
	call("DELETE", "/v1/webhooks/{id}", "/v1/webhooks/"+wh, k, "").wantStatus(t, http.StatusNoContent)
	call("DELETE", "/v1/webhooks/{id}", "/v1/webhooks/"+wh, k, "").wantStatus(t, http.StatusNotFound)
	call("GET", "/v1/webhooks/{id}/deliveries", "/v1/webhooks/"+wh+"/deliveries", k, "").wantStatus(t, http.StatusNotFound)

	checkNodesAndRouting(t, e, sc, v2)

	// Beacons and analytics.
	tok, err := e.a.NewSession(ctx, "video", v2)
	if err != nil {
		t.Fatal(err)
	}
	call("GET", "/v1/route/{id}", "/v1/route/"+v2+"?session="+tok, "", "").wantStatus(t, http.StatusOK)
	beacon := `{"session":"` + tok + `","seq":1,"viewer":"abcdefghijklmnop","watch_ms":50,"startup_ms":700,"bytes":{"origin":5}}`
	call("POST", "/v1/beacons", "/v1/beacons", "", beacon).wantStatus(t, http.StatusAccepted)
	call("POST", "/v1/beacons", "/v1/beacons", "", beacon).wantStatus(t, http.StatusAccepted)
	call("POST", "/v1/beacons", "/v1/beacons", "", `{"seq":1}`).wantStatus(t, http.StatusBadRequest)
	call("POST", "/v1/beacons", "/v1/beacons", "", `{"session":"x","seq":1}`).wantStatus(t, http.StatusUnauthorized)
	call("GET", "/v1/analytics", "/v1/analytics", k, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/analytics", "/v1/analytics?bucket=year", k, "").wantStatus(t, http.StatusBadRequest)
	call("GET", "/v1/analytics", "/v1/analytics", "", "").wantStatus(t, http.StatusUnauthorized)
	call("GET", "/v1/analytics/videos/{id}", "/v1/analytics/videos/"+v2+"?bucket=day", k, "").wantStatus(t, http.StatusOK)
	call("GET", "/v1/analytics/videos/{id}", "/v1/analytics/videos/nosuchvideo", k, "").wantStatus(t, http.StatusNotFound)
	call("GET", "/v1/analytics/live-streams/{id}", "/v1/analytics/live-streams/nosuchstream", k, "").wantStatus(t, http.StatusNotFound)
	call("GET", "/v1/analytics/nodes/{id}", "/v1/analytics/nodes/2aw433lo4xqhynuohvea", k, "").wantStatus(t, http.StatusOK)
}

// checkNodesAndRouting checks the answers of the node and routing routes:
// node tokens, an empty registry, the origin serving while no edge is
// alive, then a join and heartbeats signed with a fresh key, and the edge
// chosen once it is alive. video is the id of an existing video.
func checkNodesAndRouting(t *testing.T, e *env, sc *schemaChecker, video string) {
	t.Helper()
	k := testAdminKey
	call := func(method, path, target, key, body string) response {
		t.Helper()
		r := e.doJSON(t, method, target, key, body)
		sc.check(t, path, method, r)
		return r
	}
	type token struct{ ID, Token string }
	type route struct{ URL, NodeID, Region, Reason string }
	decodeRoute := func(r response) route {
		t.Helper()
		var v struct {
			URL    string `json:"url"`
			NodeID string `json:"node_id"`
			Region string `json:"region"`
			Reason string `json:"reason"`
		}
		if err := json.Unmarshal(r.body, &v); err != nil {
			t.Fatalf("decode %s: %v", r.body, err)
		}
		return route(v)
	}

	if r := call("GET", "/v1/nodes", "/v1/nodes", k, "").wantStatus(t, http.StatusOK); string(r.body) != `{"data":[]}` {
		t.Errorf("GET /v1/nodes with no node: %s, want {\"data\":[]}", r.body)
	}
	call("GET", "/v1/nodes", "/v1/nodes", "", "").wantStatus(t, http.StatusUnauthorized)
	// An origin and a worker announced on this Redis are listed with what
	// they transcode with (and never routed to: the origin serves below).
	announced := checkAnnouncedNodes(t, e, func() response { return call("GET", "/v1/nodes", "/v1/nodes", k, "") })
	call("POST", "/v1/node-tokens", "/v1/node-tokens", k, `{"name":""}`).wantStatus(t, http.StatusBadRequest)
	nt := decode[token](t, call("POST", "/v1/node-tokens", "/v1/node-tokens", k, `{"name":"edges eu-west"}`).wantStatus(t, http.StatusCreated))
	other := decode[token](t, call("POST", "/v1/node-tokens", "/v1/node-tokens", k, `{"name":"other"}`).wantStatus(t, http.StatusCreated))

	// No edge: the origin serves.
	origin := testPublicURL + "/hls/" + video + "/master.m3u8"
	rt := decodeRoute(call("GET", "/v1/route/{id}", "/v1/route/"+video+"?region=EU-West", "", "").wantStatus(t, http.StatusOK))
	if rt.URL != origin || rt.NodeID != "" || rt.Region != "eu-west" || rt.Reason == "" {
		t.Errorf("route with no edge: %+v, want url %s, no node_id, region eu-west and a reason", rt, origin)
	}
	call("GET", "/v1/route/{id}", "/v1/route/nosuchvideo", "", "").wantStatus(t, http.StatusNotFound)
	call("GET", "/v1/route/{id}", "/v1/route/NOT-AN-ID", "", "").wantStatus(t, http.StatusNotFound)
	p := call("GET", "/play/{id}", "/play/"+video+"?token=abc", "", "").wantStatus(t, http.StatusFound)
	if loc := p.header.Get("Location"); loc != origin+"?token=abc" {
		t.Errorf("GET /play/{id} Location %q, want %q", loc, origin+"?token=abc")
	}
	if p.header.Get("Shoal-Route-Reason") == "" {
		t.Error("GET /play/{id} has no Shoal-Route-Reason")
	}
	call("GET", "/play/{id}", "/play/nosuchvideo", "", "").wantStatus(t, http.StatusNotFound)

	// A node: join and heartbeats, signed with its key.
	pub, priv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	_, otherPriv, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	nodeCall := func(path, target, tok string, body []byte, sig string) response {
		t.Helper()
		req := httptest.NewRequest(http.MethodPost, target, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		if tok != "" {
			req.Header.Set("Authorization", "Bearer "+tok)
		}
		if sig != "" {
			req.Header.Set(nodeproto.SignatureHeader, sig)
		}
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		r := response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
		sc.check(t, path, http.MethodPost, r)
		if sig != "" {
			sc.checkParam(t, "NodeSignature", sig)
		}
		return r
	}
	mustJSON := func(v any) []byte {
		t.Helper()
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	join := mustJSON(nodeproto.JoinRequest{Role: "edge", Region: "eu-west", PublicURL: "https://edge1.example.com",
		PublicKey: base64.StdEncoding.EncodeToString(pub), Time: time.Now().UTC(), TokenSHA256: nodeproto.TokenSHA256(nt.Token)})
	const joinPath = "/v1/nodes/join"
	nodeCall(joinPath, joinPath, "", join, nodeproto.Sign(priv, join)).wantStatus(t, http.StatusUnauthorized)
	nodeCall(joinPath, joinPath, nt.Token, join, "").wantStatus(t, http.StatusForbidden)
	nodeCall(joinPath, joinPath, nt.Token, join, nodeproto.Sign(otherPriv, join)).wantStatus(t, http.StatusForbidden)
	nodeCall(joinPath, joinPath, nt.Token, []byte(`{"role":"edge"}`), "").wantStatus(t, http.StatusBadRequest)
	node := decode[struct{ ID string }](t, nodeCall(joinPath, joinPath, nt.Token, join, nodeproto.Sign(priv, join)).
		wantStatus(t, http.StatusCreated)).ID
	if node != nodeproto.NodeID(pub) {
		t.Errorf("joined as %q, want the key's id %q", node, nodeproto.NodeID(pub))
	}

	const hbPath = "/v1/nodes/{id}/heartbeat"
	hbTarget := "/v1/nodes/" + node + "/heartbeat"
	hb := mustJSON(nodeproto.Heartbeat{Time: time.Now().UTC(), Connections: 3, EgressBytesPerSec: 1.5e6, CacheBytes: 1 << 20,
		BytesServed: 1 << 30, Hits: 9, Misses: 1, OriginFetches: 1, StreamBytes: map[string]int64{video: 1 << 30}})
	nodeCall(hbPath, hbTarget, nt.Token, hb, nodeproto.Sign(priv, hb)).wantStatus(t, http.StatusOK)
	nodeCall(hbPath, hbTarget, nt.Token, hb, nodeproto.Sign(otherPriv, hb)).wantStatus(t, http.StatusForbidden)
	nodeCall(hbPath, hbTarget, other.Token, hb, nodeproto.Sign(priv, hb)).wantStatus(t, http.StatusForbidden)
	nodeCall(hbPath, "/v1/nodes/"+nodeproto.NodeID(otherPriv.Public().(ed25519.PublicKey))+"/heartbeat", nt.Token, hb,
		nodeproto.Sign(otherPriv, hb)).wantStatus(t, http.StatusNotFound)
	stale := mustJSON(nodeproto.Heartbeat{Time: time.Now().Add(-2 * nodeproto.MaxSkew)})
	nodeCall(hbPath, hbTarget, nt.Token, stale, nodeproto.Sign(priv, stale)).wantStatus(t, http.StatusForbidden)
	if r := call("GET", "/v1/nodes", "/v1/nodes", k, "").wantStatus(t, http.StatusOK); !bytes.Contains(r.body, []byte(`"id":"`+node+`"`)) {
		t.Errorf("GET /v1/nodes does not list node %s: %s", node, r.body)
	} else {
		// The joined edge first, with no transcode; then the origin and
		// the worker.
		var list struct {
			Data []map[string]any `json:"data"`
		}
		if err := json.Unmarshal(r.body, &list); err != nil || len(list.Data) != 1+len(announced) {
			t.Fatalf("GET /v1/nodes: %s (%v), want the edge and %d announced nodes", r.body, err, len(announced))
		}
		if _, ok := list.Data[0]["transcode"]; list.Data[0]["id"] != node || list.Data[0]["role"] != "edge" || ok {
			t.Errorf("first node %v, want the edge %s without transcode", list.Data[0], node)
		}
		for i, id := range announced {
			if list.Data[1+i]["id"] != id {
				t.Errorf("node %d is %v, want %s", 1+i, list.Data[1+i]["id"], id)
			}
		}
	}

	// The edge is alive: it serves.
	edge := "https://edge1.example.com/hls/" + video + "/master.m3u8"
	rt = decodeRoute(call("GET", "/v1/route/{id}", "/v1/route/"+video+"?region=eu-west&token=abc", "", "").wantStatus(t, http.StatusOK))
	if rt.URL != edge+"?token=abc" || rt.NodeID != node {
		t.Errorf("route with a live edge: %+v, want url %s?token=abc on node %s", rt, edge, node)
	}
	if loc := call("GET", "/play/{id}", "/play/"+video, "", "").wantStatus(t, http.StatusFound).header.Get("Location"); loc != edge {
		t.Errorf("GET /play/{id} Location %q, want %q", loc, edge)
	}

	// Revocation: the token is refused; a heartbeat shown the admin key
	// learns the node's token was revoked, and the node is gone.
	call("DELETE", "/v1/node-tokens/{id}", "/v1/node-tokens/"+nt.ID, k, "").wantStatus(t, http.StatusNoContent)
	call("DELETE", "/v1/node-tokens/{id}", "/v1/node-tokens/"+nt.ID, k, "").wantStatus(t, http.StatusNotFound)
	call("DELETE", "/v1/node-tokens/{id}", "/v1/node-tokens/NOT-AN-ID", k, "").wantStatus(t, http.StatusNotFound)
	nodeCall(hbPath, hbTarget, nt.Token, hb, nodeproto.Sign(priv, hb)).wantStatus(t, http.StatusUnauthorized)
	nodeCall(hbPath, hbTarget, k, hb, nodeproto.Sign(priv, hb)).wantStatus(t, http.StatusForbidden)
	nodeCall(hbPath, hbTarget, k, hb, nodeproto.Sign(priv, hb)).wantStatus(t, http.StatusNotFound)
}

// checkAnnouncedNodes announces an origin that transcodes on a GPU and a
// worker in e's Redis, checks their entries in GET /v1/nodes (list) and
// returns their ids in the order listed.
func checkAnnouncedNodes(t *testing.T, e *env, list func() response) []string {
	t.Helper()
	started := time.Now().Add(-time.Minute).UTC().Truncate(time.Second)
	gpu := &nodeproto.Transcoding{Encoder: "software", Decode: "cuda", Ladders: 14, LaddersFrom: "measured", RealtimeX: 2.5,
		GPUs:    []nodeproto.GPU{{Index: 0, Name: "NVIDIA H200", NVDEC: []string{"h264", "hevc"}, Problem: "no NVENC on this GPU"}},
		Summary: "NVIDIA H200: NVDEC h264/hevc yes, NVENC no: decoding and scaling on the GPU, encoding on the CPU"}
	cpu := &nodeproto.Transcoding{Encoder: "software", Decode: "cpu", GPUs: []nodeproto.GPU{}, Ladders: 2, LaddersFrom: "configured",
		Summary: "encoding with software"}
	origin := routing.AnnouncedNode{ID: "origin-0123456789abcdef", Role: routing.RoleOrigin, Region: "eu-west",
		PublicURL: "https://origin2.example.com", StartedAt: started, Transcode: gpu}
	worker := routing.AnnouncedNode{ID: "worker-gpu1-4242-abcd", Role: routing.RoleWorker, StartedAt: started, Transcode: cpu}
	plain := routing.AnnouncedNode{ID: "origin-fedcba9876543210", Role: routing.RoleOrigin, PublicURL: "http://origin3:8080", StartedAt: started}
	for _, n := range []routing.AnnouncedNode{worker, origin, plain} {
		if err := e.store.AnnounceNode(t.Context(), n, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	got := decode[nodeListJSON](t, list().wantStatus(t, http.StatusOK)).Data
	want := []routing.AnnouncedNode{origin, plain, worker}
	if len(got) != len(want) {
		t.Fatalf("GET /v1/nodes lists %+v, want the announced %+v", got, want)
	}
	ids := make([]string, len(want))
	for i, w := range want {
		g := got[i]
		ids[i] = w.ID
		if g.ID != w.ID || g.Role != w.Role || g.Region != w.Region || g.PublicURL != w.PublicURL || g.State != "active" ||
			!g.JoinedAt.Equal(started) || time.Since(g.LastHeartbeat) > time.Minute || g.DeliveryReports == nil || g.Audits != nil {
			t.Errorf("node %d: %+v, want %+v", i, g, w)
		}
		if !reflect.DeepEqual(g.Transcode, w.Transcode) {
			t.Errorf("node %s transcode %+v, want %+v", w.ID, g.Transcode, w.Transcode)
		}
	}
	return ids
}

// checkParam checks value against the schema of the reusable parameter name.
func (sc *schemaChecker) checkParam(t *testing.T, name, value string) {
	t.Helper()
	param, err := lookupRef(sc.doc, "#/components/parameters/"+name)
	if err != nil {
		t.Error(err)
		return
	}
	schema, _ := param.(map[string]any)["schema"]
	for _, p := range sc.validate(schema, value, name) {
		t.Errorf("header %s", p)
	}
}

// schemaChecker checks answers against the schemas of an OpenAPI document.
// It knows the keywords openapi.yaml uses: $ref, allOf, type, properties,
// required, items, enum, const and pattern; an object with properties may
// have no other field.
type schemaChecker struct {
	doc map[string]any
}

// check checks r as an answer to method path.
func (sc *schemaChecker) check(t *testing.T, path, method string, r response) {
	t.Helper()
	where := fmt.Sprintf("%s %s -> %d", method, path, r.status)
	item, _ := specObject(t, sc.doc, "paths")[path].(map[string]any)
	op, _ := item[strings.ToLower(method)].(map[string]any)
	if op == nil {
		t.Errorf("%s: the spec has no such operation", where)
		return
	}
	responses, _ := op["responses"].(map[string]any)
	resp, ok := responses[strconv.Itoa(r.status)]
	if !ok {
		t.Errorf("%s: the spec does not declare this status; body %s", where, r.body)
		return
	}
	respObj, err := sc.deref(resp)
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return
	}
	content, _ := respObj.(map[string]any)["content"].(map[string]any)
	if len(r.body) == 0 || method == http.MethodHead {
		return
	}
	ct, _, _ := mime.ParseMediaType(r.header.Get("Content-Type"))
	media, _ := content[ct].(map[string]any)
	if media == nil {
		t.Errorf("%s: a body of type %q, which the spec does not declare: %s", where, ct, r.body)
		return
	}
	if ct != "application/json" {
		return
	}
	dec := json.NewDecoder(bytes.NewReader(r.body))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		t.Errorf("%s: body %s: %v", where, r.body, err)
		return
	}
	for _, problem := range sc.validate(media["schema"], v, "$") {
		t.Errorf("%s: %s\n\tbody: %s", where, problem, r.body)
	}
}

// deref follows $ref until it reaches a node without one.
func (sc *schemaChecker) deref(node any) (any, error) {
	for i := 0; i < 32; i++ {
		m, ok := node.(map[string]any)
		if !ok {
			return node, nil
		}
		ref, ok := m["$ref"].(string)
		if !ok {
			return node, nil
		}
		next, err := lookupRef(sc.doc, ref)
		if err != nil {
			return nil, err
		}
		node = next
	}
	return nil, errors.New("$ref loop")
}

// validate returns what is wrong with v under schema; at names v.
func (sc *schemaChecker) validate(schema, v any, at string) []string {
	m, ok := schema.(map[string]any)
	if !ok {
		return []string{fmt.Sprintf("%s: schema %T is not an object", at, schema)}
	}
	var problems []string
	if ref, ok := m["$ref"].(string); ok {
		target, err := lookupRef(sc.doc, ref)
		if err != nil {
			return []string{fmt.Sprintf("%s: %v", at, err)}
		}
		problems = append(problems, sc.validate(target, v, at)...)
	}
	allOf, _ := m["allOf"].([]any)
	for _, sub := range allOf {
		problems = append(problems, sc.validateLoose(sub, v, at)...)
	}
	if types := schemaTypes(m["type"]); len(types) > 0 && !slices.Contains(types, jsonType(v)) &&
		(jsonType(v) != "integer" || !slices.Contains(types, "number")) {
		problems = append(problems, fmt.Sprintf("%s: a JSON %s, the schema wants %s", at, jsonType(v), strings.Join(types, " or ")))
		return problems
	}
	if enum, ok := m["enum"].([]any); ok && !slices.ContainsFunc(enum, func(e any) bool { return fmt.Sprint(e) == fmt.Sprint(v) }) {
		problems = append(problems, fmt.Sprintf("%s: %v is not one of %v", at, v, enum))
	}
	if c, ok := m["const"]; ok && fmt.Sprint(c) != fmt.Sprint(v) {
		problems = append(problems, fmt.Sprintf("%s: %v, the schema wants %v", at, v, c))
	}
	if p, ok := m["pattern"].(string); ok {
		if s, isStr := v.(string); isStr && !regexp.MustCompile(p).MatchString(s) {
			problems = append(problems, fmt.Sprintf("%s: %q does not match %s", at, s, p))
		}
	}
	switch x := v.(type) {
	case map[string]any:
		props, _ := m["properties"].(map[string]any)
		req, _ := m["required"].([]any)
		for _, r := range req {
			if _, ok := x[r.(string)]; !ok {
				problems = append(problems, fmt.Sprintf("%s: required field %q is missing", at, r))
			}
		}
		for k, child := range x {
			if s, ok := props[k]; ok {
				problems = append(problems, sc.validate(s, child, at+"."+k)...)
			} else if props != nil && !sc.declaredInAllOf(allOf, k) {
				problems = append(problems, fmt.Sprintf("%s: field %q is not in the schema", at, k))
			}
		}
	case []any:
		if items, ok := m["items"]; ok {
			for i, child := range x {
				problems = append(problems, sc.validate(items, child, fmt.Sprintf("%s[%d]", at, i))...)
			}
		}
	}
	return problems
}

// validateLoose validates v under one allOf branch, which may declare only
// some of the object's fields.
func (sc *schemaChecker) validateLoose(schema, v any, at string) []string {
	var out []string
	for _, p := range sc.validate(schema, v, at) {
		if !strings.Contains(p, "is not in the schema") {
			out = append(out, p)
		}
	}
	return out
}

// declaredInAllOf tells whether one of the allOf branches declares field k.
func (sc *schemaChecker) declaredInAllOf(allOf []any, k string) bool {
	for _, sub := range allOf {
		s, err := sc.deref(sub)
		if err != nil {
			continue
		}
		props, _ := s.(map[string]any)["properties"].(map[string]any)
		if _, ok := props[k]; ok {
			return true
		}
	}
	return false
}

func schemaTypes(t any) []string {
	switch x := t.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			out = append(out, fmt.Sprint(e))
		}
		return out
	}
	return nil
}

// jsonType names the JSON type of a value decoded with UseNumber.
func jsonType(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case string:
		return "string"
	case json.Number:
		if _, err := x.Int64(); err == nil {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
