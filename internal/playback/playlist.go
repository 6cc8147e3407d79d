package playback

import (
	"bytes"
	"net/url"
)

// TokenParam is the query parameter that carries a playback token.
const TokenParam = "token"

// RewritePlaylist returns an HLS playlist (master or media) in which every
// URI carries token as the query parameter "token": each URI line (a line
// that is neither blank nor starts with '#') and each URI="..." attribute
// of a tag (EXT-X-MAP, EXT-X-MEDIA, EXT-X-I-FRAME-STREAM-INF, EXT-X-KEY,
// EXT-X-PART, EXT-X-PRELOAD-HINT, EXT-X-RENDITION-REPORT, ...). The
// parameter is added with '?' or '&' as the URI needs, before a fragment;
// the token is query-escaped (a token made by Sign is unchanged by it).
// Everything else, line endings included, is kept byte for byte.
//
// For token "" it returns body itself. It never fails: input that is not a
// playlist is rewritten by the same rules.
func RewritePlaylist(body []byte, token string) []byte {
	if token == "" {
		return body
	}
	param := TokenParam + "=" + url.QueryEscape(token)
	var out bytes.Buffer
	out.Grow(len(body) + 64*(len(param)+1))
	rest := body
	first := true
	for len(rest) > 0 {
		line := rest
		var eol []byte
		if i := bytes.IndexByte(rest, '\n'); i >= 0 {
			line, eol, rest = rest[:i], rest[i:i+1], rest[i+1:]
		} else {
			rest = nil
		}
		if n := len(line); n > 0 && line[n-1] == '\r' {
			line, eol = line[:n-1], append([]byte{'\r'}, eol...)
		}
		if first {
			first = false
			if bom := []byte("\xef\xbb\xbf"); bytes.HasPrefix(line, bom) {
				out.Write(bom)
				line = line[len(bom):]
			}
		}
		switch {
		case len(bytes.TrimSpace(line)) == 0:
			out.Write(line)
		case line[0] == '#':
			rewriteTag(&out, line, param)
		default:
			// Keep white space around the URI where it was.
			start := len(line) - len(bytes.TrimLeft(line, " \t"))
			end := len(bytes.TrimRight(line, " \t"))
			out.Write(line[:start])
			addParam(&out, line[start:end], param)
			out.Write(line[end:])
		}
		out.Write(eol)
	}
	return out.Bytes()
}

// addParam writes uri with param added to its query.
func addParam(out *bytes.Buffer, uri []byte, param string) {
	frag := len(uri)
	if i := bytes.IndexByte(uri, '#'); i >= 0 {
		frag = i
	}
	u := uri[:frag]
	out.Write(u)
	switch q := bytes.IndexByte(u, '?'); {
	case q < 0:
		out.WriteByte('?')
	case q == len(u)-1 || u[len(u)-1] == '&':
	default:
		out.WriteByte('&')
	}
	out.WriteString(param)
	out.Write(uri[frag:])
}

// rewriteTag writes a tag line, adding param to the URI of each quoted
// URI attribute. A tag's attribute list (after the first ':') is
// NAME=VALUE pairs separated by commas, where NAME is [A-Z0-9-]+ and VALUE
// is a quoted string (no '"' inside) or runs to the next comma; a tag whose
// value is not such a list (EXTINF, EXT-X-TARGETDURATION, ...) is written
// unchanged.
func rewriteTag(out *bytes.Buffer, line []byte, param string) {
	colon := bytes.IndexByte(line, ':')
	if colon < 0 || !bytes.Contains(line, []byte(`URI="`)) {
		out.Write(line)
		return
	}
	out.Write(line[:colon+1])
	s := line[colon+1:]
	for len(s) > 0 {
		n := 0
		for n < len(s) && isAttrNameChar(s[n]) {
			n++
		}
		if n == 0 || n == len(s) || s[n] != '=' {
			out.Write(s) // not an attribute list from here on
			return
		}
		name := s[:n]
		out.Write(s[:n+1])
		s = s[n+1:]
		if len(s) > 0 && s[0] == '"' {
			end := bytes.IndexByte(s[1:], '"')
			if end < 0 {
				out.Write(s) // unterminated quoted string
				return
			}
			val := s[1 : 1+end]
			out.WriteByte('"')
			if string(name) == "URI" && len(val) > 0 {
				addParam(out, val, param)
			} else {
				out.Write(val)
			}
			out.WriteByte('"')
			s = s[end+2:]
		} else {
			end := bytes.IndexByte(s, ',')
			if end < 0 {
				end = len(s)
			}
			out.Write(s[:end])
			s = s[end:]
		}
		if len(s) == 0 {
			return
		}
		if s[0] != ',' {
			out.Write(s) // garbage after a quoted value
			return
		}
		out.WriteByte(',')
		s = s[1:]
	}
}

func isAttrNameChar(c byte) bool {
	return (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-'
}
