package main

import (
	"bufio"
	"context"
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// wrkLoad runs wrk (Debian's package) against url for d with conns
// keep-alive connections on 2 threads, and reads its summary: complete
// requests, errors, and the 99th percentile latency.
func wrkLoad(ctx context.Context, bin, url string, conns int, d time.Duration) (loadStats, error) {
	secs := max(1, int(d.Round(time.Second)/time.Second))
	cmd := exec.CommandContext(ctx, bin, "-t2", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", secs), "--latency", url)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return loadStats{}, fmt.Errorf("wrk: %w: %s", err, out)
	}
	return parseWrk(string(out))
}

// parseWrk reads wrk's text summary.
func parseWrk(out string) (loadStats, error) {
	var st loadStats
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) >= 5 && f[1] == "requests" && f[2] == "in":
			st.requests, _ = strconv.ParseInt(f[0], 10, 64)
			if d, err := time.ParseDuration(strings.TrimSuffix(f[3], ",")); err == nil {
				st.seconds = d.Seconds()
			}
		case len(f) >= 2 && f[0] == "99%":
			st.p99 = wrkDuration(f[1])
		case len(f) >= 3 && f[0] == "Socket" && f[1] == "errors:":
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				st.errors += n
			}
		case len(f) >= 5 && f[0] == "Non-2xx":
			st.bad, _ = strconv.ParseInt(f[len(f)-1], 10, 64)
		}
	}
	if st.requests == 0 || st.seconds == 0 {
		return st, fmt.Errorf("wrk: no summary in its output:\n%s", out)
	}
	// wrk counts non-2xx answers among its requests.
	st.requests -= st.bad
	return st, nil
}

// wrkDuration reads wrk's latencies: "812.00us", "15.03ms", "1.20s".
func wrkDuration(s string) time.Duration {
	for _, u := range []struct {
		suffix string
		unit   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"m", time.Minute}, {"s", time.Second}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			if x, err := strconv.ParseFloat(v, 64); err == nil {
				return time.Duration(x * float64(u.unit))
			}
			return 0
		}
	}
	return 0
}
