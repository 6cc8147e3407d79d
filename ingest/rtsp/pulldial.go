package rtsp

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"github.com/bluenviron/gortsplib/v4/pkg/base"

	"github.com/shoal-video/shoal/internal/netguard"
)

// maxRedirects bounds the DESCRIBE redirects one pull attempt follows.
// gortsplib follows every one (recursively, over a new connection each):
// the dial after one too many fails.
const maxRedirects = 5

var errTooManyRedirects = fmt.Errorf("too many redirects (more than %d)", maxRedirects)

var errPrivateAddress = errors.New("the source resolves to a loopback, private or link-local address (set ingest.rtsp_pull_allow_private to allow it)")

// attempt is one pull attempt's hold on its gortsplib client: every
// connection the client opens goes through dial, every request and
// response past onRequest and onResponse. It counts redirects, keeps the
// source URL's credentials to the source's own host and port, and can cut
// every connection at once (abort), which ends a request in flight at once
// (a client's Close alone waits for its read timeout). Unless the puller
// allows private addresses, it dials public ones only.
type attempt struct {
	origin string    // the source's host:port, canonical
	user   *base.URL // the source URL's credentials (only User is set), or nil
	dialer net.Dialer

	mu        sync.Mutex
	redirects int
	current   string // the address of the connection open last
	conns     []net.Conn
	aborted   bool
}

// newAttempt holds an attempt on source u; unless allowPrivate, it dials
// public addresses only.
func newAttempt(u *base.URL, allowPrivate bool) *attempt {
	a := &attempt{origin: canonicalAddr(u.Scheme, u.Host)}
	if !allowPrivate {
		a.dialer.Control = netguard.Control(errPrivateAddress)
	}
	if u.User != nil {
		a.user = &base.URL{User: u.User}
	}
	return a
}

// canonicalAddr is the address gortsplib dials for scheme and host.
func canonicalAddr(scheme, host string) string {
	u := &base.URL{Scheme: scheme, Host: host}
	port := u.Port()
	if port == "" {
		port = "554"
		if scheme == "rtsps" {
			port = "322"
		}
	}
	return net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

func (a *attempt) dial(ctx context.Context, network, address string) (net.Conn, error) {
	a.mu.Lock()
	if a.aborted {
		a.mu.Unlock()
		return nil, errors.New("the attempt was ended")
	}
	if a.redirects > maxRedirects {
		a.mu.Unlock()
		return nil, errTooManyRedirects
	}
	a.current = strings.ToLower(address)
	a.mu.Unlock()
	c, err := a.dialer.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.aborted {
		c.Close()
		return nil, errors.New("the attempt was ended")
	}
	a.conns = append(a.conns, c)
	return c, nil
}

// onResponse counts redirects (what gortsplib follows: a 3xx with one
// Location).
func (a *attempt) onResponse(res *base.Response) {
	if res.StatusCode >= base.StatusMovedPermanently && res.StatusCode <= base.StatusUseProxy &&
		len(res.Header["Location"]) == 1 {
		a.mu.Lock()
		a.redirects++
		a.mu.Unlock()
	}
}

// onRequest drops the source URL's credentials from a request sent over a
// connection to another host or port than the source's: gortsplib copies
// them onto a redirect's target, and answers a 401 with them, in the clear
// for Basic. Credentials the redirect's Location names itself are kept.
func (a *attempt) onRequest(req *base.Request) {
	if a.user == nil || req.URL == nil || req.URL.User == nil || req.URL.User.String() != a.user.User.String() {
		return
	}
	a.mu.Lock()
	elsewhere := a.current != a.origin
	a.mu.Unlock()
	if elsewhere {
		req.URL.User = nil
	}
}

// abort closes every connection of the attempt and refuses new ones.
func (a *attempt) abort() {
	a.mu.Lock()
	a.aborted = true
	conns := a.conns
	a.conns = nil
	a.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}
