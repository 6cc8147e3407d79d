package edgecache

import (
	"bytes"
	"net/url"
)

// RewritePlaylist returns an HLS playlist in which every URI carries the
// playback token: each URI line (a non-empty line not starting with '#') and
// each URI="..." attribute of a tag gets "?token=<t>", or "&token=<t>" when
// it already has a query. The token is query-escaped. URIs with a scheme
// other than http or https (data:, skd:) are left alone, as is everything
// else in the playlist, line endings included. An empty token returns body
// unchanged.
func RewritePlaylist(body []byte, token string) []byte {
	if token == "" {
		return body
	}
	param := "token=" + url.QueryEscape(token)
	out := make([]byte, 0, len(body)+len(body)/8+64)
	for len(body) > 0 {
		var line []byte
		if i := bytes.IndexByte(body, '\n'); i >= 0 {
			line, body = body[:i+1], body[i+1:]
		} else {
			line, body = body, nil
		}
		// content is the line without its line ending.
		content := bytes.TrimRight(line, "\r\n")
		ending := line[len(content):]
		trimmed := bytes.TrimLeft(content, " \t")
		switch {
		case len(trimmed) == 0:
			out = append(out, line...)
		case trimmed[0] == '#':
			out = appendTagWithTokens(out, content, param)
			out = append(out, ending...)
		default:
			// A URI line; trailing blanks stay after the URI.
			uri := bytes.TrimRight(content, " \t")
			out = appendURIWithToken(out, uri, param)
			out = append(out, content[len(uri):]...)
			out = append(out, ending...)
		}
	}
	return out
}

// appendTagWithTokens appends a tag line with a token added to every quoted
// URI attribute.
func appendTagWithTokens(out, tag []byte, param string) []byte {
	for {
		i := indexURIAttr(tag)
		if i < 0 {
			return append(out, tag...)
		}
		start := i + len(`URI="`)
		end := bytes.IndexByte(tag[start:], '"')
		if end < 0 {
			// An unterminated attribute: leave the rest as it is.
			return append(out, tag...)
		}
		end += start
		out = append(out, tag[:start]...)
		out = appendURIWithToken(out, tag[start:end], param)
		out = append(out, '"')
		tag = tag[end+1:]
	}
}

// indexURIAttr finds `URI="` at the start of an attribute (after ':' or ',').
func indexURIAttr(tag []byte) int {
	off := 0
	for {
		i := bytes.Index(tag[off:], []byte(`URI="`))
		if i < 0 {
			return -1
		}
		i += off
		if i > 0 && (tag[i-1] == ':' || tag[i-1] == ',') {
			return i
		}
		off = i + 1
	}
}

func appendURIWithToken(out, uri []byte, param string) []byte {
	if len(uri) == 0 || !tokenableURI(bytes.TrimLeft(uri, " \t")) {
		return append(out, uri...)
	}
	frag := len(uri)
	if i := bytes.IndexByte(uri, '#'); i >= 0 {
		frag = i
	}
	out = append(out, uri[:frag]...)
	if bytes.IndexByte(uri[:frag], '?') >= 0 {
		out = append(out, '&')
	} else {
		out = append(out, '?')
	}
	out = append(out, param...)
	return append(out, uri[frag:]...)
}

// tokenableURI reports whether uri is relative or http(s).
func tokenableURI(uri []byte) bool {
	for i, c := range uri {
		switch {
		case c == ':':
			scheme := string(bytes.ToLower(uri[:i]))
			return scheme == "http" || scheme == "https"
		case c == '/' || c == '?' || c == '#':
			return true
		case i == 0 && !isAlpha(c):
			return true
		case !isAlpha(c) && !(c >= '0' && c <= '9') && c != '+' && c != '-' && c != '.':
			return true
		}
	}
	return true
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
