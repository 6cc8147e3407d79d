package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// loadStats is the outcome of one load run.
type loadStats struct {
	requests int64 // complete 200s of the expected length
	errors   int64 // connection errors and malformed answers
	bad      int64 // wrong status or length
	nonHit   int64 // answers whose Cache-Status was not a hit (ours only, built-in generator)
	seconds  float64
	p99      time.Duration // 99th percentile latency (wrk only)
}

func (s loadStats) rps() float64 { return float64(s.requests) / s.seconds }

// load keeps conns keep-alive HTTP/1.1 connections to addr busy with GETs
// of path for d, reading every body whole, like wrk: a minimal client, so
// that the client's own cost is small and the same for both servers.
// Requests still in flight at the end are not counted.
func load(ctx context.Context, addr, path string, conns int, d time.Duration, wantLen int64) loadStats {
	req := []byte("GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUser-Agent: shoal-bench-edge\r\nAccept: */*\r\n\r\n")
	var st loadStats
	var requests, errs, bad, nonHit atomic.Int64
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for i := 0; i < conns; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			var c *loadConn
			defer func() {
				if c != nil {
					c.nc.Close()
				}
			}()
			for ctx.Err() == nil && time.Now().Before(deadline) {
				if c == nil {
					nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
					if err != nil {
						errs.Add(1)
						time.Sleep(10 * time.Millisecond)
						continue
					}
					// Unblocks a request in flight at the end.
					_ = nc.SetDeadline(deadline.Add(5 * time.Second))
					c = &loadConn{nc: nc, r: bufio.NewReaderSize(nc, 16<<10)}
				}
				a, err := c.get(req, buf)
				if time.Now().After(deadline) {
					break
				}
				switch {
				case err != nil:
					errs.Add(1)
				case a.status != 200 || a.length != wantLen:
					bad.Add(1)
				default:
					requests.Add(1)
					if a.nonHit {
						nonHit.Add(1)
					}
				}
				if err != nil || a.close {
					c.nc.Close()
					c = nil
				}
			}
		}()
	}
	wg.Wait()
	st.seconds = d.Seconds()
	st.requests, st.errors, st.bad, st.nonHit = requests.Load(), errs.Load(), bad.Load(), nonHit.Load()
	return st
}

type loadConn struct {
	nc net.Conn
	r  *bufio.Reader
}

type answer struct {
	status int
	length int64
	close  bool
	nonHit bool // a Cache-Status that is not "...; hit"
}

var errMalformed = errors.New("malformed answer")

// get sends req and reads the answer, discarding its body into buf.
func (c *loadConn) get(req, buf []byte) (answer, error) {
	var a answer
	if _, err := c.nc.Write(req); err != nil {
		return a, err
	}
	line, err := c.r.ReadSlice('\n')
	if err != nil {
		return a, err
	}
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) {
		return a, errMalformed
	}
	if a.status, err = strconv.Atoi(string(line[9:12])); err != nil {
		return a, errMalformed
	}
	a.length = -1
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return a, err
		}
		line = bytes.TrimRight(line, "\r\n")
		if len(line) == 0 {
			break
		}
		name, val, ok := bytes.Cut(line, []byte(":"))
		if !ok {
			return a, errMalformed
		}
		val = bytes.TrimSpace(val)
		switch {
		case bytes.EqualFold(name, []byte("Content-Length")):
			if a.length, err = strconv.ParseInt(string(val), 10, 64); err != nil {
				return a, errMalformed
			}
		case bytes.EqualFold(name, []byte("Connection")):
			a.close = bytes.EqualFold(val, []byte("close"))
		case bytes.EqualFold(name, []byte("Transfer-Encoding")):
			return a, fmt.Errorf("%w: chunked bodies are not supported", errMalformed)
		case bytes.EqualFold(name, []byte("Cache-Status")):
			a.nonHit = !bytes.HasSuffix(val, []byte("; hit"))
		}
	}
	if a.length < 0 {
		return a, fmt.Errorf("%w: no Content-Length", errMalformed)
	}
	// Reads as large as buf go straight from the socket into buf.
	for left := a.length; left > 0; {
		n, err := c.r.Read(buf[:min(int64(len(buf)), left)])
		left -= int64(n)
		if err != nil {
			return a, err
		}
	}
	return a, nil
}
