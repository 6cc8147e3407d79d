package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// Checks return a message without the key name; Validate adds
// "key (ENV): " in front.

const minAdminKeyLen = 16

func checkNonEmpty(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	return nil
}

func intRange(lo, hi int) func(int) error {
	return func(v int) error {
		if v < lo || v > hi {
			return fmt.Errorf("%d is out of range %d..%d", v, lo, hi)
		}
		return nil
	}
}

func durationRange(lo, hi Duration) func(Duration) error {
	return func(v Duration) error {
		if v < lo || v > hi {
			return fmt.Errorf("%s is out of range %s..%s", v, lo, hi)
		}
		return nil
	}
}

func oneOf(allowed ...string) func(string) error {
	return func(v string) error {
		for _, a := range allowed {
			if v == a {
				return nil
			}
		}
		return fmt.Errorf("%s is not one of %s", quote(v), strings.Join(allowed, ", "))
	}
}

// splitAddr splits a listen address into host and a numeric port.
func splitAddr(addr string) (host, port string, err error) {
	host, port, err = net.SplitHostPort(addr)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return "", "", errors.New(ae.Err)
		}
		return "", "", err
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 0 || n > 65535 || port != strconv.Itoa(n) {
		return "", "", fmt.Errorf("port %s is not a number from 0 to 65535", quote(port))
	}
	return host, port, nil
}

func checkAddr(addr string) error {
	if addr == "" {
		return errors.New("must not be empty (use host:port, or :port for every interface)")
	}
	if _, _, err := splitAddr(addr); err != nil {
		return fmt.Errorf("%s is not a host:port listen address: %w", quote(addr), err)
	}
	return nil
}

// checkAddrConflict reports rtmp_addr and http_addr asking for the same
// port on overlapping interfaces. Port 0 (pick a free port) never conflicts.
func checkAddrConflict(c *Config) error {
	hh, hp, err1 := splitAddr(c.HTTPAddr)
	rh, rp, err2 := splitAddr(c.RTMPAddr)
	if err1 != nil || err2 != nil || hp != rp || hp == "0" {
		return nil
	}
	if hh == rh || isWildcardHost(hh) || isWildcardHost(rh) {
		return fmt.Errorf("port %s is also used by http_addr (%s)", rp, c.HTTPAddr)
	}
	return nil
}

// MinAccountingEpoch is the shortest accounting.epoch: longer than a
// node's heartbeat timeout (nodeproto.NodeTTL, 7s), else the uptime
// counted in an epoch could exceed the epoch.
const MinAccountingEpoch = Duration(10 * time.Second)

// maxRetainedEpochs bounds accounting.retention / accounting.epoch: the
// epochs whose figures and reports are kept.
const maxRetainedEpochs = 100000

// checkRetentionEpochs refuses a retention of more than maxRetainedEpochs
// epochs.
func checkRetentionEpochs(c *Config) error {
	e, r := c.Accounting.Epoch, c.Accounting.Retention
	if e < MinAccountingEpoch {
		return nil // accounting.epoch says what is wrong
	}
	// r > e * maxRetainedEpochs, without overflowing.
	if n := int64(r) / int64(e); n > maxRetainedEpochs || (n == maxRetainedEpochs && int64(r)%int64(e) != 0) {
		return fmt.Errorf("%s is more than %d epochs of %s (accounting.epoch): shorten it to %s or less, or lengthen the epoch",
			r, maxRetainedEpochs, e, Duration(int64(e)*maxRetainedEpochs))
	}
	return nil
}

// isWildcardHost reports whether a listen host means every interface.
func isWildcardHost(h string) bool {
	if h == "" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsUnspecified()
}

func checkAdminKey(k string) error {
	if k == "" {
		return nil
	}
	if n := utf8.RuneCountInString(k); n < minAdminKeyLen {
		return fmt.Errorf("must be at least %d characters, got %d", minAdminKeyLen, n)
	}
	if strings.IndexFunc(k, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0 {
		return errors.New("must not contain white space or control characters")
	}
	if !utf8.ValidString(k) {
		return errors.New("must be valid UTF-8")
	}
	return nil
}

func checkRedisURL(s string) error {
	if s == "" {
		return errors.New("must not be empty")
	}
	if scheme, rest, ok := strings.Cut(s, "://"); ok && (scheme == "redis+cluster" || scheme == "rediss+cluster") {
		return checkRedisClusterURL(s, rest)
	}
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%s is not a URL: %w", quote(redactURL(s)), urlErr(err))
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("%s must start with redis://, rediss://, redis+cluster:// or rediss+cluster://", quote(redactURL(s)))
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%s has no host", quote(redactURL(s)))
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 {
			return fmt.Errorf("%s: the path must be /<database number>, got %s", quote(redactURL(s)), quote(u.Path))
		}
	}
	return nil
}

// checkRedisClusterURL checks redis+cluster://[user:password@]host:port,host:port/[?query]
// (rest is what follows "://").
func checkRedisClusterURL(s, rest string) error {
	rest, query, _ := strings.Cut(rest, "?")
	hosts, path, _ := strings.Cut(rest, "/")
	if path != "" {
		return fmt.Errorf("%s: a Redis Cluster has no database number, got path %s", quote(redactURL(s)), quote("/"+path))
	}
	if i := strings.LastIndex(hosts, "@"); i >= 0 {
		hosts = hosts[i+1:]
	}
	if hosts == "" {
		return fmt.Errorf("%s has no host", quote(redactURL(s)))
	}
	for _, h := range strings.Split(hosts, ",") {
		host, port, err := net.SplitHostPort(h)
		if err != nil || host == "" {
			return fmt.Errorf("%s: each node must be host:port, got %s", quote(redactURL(s)), quote(h))
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return fmt.Errorf("%s: bad port in %s", quote(redactURL(s)), quote(h))
		}
	}
	if _, err := url.ParseQuery(query); err != nil {
		return fmt.Errorf("%s: bad query: %w", quote(redactURL(s)), err)
	}
	return nil
}

func checkPublicURL(s string) error {
	if s == "" {
		return errors.New("must not be empty (it could not be derived from http_addr)")
	}
	return checkBaseURL(s, "http", "https")
}

func checkRTMPPublicURL(s string) error {
	if s == "" {
		return errors.New("must not be empty (it could not be derived from public_url and rtmp_addr)")
	}
	return checkBaseURL(s, "rtmp", "rtmps")
}

func checkRTSPPublicURL(s string) error {
	if s == "" {
		return nil // rtsp_addr is off
	}
	return checkBaseURL(s, "rtsp", "rtsps")
}

func checkSRTPublicURL(s string) error {
	if s == "" {
		return nil // srt_addr is off
	}
	return checkBaseURL(s, "srt")
}

// checkBaseURL checks an absolute URL that paths are appended to.
func checkBaseURL(s string, schemes ...string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%s is not a URL: %w", quote(s), urlErr(err))
	}
	if !slices.Contains(schemes, u.Scheme) {
		return fmt.Errorf("%s must be an absolute %s:// or %s:// URL", quote(s), schemes[0], schemes[1])
	}
	if u.Host == "" || u.Hostname() == "" {
		return fmt.Errorf("%s has no host", quote(s))
	}
	if u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(s, "#") {
		return fmt.Errorf("%s must not have a query or fragment", quote(s))
	}
	if strings.HasSuffix(s, "/") {
		return fmt.Errorf("%s must not end with a slash", quote(s))
	}
	return nil
}

// urlErr drops the URL that *url.Error repeats.
func urlErr(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// quote quotes a value for a message, shortened when long.
func quote(s string) string {
	const max = 64
	if utf8.RuneCountInString(s) > max {
		r := []rune(s)
		return strconv.Quote(string(r[:max])) + "..."
	}
	return strconv.Quote(s)
}
