package remote

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/stream"
	shoaltest "github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/transcode"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// liveTestWorker is a worker's side run in process: it claims from lo,
// reads the source body and posts the renditions body through pipes (the
// HTTP routes only carry them), until ctx ends, which kills it mid-stream.
func liveTestWorker(ctx context.Context, lo *LiveOrigin, id string, claimed chan<- string, log *slog.Logger, cheat func([]ffmpeg.Rung)) {
	for ctx.Err() == nil {
		a, ok, err := lo.ClaimLive(ctx, nodeproto.LiveWorker{ID: id, Ladders: 1, LastSeen: time.Now()})
		if err != nil || !ok {
			continue
		}
		claimed <- id
		srcR, srcW := io.Pipe()
		outR, outW := io.Pipe()
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			err := lo.ServeSource(ctx, id, a.Assignment, func() {}, nodeproto.NewLiveWriter(srcW, nil))
			srcW.CloseWithError(err)
		}()
		go func() {
			defer wg.Done()
			err := lo.ReceiveRenditions(ctx, id, a.Assignment, outR)
			if err == nil {
				err = errors.New("received")
			}
			outR.CloseWithError(err)
		}()
		err = EncodeLiveCheating(ctx, ffmpeg.Config{Backend: ffmpeg.BackendSoftware}, srcR, nodeproto.NewLiveWriter(outW, nil), log, cheat)
		srcR.CloseWithError(errors.New("the worker stopped"))
		outW.CloseWithError(err) // nil: a clean end
		wg.Wait()
	}
}

// rungOut collects one rendition from the hub.
type rungOut struct {
	mu       sync.Mutex
	aus      []*media.AccessUnit
	keys     []int64
	restarts int
	done     chan struct{}
}

// A stream's ladder runs on a remote worker; the worker is killed mid-
// segment and another takes over: every rung goes on in the same
// publication, its DTS increasing, its keyframes on the grid anchored at
// the source's first frame, none missing, equal across rungs.
func TestRemoteLiveFailover(t *testing.T) {
	t.Parallel()
	t.Run("to another worker", func(t *testing.T) {
		t.Parallel()
		testRemoteLiveFailover(t, &liveScenario{workers: []string{"wa", "wb"}, to: "worker"})
	})
	t.Run("to the origin's CPU", func(t *testing.T) {
		t.Parallel()
		testRemoteLiveFailover(t, &liveScenario{workers: []string{"wa"}, to: "cpu"})
	})
}

// liveScenario is a run of testRemoteLiveFailover.
type liveScenario struct {
	workers []string
	to      string // the failover expected: "worker" or "cpu"
	// cheat, when set, is a worker that encodes at a quarter of the
	// ladder's bitrates: it alone claims at first, the others join once
	// it took the stream, and nobody is killed: the origin's checks
	// (every cell, verify) must drop it.
	cheat  string
	verify float64
	deps   LiveDeps
	lo     *LiveOrigin // set by the run
}

// quarterBitrate is a cheating worker's change to its rungs.
func quarterBitrate(rungs []ffmpeg.Rung) {
	for i := range rungs {
		rungs[i].Bitrate /= 4
	}
}

// testRemoteLiveFailover runs the stream with workers, kills the one that
// took it (or lets the checks catch the cheat), and expects a failover to
// sc.to.
func testRemoteLiveFailover(t *testing.T, sc *liveScenario) *prometheus.Registry {
	workerIDs, to := sc.workers, sc.to
	log := slog.New(slog.DiscardHandler)
	track, aus := demuxClip(t, shoaltest.MakeTS(t, 640, 360, 6, 45)) // source GOP 1.5 s, off the 1 s grid
	hub, err := stream.New(stream.Config{QueueSize: 1 << 16}, stream.Deps{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	hctx, hcancel := context.WithCancel(context.Background())
	hubDone := make(chan struct{})
	go func() { _ = hub.Run(hctx); close(hubDone) }()
	t.Cleanup(func() { hcancel(); <-hubDone })

	reg := prometheus.NewRegistry()
	deps := sc.deps
	deps.Log, deps.Registerer = log, reg
	lo, err := NewLiveOrigin(LiveConfig{PollWait: time.Second, VerifyFraction: sc.verify, VerifyConcurrency: 4}, deps)
	if err != nil {
		t.Fatal(err)
	}
	sc.lo = lo
	ladder, _ := media.ParseLadder("240p:400k,180p:300k")
	tc, err := transcode.New(transcode.Config{Ladder: ladder, MaxLadders: 0, HWAccel: transcode.HWNone, Preset: "ultrafast",
		SegmentDuration: time.Second, Remote: transcode.RemoteOnly}, transcode.Deps{Log: log, Hub: hub, Registerer: reg, Remote: lo})
	if err != nil {
		t.Fatal(err)
	}
	tctx, tcancel := context.WithCancel(context.Background())
	tcDone := make(chan error, 1)
	go func() { tcDone <- tc.Run(tctx) }()

	// Two workers: one takes the stream, the other takes over.
	claimed := make(chan string, 4)
	wctx := map[string]context.CancelFunc{}
	var workers sync.WaitGroup
	var wmu sync.Mutex
	startWorker := func(id string) {
		ctx, cancel := context.WithCancel(context.Background())
		wmu.Lock()
		wctx[id] = cancel
		wmu.Unlock()
		var cheat func([]ffmpeg.Rung)
		if id == sc.cheat {
			cheat = quarterBitrate
		}
		workers.Add(1)
		go func() { defer workers.Done(); liveTestWorker(ctx, lo, id, claimed, log, cheat) }()
	}
	initial := workerIDs
	if sc.cheat != "" {
		initial = []string{sc.cheat}
	}
	for _, id := range initial {
		startWorker(id)
	}
	defer func() {
		wmu.Lock()
		for _, c := range wctx {
			c()
		}
		wmu.Unlock()
		workers.Wait()
	}()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for lo.Available() < len(initial) {
		if time.Now().After(deadline) {
			t.Fatal("the workers never claimed")
		}
		<-tick.C
	}

	w := hub.Watch(func(k media.StreamKey) bool { return k.Rendition != media.RenditionSource })
	defer w.Close()
	pub, err := hub.Publish(media.StreamKey{Name: "rl", Rendition: media.RenditionSource}, []media.Track{track})
	if err != nil {
		t.Fatal(err)
	}

	// Collect both rungs; progress signals each access unit published.
	progress := make(chan struct{}, 1)
	outs := map[string]*rungOut{}
	var outsMu sync.Mutex
	var maxOut int64 = -1 << 62
	go func() {
		for range 2 {
			sub, err := w.Next(context.Background())
			if err != nil {
				return
			}
			o := &rungOut{done: make(chan struct{})}
			outsMu.Lock()
			outs[sub.Key().Rendition] = o
			outsMu.Unlock()
			go func() {
				defer close(o.done)
				defer sub.Close()
				_ = sub.Each(context.Background(), func(_ []media.Track, restart bool) {
					if restart {
						o.mu.Lock()
						o.restarts++
						o.mu.Unlock()
					}
				}, func(au *media.AccessUnit) {
					if au.Track != 0 {
						return
					}
					o.mu.Lock()
					o.aus = append(o.aus, au)
					if au.Keyframe {
						o.keys = append(o.keys, au.PTS)
					}
					o.mu.Unlock()
					outsMu.Lock()
					maxOut = max(maxOut, au.PTS)
					outsMu.Unlock()
					select {
					case progress <- struct{}{}:
					default:
					}
				})
			}()
		}
	}()
	out := func() int64 {
		outsMu.Lock()
		defer outsMu.Unlock()
		return maxOut
	}
	// Feed the source about as fast as the ladder encodes it (a live
	// source comes in real time): at most 1.5 s ahead of the output.
	// Kill the first worker once its output is 2.5 s in (mid-segment, past
	// the source keyframe at 1.5 s: the replacement starts off the grid).
	first := aus[0].PTS
	killed, victim, next := false, "", ""
	for _, au := range aus {
		for au.PTS > max(out(), first)+135000 {
			select {
			case <-progress:
			case <-time.After(time.Until(deadline)):
				t.Fatalf("no output past %d (source at %d)", out()-first, au.PTS-first)
			}
		}
		switch {
		case sc.cheat != "" && victim == "":
			// The others join once the cheat took the stream.
			select {
			case victim = <-claimed:
				for _, id := range workerIDs {
					if id != sc.cheat {
						startWorker(id)
					}
				}
			default:
			}
		case sc.cheat != "" && next == "" && au.PTS-first >= 270000:
			// The source waits (at 3 s) for the checks to catch the cheat
			// and the honest worker to take over: checks lag the stream
			// by a cell or two, and this source comes faster than real
			// time.
			select {
			case next = <-claimed:
			case <-time.After(time.Until(deadline)):
				t.Fatal("the cheat was never replaced")
			}
		case sc.cheat == "" && !killed && out()-first >= 225000:
			killed, victim = true, <-claimed
			wmu.Lock()
			wctx[victim]()
			wmu.Unlock()
		}
		pub.Write(au)
	}
	if sc.cheat == "" && !killed {
		t.Fatal("the first worker was never killed")
	}
	if sc.cheat != "" && victim != sc.cheat {
		t.Fatalf("%q took the stream first, not the cheat", victim)
	}
	if to == "worker" {
		if next == "" {
			next = <-claimed
		}
		if next == victim {
			t.Fatalf("worker %s took the stream again after it failed", next)
		}
	}
	pub.Close()
	outsMu.Lock()
	got := maps2(outs)
	outsMu.Unlock()
	if len(got) != 2 {
		t.Fatalf("renditions %v, want 240p and 180p", got)
	}
	for _, name := range got {
		<-outs[name].done
	}
	tcancel()
	if err := <-tcDone; err != nil {
		t.Fatal(err)
	}

	if n := counterValue(t, reg, "shoal_transcode_remote_failovers_total", to); n != 1 {
		t.Errorf("failovers to %s: %v, want 1", to, n)
	}
	last := aus[len(aus)-1].PTS
	var keys0 []int64
	for _, name := range got {
		o := outs[name]
		t.Logf("%s: %d access units, keyframes %v, %d restarts", name, len(o.aus), o.keys, o.restarts)
		if len(o.aus) == 0 {
			t.Errorf("%s: nothing published", name)
			continue
		}
		if o.restarts != 0 {
			t.Errorf("%s restarted %d times: a failover must not break the publication", name, o.restarts)
		}
		for i := 1; i < len(o.aus); i++ {
			if o.aus[i].DTS <= o.aus[i-1].DTS {
				t.Fatalf("%s: DTS %d after %d", name, o.aus[i].DTS, o.aus[i-1].DTS)
			}
		}
		// One keyframe per grid instant from the first frame to the end.
		var want []int64
		for k := first; k <= last; k += 90000 {
			want = append(want, k)
		}
		if !slices.Equal(o.keys, want) {
			t.Errorf("%s: keyframes at %v, want %v (the 1 s grid from %d)", name, o.keys, want, first)
		}
		if keys0 == nil {
			keys0 = o.keys
		} else if !slices.Equal(o.keys, keys0) {
			t.Errorf("keyframes differ across rungs: %v and %v", keys0, o.keys)
		}
		if end := o.aus[len(o.aus)-1].PTS; end != last {
			t.Errorf("%s ends at %d, want the source's last frame %d", name, end, last)
		}
	}
	return reg
}

func maps2(m map[string]*rungOut) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

// counterValue is the value of counter name with a label of value label.
func counterValue(t *testing.T, reg *prometheus.Registry, name, label string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetValue() == label {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

func demuxClip(t *testing.T, path string) (media.Track, []*media.AccessUnit) {
	t.Helper()
	var track media.Track
	var aus []*media.AccessUnit
	if err := ffmpeg.DemuxVideo(path, func(tr media.Track, au *media.AccessUnit) error {
		track = tr
		aus = append(aus, au)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return track, aus
}

// With no worker waiting, a prefer stream is encoded here, an only stream
// is not transcoded at all (served as it came, counted as refused).
func TestRemoteModesWithoutWorkers(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	clip := shoaltest.MakeTS(t, 640, 360, 1, 30)
	for _, mode := range []string{transcode.RemotePrefer, transcode.RemoteOnly} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			track, aus := demuxClip(t, clip) // the hub stamps what it publishes: one copy each
			hub, err := stream.New(stream.Config{QueueSize: 1 << 16}, stream.Deps{Log: log})
			if err != nil {
				t.Fatal(err)
			}
			hctx, hcancel := context.WithCancel(context.Background())
			hubDone := make(chan struct{})
			go func() { _ = hub.Run(hctx); close(hubDone) }()
			t.Cleanup(func() { hcancel(); <-hubDone })
			ladder, _ := media.ParseLadder("240p:400k")
			reg := prometheus.NewRegistry()
			lo, err := NewLiveOrigin(LiveConfig{}, LiveDeps{Log: log})
			if err != nil {
				t.Fatal(err)
			}
			tc, err := transcode.New(transcode.Config{Ladder: ladder, MaxLadders: 1, HWAccel: transcode.HWNone, Preset: "ultrafast",
				SegmentDuration: time.Second, Remote: mode}, transcode.Deps{Log: log, Hub: hub, Registerer: reg, Remote: lo})
			if err != nil {
				t.Fatal(err)
			}
			tctx, tcancel := context.WithCancel(context.Background())
			tcDone := make(chan error, 1)
			go func() { tcDone <- tc.Run(tctx) }()
			w := hub.Watch(func(k media.StreamKey) bool { return k.Rendition != media.RenditionSource })
			defer w.Close()
			pub, err := hub.Publish(media.StreamKey{Name: "nw", Rendition: media.RenditionSource}, []media.Track{track})
			if err != nil {
				t.Fatal(err)
			}
			if claimed := tc.Claimed("nw"); claimed != (mode == transcode.RemotePrefer) {
				t.Errorf("claimed %v", claimed)
			}
			for _, au := range aus {
				pub.Write(au)
			}
			pub.Close()
			if mode == transcode.RemotePrefer {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				defer cancel()
				sub, err := w.Next(ctx)
				if err != nil {
					t.Fatalf("no rung published here: %v", err)
				}
				n := 0
				_ = sub.Each(ctx, func([]media.Track, bool) {}, func(*media.AccessUnit) { n++ })
				sub.Close()
				if sub.Key().Rendition != "240p" || n != len(aus) {
					t.Errorf("rendition %s with %d access units, want 240p with %d", sub.Key().Rendition, n, len(aus))
				}
			}
			tcancel()
			if err := <-tcDone; err != nil {
				t.Fatal(err)
			}
			refused := 0.0
			if mfs, err := reg.Gather(); err == nil {
				for _, mf := range mfs {
					if mf.GetName() == "shoal_transcode_refused_total" {
						refused = mf.GetMetric()[0].GetCounter().GetValue()
					}
				}
			}
			if want := map[string]float64{transcode.RemotePrefer: 0, transcode.RemoteOnly: 1}[mode]; refused != want {
				t.Errorf("refused %v, want %v", refused, want)
			}
		})
	}
}
