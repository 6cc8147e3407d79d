package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/packager/origin"
)

const (
	staticID   = "benchstatic"
	staticRend = "360p"
	segName    = "1-0-7.m4s"
	playName   = "index.m3u8"
)

type staticResult struct {
	oursSeg, nginxSeg, oursPlay, nginxPlay float64
	oursPlayP99, nginxPlayP99              float64 // milliseconds (wrk)
}

// staticBench compares our edge and nginx serving the same two files.
func staticBench(ctx context.Context, dir string, o options) (staticResult, error) {
	var res staticResult
	root := filepath.Join(dir, "static")
	rend := filepath.Join(root, "hls", staticID, staticRend)
	if err := os.MkdirAll(rend, 0o755); err != nil {
		return res, err
	}
	seg := make([]byte, o.segBytes)
	_, _ = rand.Read(seg)
	play := vodPlaylist(o.playBytes)
	if err := os.WriteFile(filepath.Join(rend, segName), seg, 0o644); err != nil {
		return res, err
	}
	if err := os.WriteFile(filepath.Join(rend, playName), play, 0o644); err != nil {
		return res, err
	}
	segPath := "/hls/" + staticID + "/" + staticRend + "/" + segName
	playPath := "/hls/" + staticID + "/" + staticRend + "/" + playName

	// The origin our edge fills from, in this process: it is asked once per
	// object, then once a minute for the playlist (a finished one, fresh for
	// a minute by the origin's rules: a revalidation answered 304).
	var originGets atomic.Int64
	hlsStore, err := fsstore.New(filepath.Join(root, "hls"))
	if err != nil {
		return res, err
	}
	oh := origin.NewHandler(hlsStore)
	oln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return res, err
	}
	osrv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		originGets.Add(1)
		oh.ServeHTTP(w, r)
	})}
	go func() { _ = osrv.Serve(oln) }()
	defer osrv.Close()

	ng, err := startNginx(ctx, o.nginx, filepath.Join(dir, "nginx"), root)
	if err != nil {
		return res, err
	}
	defer ng.stop()
	edge, err := startEdge(ctx, "http://"+oln.Addr().String(), filepath.Join(dir, "edge-cache"), o.edgeMemory, o.profile != "")
	if err != nil {
		return res, err
	}
	defer edge.stop()

	for _, obj := range []struct {
		path string
		body []byte
	}{{segPath, seg}, {playPath, play}} {
		if err := warm(ctx, ng.addr, obj.path, obj.body, false); err != nil {
			return res, fmt.Errorf("nginx: %w", err)
		}
		if err := warm(ctx, edge.addr, obj.path, obj.body, true); err != nil {
			return res, fmt.Errorf("edge: %w", err)
		}
	}
	logf("static: warmed up; the origin was asked %d times; edge %s (GOMAXPROCS=1), nginx %s (1 worker)",
		originGets.Load(), edge.addr, ng.addr)

	workers := ng.workerPIDs()
	if len(workers) == 0 {
		return res, errors.New("no nginx worker process found")
	}
	// Requests per second, and server CPU microseconds per request.
	type series struct{ ours, nginx, oursCPU, nginxCPU, oursP99, nginxP99 []float64 }
	var segS, playS series
	for rep := 0; rep < o.reps; rep++ {
		for _, obj := range []struct {
			name string
			path string
			size int
			s    *series
		}{{"segment", segPath, len(seg), &segS}, {"playlist", playPath, len(play), &playS}} {
			ours := func() error {
				var prof chan error
				if rep == 0 && o.profile != "" {
					prof = make(chan error, 1)
					go func() {
						prof <- saveProfile(ctx, edge.pprofAddr, o.duration-time.Second,
							filepath.Join(o.profile, "edge-"+obj.name+".pprof"))
					}()
				}
				st, cpu, err := measure(ctx, edge.addr, obj.path, o, int64(obj.size), []int{edge.cmd.Process.Pid})
				if err != nil {
					return err
				}
				report("ours ", obj.name, rep, st, cpu, obj.size)
				if prof != nil {
					if err := <-prof; err != nil {
						logf("profile: %v", err)
					}
				}
				// Not-hits are expected now and then: the playlist is fresh for
				// a minute (the origin's Cache-Control), then revalidated.
				if st.errors > 0 || st.bad > 0 || edge.exited() {
					return fmt.Errorf("our edge failed the %s load: %d errors, %d bad answers", obj.name, st.errors, st.bad)
				}
				obj.s.ours = append(obj.s.ours, st.rps())
				obj.s.oursCPU = append(obj.s.oursCPU, cpuPerRequest(st, cpu))
				obj.s.oursP99 = append(obj.s.oursP99, st.p99.Seconds()*1000)
				return nil
			}
			theirs := func() error {
				st, cpu, err := measure(ctx, ng.addr, obj.path, o, int64(obj.size), workers)
				if err != nil {
					return err
				}
				report("nginx", obj.name, rep, st, cpu, obj.size)
				if st.errors > 0 || st.bad > 0 || ng.exited() {
					return fmt.Errorf("nginx failed the %s load: %d errors, %d bad answers", obj.name, st.errors, st.bad)
				}
				obj.s.nginx = append(obj.s.nginx, st.rps())
				obj.s.nginxCPU = append(obj.s.nginxCPU, cpuPerRequest(st, cpu))
				obj.s.nginxP99 = append(obj.s.nginxP99, st.p99.Seconds()*1000)
				return nil
			}
			// Alternate which goes first.
			first, second := theirs, ours
			if rep%2 == 1 {
				first, second = ours, theirs
			}
			if err := first(); err != nil {
				return res, err
			}
			if err := second(); err != nil {
				return res, err
			}
			if ctx.Err() != nil {
				return res, ctx.Err()
			}
		}
	}
	if n := originGets.Load(); n > 2 {
		logf("static: the origin was asked %d times in all", n)
	}
	for _, x := range []struct {
		name string
		s    series
	}{{"segment", segS}, {"playlist", playS}} {
		// The ratio of each back-to-back pair, less sensitive to load
		// from outside that changes from run to run.
		var pairs []string
		for i := range x.s.ours {
			pairs = append(pairs, fmt.Sprintf("%.2f", x.s.ours[i]/x.s.nginx[i]))
		}
		logf("static %-8s medians: ours %.0f req/s, nginx %.0f req/s (ratio %.2f; pairs %s); server CPU per request: ours %.1f us, nginx %.1f us (nginx/ours %.2f)",
			x.name, median(x.s.ours), median(x.s.nginx), median(x.s.ours)/median(x.s.nginx), strings.Join(pairs, " "),
			median(x.s.oursCPU), median(x.s.nginxCPU), median(x.s.nginxCPU)/median(x.s.oursCPU))
		if o.wrk != "" {
			logf("static %-8s p99 latency medians (wrk): ours %.2f ms, nginx %.2f ms", x.name, median(x.s.oursP99), median(x.s.nginxP99))
		}
	}
	res.oursPlayP99, res.nginxPlayP99 = median(playS.oursP99), median(playS.nginxP99)
	res.oursSeg, res.nginxSeg = median(segS.ours), median(segS.nginx)
	res.oursPlay, res.nginxPlay = median(playS.ours), median(playS.nginx)
	return res, nil
}

// measure runs one load (wrk, or the built-in generator with -wrk "")
// and returns it with the CPU the server used.
func measure(ctx context.Context, addr, path string, o options, size int64, pids []int) (loadStats, time.Duration, error) {
	time.Sleep(500 * time.Millisecond) // let the previous run's connections close
	before := cpuOf(pids)
	if o.wrk != "" {
		st, err := wrkLoad(ctx, o.wrk, "http://"+addr+path, o.conns, o.duration)
		return st, cpuOf(pids) - before, err
	}
	st := load(ctx, addr, path, o.conns, o.duration, size)
	return st, cpuOf(pids) - before, nil
}

func report(who, obj string, rep int, st loadStats, cpu time.Duration, size int) {
	logf("static %s %-8s run %d: %8.0f req/s %7.1f MB/s  p99 %v  server CPU %3.0f%% (%.1f us/req)  errors %d bad %d not-hit %d  load %s",
		who, obj, rep+1, st.rps(), st.rps()*float64(size)/1e6, st.p99, 100*cpu.Seconds()/st.seconds, cpuPerRequest(st, cpu), st.errors, st.bad, st.nonHit, loadAvg())
}

// cpuPerRequest is the server's CPU time per request in microseconds.
func cpuPerRequest(st loadStats, cpu time.Duration) float64 {
	if st.requests == 0 {
		return nan()
	}
	return float64(cpu.Microseconds()) / float64(st.requests)
}

// warm fetches path a few times and checks the bytes (and, for our edge,
// that the last answer came from memory).
func warm(ctx context.Context, addr, path string, want []byte, ours bool) error {
	var cs string
	for i := 0; i < 3; i++ {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
		if err != nil {
			return err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if resp.StatusCode != http.StatusOK || !bytes.Equal(body, want) {
			return fmt.Errorf("GET %s: status %d, %d bytes (want 200, %d bytes)", path, resp.StatusCode, len(body), len(want))
		}
		cs = resp.Header.Get("Cache-Status")
		// The first answer is stored once its fetch ends.
		time.Sleep(50 * time.Millisecond)
	}
	if ours && !strings.HasSuffix(cs, "; hit") {
		return fmt.Errorf("GET %s: Cache-Status %q after warming, want a hit", path, cs)
	}
	return nil
}

// vodPlaylist is a finished media playlist of about n bytes.
func vodPlaylist(n int) []byte {
	var b bytes.Buffer
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-MAP:URI=\"init-1-0-0.mp4\"\n")
	const end = "#EXT-X-ENDLIST\n"
	for i := 0; ; i++ {
		line := fmt.Sprintf("#EXTINF:2.000,\n1-0-%d.m4s\n", i)
		if b.Len()+len(line)+len(end) > n {
			break
		}
		b.WriteString(line)
	}
	b.WriteString(end)
	return b.Bytes()
}

// saveProfile fetches a CPU profile of d from a pprof server into path.
func saveProfile(ctx context.Context, addr string, d time.Duration, path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	url := fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", addr, max(1, int(d.Seconds())))
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", url, resp.StatusCode)
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, resp.Body); err != nil {
		f.Close()
		return err
	}
	logf("profile written: %s", path)
	return f.Close()
}
