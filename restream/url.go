package restream

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// MaxURLLength bounds a target URL.
const MaxURLLength = 2048

// redacted replaces a secret in everything logged, stored or returned.
const redacted = "****"

// ValidateURL checks a target URL: rtmp:// or rtmps://, a host, and a path
// of at least two elements, /<app>/<stream key> (an app may itself hold
// several elements, as in /app/instance/key). A query is allowed (it is
// part of the stream key, as ffmpeg and OBS send it); user info (Adobe
// authentication, which platforms do not use), a fragment, spaces and
// control characters are not.
func ValidateURL(raw string) error {
	_, err := parseTarget(raw)
	return err
}

// target is a validated target URL split the way RTMP publishes it.
type target struct {
	u *url.URL
	// app is the path before the stream key ("/live2"), key the stream key
	// with the query if any ("abcd-1234" or "abcd?x=y").
	app, key string
}

func parseTarget(raw string) (*target, error) {
	if raw == "" {
		return nil, errors.New("URL is empty")
	}
	if len(raw) > MaxURLLength {
		return nil, fmt.Errorf("URL is longer than %d bytes", MaxURLLength)
	}
	if i := strings.IndexFunc(raw, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }); i >= 0 {
		return nil, errors.New("URL contains spaces or control characters")
	}
	if strings.Contains(raw, "#") {
		return nil, errors.New("URL must not have a fragment (#)")
	}
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the URL, stream key included: say less.
		return nil, errors.New("URL does not parse")
	}
	if u.Scheme != "rtmp" && u.Scheme != "rtmps" {
		return nil, fmt.Errorf("URL scheme must be rtmp or rtmps, got %q", u.Scheme)
	}
	if u.Opaque != "" {
		return nil, errors.New("URL must be of the form rtmp://host/app/stream-key")
	}
	if u.User != nil {
		return nil, errors.New("URL must not hold credentials (user:password@): put the stream key in the path")
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, errors.New("URL needs a host")
	}
	if p := u.Port(); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 65535 {
			return nil, fmt.Errorf("URL port %q is not a port number", p)
		}
	} else if strings.HasSuffix(u.Host, ":") {
		return nil, errors.New("URL has an empty port")
	}
	if ip := net.ParseIP(strings.Trim(u.Hostname(), "[]")); ip != nil && ip.IsUnspecified() {
		return nil, errors.New("URL host must not be an unspecified address")
	}
	path := u.Path
	i := strings.LastIndexByte(path, '/')
	if i <= 0 || i == len(path)-1 {
		return nil, errors.New("URL path must be /<app>/<stream key>")
	}
	app := path[:i]
	if strings.Contains(app, "//") || strings.Trim(app, "/") == "" {
		return nil, errors.New("URL path must be /<app>/<stream key>")
	}
	key := path[i+1:]
	if u.RawQuery != "" {
		key += "?" + u.RawQuery
	}
	return &target{u: u, app: app, key: key}, nil
}

// tcURL is what RTMP's connect command calls tcUrl: the URL up to the app,
// without user info or stream key.
func (t *target) tcURL() string { return t.u.Scheme + "://" + t.u.Host + t.app }

// RedactURL returns raw without what grants publishing rights: user info is
// dropped, the stream key (the last path element and the query) shows as
// ****, e.g. rtmp://a.rtmp.youtube.com/live2/****. A URL that does not
// parse redacts to its scheme alone.
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Scheme == "" {
		if i := strings.Index(raw, "://"); i > 0 && i < 16 && !strings.ContainsAny(raw[:i], "/@?#:") {
			return raw[:i] + "://" + redacted
		}
		return redacted
	}
	host := u.Host
	if u.Opaque != "" || strings.ContainsAny(host, "@/") {
		return u.Scheme + "://" + redacted
	}
	var b strings.Builder
	b.WriteString(u.Scheme)
	b.WriteString("://")
	b.WriteString(host)
	path := u.EscapedPath()
	if i := strings.LastIndexByte(path, '/'); i >= 0 {
		b.WriteString(path[:i+1])
		if i < len(path)-1 || u.RawQuery != "" {
			b.WriteString(redacted)
		}
	} else if path != "" || u.RawQuery != "" {
		b.WriteString("/" + redacted)
	}
	return b.String()
}

// secrets lists the strings of raw that must never be logged or stored: the
// stream key, the query and the credentials, raw and unescaped.
func secrets(raw string) []string {
	var out []string
	u, err := url.Parse(raw)
	if err != nil {
		return out
	}
	add := func(s string) {
		// Very short strings would mangle every message they occur in
		// and are no real secret; platform keys are long.
		if len(s) >= 3 {
			out = append(out, s)
		}
	}
	if u.User != nil {
		add(u.User.Username())
		if p, ok := u.User.Password(); ok {
			add(p)
		}
		add(u.User.String())
	}
	if i := strings.LastIndexByte(u.Path, '/'); i >= 0 {
		add(u.Path[i+1:])
	}
	if ep := u.EscapedPath(); strings.LastIndexByte(ep, '/') >= 0 {
		add(ep[strings.LastIndexByte(ep, '/')+1:])
	}
	if u.RawQuery != "" {
		add(u.RawQuery)
		if q, err := url.QueryUnescape(u.RawQuery); err == nil {
			add(q)
		}
		// Each value alone too (a server quoting the token it refused),
		// raw and unescaped, when it is long enough to be one (not "tcp"
		// or "true", which would mangle every message).
		for _, kv := range strings.Split(u.RawQuery, "&") {
			_, v, _ := strings.Cut(kv, "=")
			if len(v) >= minQueryValueSecret {
				add(v)
			}
			if uv, err := url.QueryUnescape(v); err == nil && uv != v && len(uv) >= minQueryValueSecret {
				add(uv)
			}
		}
	}
	// The longest first, so that a secret that holds another (a token
	// made of the stream name and a signature) is replaced whole.
	slices.SortStableFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

// minQueryValueSecret is the shortest query value scrubbed on its own.
const minQueryValueSecret = 8

// scrub replaces every secret of rawURL in msg: a server's error reply or a
// library's error may quote the URL or the publish name.
func scrub(msg, rawURL string) string {
	if rawURL == "" {
		return msg
	}
	msg = strings.ReplaceAll(msg, rawURL, RedactURL(rawURL))
	for _, s := range secrets(rawURL) {
		msg = strings.ReplaceAll(msg, s, redacted)
	}
	return msg
}
