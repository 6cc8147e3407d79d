package app

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/ingest/rtmp"
	"github.com/shoal-video/shoal/ingest/rtsp"
	"github.com/shoal-video/shoal/ingest/srt"
	"github.com/shoal-video/shoal/ingest/whip"
	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/playsession"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/internal/webhook"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/packager/live"
	"github.com/shoal-video/shoal/packager/origin"
	playerapi "github.com/shoal-video/shoal/player-api"
	"github.com/shoal-video/shoal/restream"
	"github.com/shoal-video/shoal/transcode"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/remote"
	"github.com/shoal-video/shoal/transcode/vod"
	"github.com/shoal-video/shoal/web"
	"github.com/shoal-video/shoal/whep"
)

// originReady is called once every listener of the origin role is open.
type originReady func(o *originNode)

// originNode is the running origin role, as handed to an originReady callback.
type originNode struct {
	cfg   config.Config
	store *routing.Store
}

// runOrigin runs ingest, the hub, the packager, origin HTTP and the API until
// ctx is done; with worker set, also a VOD worker (shoal dev).
func runOrigin(ctx context.Context, cfg config.Config, log *slog.Logger, ready originReady, worker bool) error {
	if cfg.AdminKey == "" {
		return errors.New("SHOAL_ADMIN_KEY (admin_key) is required for the origin role: set a secret of at least 16 characters")
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	store, err := routing.NewStore(cfg.RedisURL)
	if err != nil {
		return err
	}
	defer store.Close()
	objects, err := openMediaStore(ctx, cfg, log.With("component", "storage"))
	if err != nil {
		return fmt.Errorf("media store: %w", err)
	}
	files := videoFiles(cfg, objects)

	hub, err := stream.New(stream.Config{QueueSize: cfg.Hub.QueueSize, Grace: cfg.Ingest.ReconnectGrace.Std()},
		stream.Deps{Log: log.With("component", "hub"), Registerer: reg})
	if err != nil {
		return err
	}
	// Remote workers (joined nodes of role "worker") take VOD jobs and
	// live ladders through this origin; their published work is credited
	// to the accounting epoch through the API (made below, before any
	// request).
	var api *playerapi.API
	credit := func(ctx context.Context, node string, deltas map[string]int64) error {
		return api.AddFigures(ctx, node, deltas)
	}
	// The transcoder watches the hub before the packager, which asks it
	// whether a source is replaced by a ladder.
	var tc *transcode.Transcoder
	var serveSource func(id string) bool
	// With transcode.remote, joined remote workers take live ladders
	// (the /v1/worker/live routes).
	var liveOrigin *remote.LiveOrigin
	var workerLive playerapi.WorkerLive
	if cfg.Transcode.Remote != transcode.RemoteOff {
		liveOrigin, err = remote.NewLiveOrigin(remote.LiveConfig{Region: cfg.Region, VerifyFraction: cfg.Transcode.VerifyFraction},
			remote.LiveDeps{Log: log.With("component", "remote-live"), Registerer: reg, Queue: store, Figures: credit})
		if err != nil {
			return err
		}
		workerLive = liveOrigin
	}
	if cfg.Transcode.MaxLadders != 0 || liveOrigin != nil {
		ladder, err := media.ParseLadder(cfg.Transcode.Ladder)
		if err != nil {
			return fmt.Errorf("transcode.ladder: %w", err)
		}
		tc, err = transcode.New(transcode.Config{
			Ladder: ladder, MaxLadders: cfg.Transcode.MaxLadders, HWAccel: cfg.Transcode.HWAccel,
			Preset: cfg.Transcode.Preset, SegmentDuration: cfg.HLS.SegmentDuration.Std(), CacheDir: cfg.DataDir,
			Remote: cfg.Transcode.Remote,
		}, transcode.Deps{Log: log.With("component", "transcode"), Hub: hub, Registerer: reg, Ladders: streamLadders{store}, Remote: remoteLadders(liveOrigin)})
		if err != nil {
			return err
		}
		if !cfg.Transcode.Passthrough {
			// The transcoder watched the hub first, so it has decided.
			serveSource = func(id string) bool { return !tc.Claimed(id) }
		}
	}
	// Live playlists and LL-HLS parts go from the packager to the origin's
	// HTTP handler in memory.
	livePlaylists := live.New()
	// With S3, the packager writes into a local spool that the mirror
	// uploads as it goes; the origin reads the spool first, then S3.
	hlsDir := filepath.Join(cfg.DataDir, "hls")
	hls, mirror, err := liveOutput(cfg, hlsDir, objects, log.With("component", "storage"), reg)
	if err != nil {
		return err
	}
	var fileEvents packager.FileEvents
	var resume func(string) (map[string][]byte, error)
	if mirror != nil {
		// A broadcast taken over from an origin that died continues its
		// recording from the bucket.
		fileEvents, resume = mirror, resumeFrom(hlsDir, hlsStore(objects))
	}
	pkg, err := packager.New(packager.Config{
		Dir:             hlsDir,
		SegmentDuration: cfg.HLS.SegmentDuration.Std(),
		LiveWindow:      cfg.HLS.LiveWindow,
		Format:          cfg.HLS.Format,
		PartDuration:    cfg.HLS.PartDuration.Std(),
		DVRWindow:       cfg.HLS.DVRWindow.Std(),
		// A transcoder that falls back to another encoder or to copying
		// the source ends its renditions and starts new ones within
		// moments: the session, timeline and recordings go on.
		Linger:      2 * time.Second,
		ServeSource: serveSource,
		Renditions:  masterRenditions(tc, cfg.Transcode.Passthrough),
		Resume:      resume,
	}, packager.Deps{Log: log.With("component", "packager"), Hub: hub, Registerer: reg, Live: livePlaylists, Files: fileEvents})
	if err != nil {
		return err
	}
	contentKey, err := sharedSigningKey(ctx, store, "content", filepath.Join(cfg.DataDir, "content-key.pem"), log)
	if err != nil {
		return fmt.Errorf("content signing key: %w", err)
	}
	contentPub := contentKey.Public().(ed25519.PublicKey)
	// Which origin ingests each live stream (several may share Redis).
	owners := newLiveOwners(store, cfg.PublicURL, hub.IsLive, log.With("component", "live"))
	if mirror != nil {
		owners.spooled = mirror.PendingFor
	}
	// One keeper of the playback session secret for the pages that mint
	// tokens and the API that reads them.
	sessions := playsession.NewKeeper(store.SessionSecret, store.ReloadSessionSecret)
	pages, err := web.New(web.Config{PublicURL: cfg.PublicURL, ContentKeys: contentKeyMap(contentPub), DVRWindow: cfg.HLS.DVRWindow.Std(),
		P2PSTUNServers: config.P2PSTUNList(cfg.P2PSTUNServers)},
		web.Deps{Store: store, IsLive: owners.isLiveAnywhere, Log: log.With("component", "web"),
			NewSession: sessions.Mint})
	if err != nil {
		return err
	}
	signed := newPolicyCache(store, filepath.Join(cfg.DataDir, "policies"))
	records := newLiveRecords(store, hub.IsLive, files, filepath.Join(cfg.DataDir, "redis-epoch"), log.With("component", "live"))
	announcer := newLiveAnnouncer(hub, store, log.With("component", "events"), func(ls routing.LiveStream) {
		signed.remember(ls)
		records.seen(ls)
	})
	// The restreamer watches the hub before any publisher can start.
	var restreamer *restream.Manager
	if cfg.Ingest.MaxRestreams > 0 {
		rcfg := restream.DefaultConfig()
		rcfg.AllowPrivate = cfg.Ingest.RestreamAllowPrivate
		restreamer, err = restream.New(rcfg, restream.Deps{Log: log.With("component", "restream"), Hub: hub,
			Targets: restreamTargets{store}, Registerer: reg,
			OnState: newRestreamEvents(store, log.With("component", "restream")).onState})
		if err != nil {
			return err
		}
	}
	keys := newKeyAuthorizer(store, log.With("component", "ingest-auth"))
	// Who a request comes from: trusted proxies' X-Forwarded-For, and, for
	// HLS only (the one thing edges forward), the viewers edges vouch for.
	// A joined edge is not trusted with anything else: a vouch on WHIP,
	// WHEP or the API would let it spread guesses and reports over made-up
	// addresses.
	// The other origins vouch too, with the content key they share, for
	// the viewers of live streams they proxy to this one (liveOwners.proxy).
	vouch := newVouchVerifier(originsVouch(contentPub, newEdgeKeys(store).key), reg, log.With("component", "vouch"))
	clientIP := newClientIPResolver(cfg, nil).IP
	hlsClientIP := newClientIPResolver(cfg, vouch).IP
	owners.vouchKey, owners.clientIP = contentKey, hlsClientIP
	limits := ingest.NewConnLimiter(cfg.Ingest.MaxConnections, cfg.Ingest.MaxConnectionsPerIP)
	// One guard for every protocol: guesses can't be spread over them.
	var auth ingest.Authorizer = keys
	if n := cfg.Ingest.MaxKeyFailuresPerMinute; n > 0 {
		auth = ingest.NewKeyGuard(n, time.Minute/time.Duration(n)).Guard(keys)
	}
	auth = owners.guard(auth)
	rtmpIngest, err := rtmp.New(rtmp.Config{Addr: cfg.RTMPAddr, ReadTimeout: cfg.Ingest.ReadTimeout.Std()},
		rtmp.Deps{Log: log.With("component", "rtmp"), Auth: auth, Hub: hub, Registerer: reg, Limits: limits})
	if err != nil {
		return err
	}
	defer rtmpIngest.Close()
	var rtspIngest *rtsp.Server
	if cfg.RTSPAddr != config.Off {
		rtspIngest, err = rtsp.New(rtsp.Config{Addr: cfg.RTSPAddr, UDPPort: cfg.Ingest.RTSPUDPPort, ReadTimeout: cfg.Ingest.ReadTimeout.Std()},
			rtsp.Deps{Log: log.With("component", "rtsp"), Auth: auth, Hub: hub, Registerer: reg, Limits: limits})
		if err != nil {
			return err
		}
		defer rtspIngest.Close()
	}
	var srtIngest *srt.Server
	if cfg.SRTAddr != config.Off {
		srtIngest, err = srt.New(srt.Config{Addr: cfg.SRTAddr, Latency: cfg.Ingest.SRTLatency.Std(),
			ReadTimeout: cfg.Ingest.ReadTimeout.Std(), Passphrase: cfg.Ingest.SRTPassphrase},
			srt.Deps{Log: log.With("component", "srt"), Auth: auth, Hub: hub, Registerer: reg, Limits: limits})
		if err != nil {
			return err
		}
		defer srtIngest.Close()
	}
	whipIngest, err := whip.New(whipConfig(cfg), whip.Deps{Log: log.With("component", "whip"), Auth: auth, Hub: hub, Registerer: reg,
		StreamAuth: owners.guardStream(apiKeyPublish{store: store, adminKeyHash: ids.Hash(cfg.AdminKey)}),
		Convert:    whipConverters{preset: cfg.Transcode.Preset, segment: cfg.HLS.SegmentDuration.Std(), log: log.With("component", "whip")},
		ClientIP:   clientIP})
	if err != nil {
		return err
	}
	puller, err := rtsp.NewPuller(rtsp.PullConfig{ReadTimeout: cfg.Ingest.ReadTimeout.Std(), AllowPrivate: cfg.Ingest.RTSPPullAllowPrivate},
		rtsp.PullDeps{Log: log.With("component", "rtsp-pull"), Hub: hub, Registerer: reg, Sources: pullSources(store, owners)})
	if err != nil {
		return err
	}
	playbackKey, err := sharedSigningKey(ctx, store, "playback", filepath.Join(cfg.DataDir, "playback-key.pem"), log)
	if err != nil {
		return fmt.Errorf("playback signing key: %w", err)
	}
	whepPlay, err := whep.New(whepConfig(cfg), whep.Deps{Log: log.With("component", "whep"), Hub: hub, Registerer: reg,
		Authorize: whepAuthorizer(store, signed.signed, playbackKey.Public().(ed25519.PublicKey)),
		Opus: func(src media.Track) (whep.AudioConverter, error) {
			return ffmpeg.NewAudioConverterTo(src, media.CodecOpus, 96_000, log.With("component", "whep"))
		},
		UDPMux: whipIngest.UDPMux(), ClientIP: clientIP})
	if err != nil {
		return err
	}
	nodes := newNodeMetrics(reg)
	pipe := pipeline{hub: hub, ingest: rtmpIngest, rtsp: rtspIngest, srt: srtIngest, whip: whipIngest, restream: restreamer, keys: keys, pull: puller, pkg: pkg, tc: tc, owners: owners}
	// A key reset (or stream deleted) through any origin disconnects the
	// stream's publisher here too.
	keys.revoke = pipe.disconnectPublishers
	owners.disconnect = pipe.disconnectPublishers
	workerJobs, err := newRemoteJobs(cfg, store, files, worker, credit, log.With("component", "remote-jobs"), reg)
	if err != nil {
		return err
	}
	var shop *shopper
	var auditSummary func(string) (playerapi.AuditSummary, bool)
	if every := cfg.Route.AuditInterval.Std(); every > 0 {
		shop = newShopper(hls, contentKey, signed.signed, every, cfg.Route.QuarantineAudits,
			store.ListNodes, store.QuarantineNode, reg, log.With("component", "audit"))
		shop.known = signed.known
		auditSummary = shop.summary
	}
	api, err = playerapi.New(playerapi.Config{
		AdminKey: cfg.AdminKey, PublicURL: cfg.PublicURL, RTMPURL: cfg.RTMPPublicURL, RTSPURL: rtspURL(cfg),
		SRTURL: srtURL(cfg), WHIP: whipIngest, WHEP: whepPlay, MaxRestreams: cfg.Ingest.MaxRestreams, WebhookAllowPrivate: cfg.WebhookAllowPrivate == "true",
		SourceAllowPrivate: cfg.Ingest.RTSPPullAllowPrivate, MaxUploadBytes: cfg.MaxUploadBytes,
		UploadAllowedOrigins: config.SplitList(cfg.UploadAllowedOrigins), UploadDir: uploadDir(cfg), Videos: files,
		UploadStore: playerapi.UploadObjects(objects, cfg.Storage.Backend == config.StorageS3),
		PlaybackKey: playbackKey, RegionHeader: cfg.Route.RegionHeader, ClientIP: clientIP, Registerer: reg, OnHeartbeat: nodes.heartbeat,
		ContentKeys: []ed25519.PublicKey{contentPub}, MaxNodesPerToken: cfg.Route.MaxNodesPerToken, Sessions: sessions,
		QuarantineReports: cfg.Route.QuarantineReports, OnDeliveryFailure: nodes.deliveryFailure,
		Audit: newAuditor(hls, contentKey, signed.signed).audit, AuditSummary: auditSummary,
		Accounting: playerapi.Accounting{Epoch: cfg.Accounting.Epoch.Std(), RewardPool: cfg.Accounting.RewardPool, ViewerNetworkMbps: cfg.Accounting.ViewerNetworkMbps,
			Retention: cfg.Accounting.Retention.Std(), Key: contentKey},
		WorkerJobs: workerJobs, WorkerLive: workerLive,
	}, store, pipe, log.With("component", "api"))
	if err != nil {
		return err
	}
	if shop != nil {
		shop.figures = api.AddFigures // before the shopper runs
	}
	httpSrv, err := newHTTPServer(httpConfig{Addr: cfg.HTTPAddr, HLS: hls, MetricsToken: cfg.MetricsToken,
		HLSOptions: []origin.Option{origin.WithSignedPlayback(signed.signed, playbackKey.Public().(ed25519.PublicKey)),
			origin.WithContentKey(contentKey), origin.WithLive(livePlaylists), origin.WithKnown(signed.known), origin.WithP2P(signed.p2pOff), origin.WithClientIP(hlsClientIP)},
		WrapHLS: func(h http.Handler) http.Handler { return nodes.countEdgeFetches(owners.proxy(h)) }, P2P: true, ClientIP: clientIP},
		httpDeps{Log: log.With("component", "http"), API: api, Web: pages, Ready: store, Registry: reg})
	if err != nil {
		return err
	}
	defer httpSrv.close()
	hooks, err := webhook.New(webhook.Config{Consumer: consumerName(), AllowPrivate: cfg.WebhookAllowPrivate == "true"},
		webhook.Deps{Store: store, Log: log.With("component", "webhooks"), Registerer: reg})
	if err != nil {
		return err
	}
	// What this node transcodes with, for its announcement: its live
	// ladders', read again at each (a self-benchmark may change them), or
	// else its VOD worker's.
	var transcodeCaps func() *nodeproto.Transcoding
	if tc != nil {
		transcodeCaps = func() *nodeproto.Transcoding { c := tc.Capabilities(); return &c }
	}
	var vodWorker *vod.Worker
	if worker {
		vlog := log.With("component", "vod")
		var accel transcode.Accel
		if tc != nil {
			accel = tc.Accel() // probed once per node: the live transcoder has done it
		} else if accel, err = transcode.PickAccel(cfg.Transcode.HWAccel, vlog); err != nil {
			return err
		} else {
			reg.MustRegister(transcode.NewAccelCollector(accel))
			caps := vodCapabilities(cfg, accel)
			transcodeCaps = func() *nodeproto.Transcoding { return caps }
		}
		if vodWorker, err = newVODWorker(cfg, store, objects, accel, consumerName(), vlog, reg); err != nil {
			return err
		}
	}
	self := newOriginAnnouncer(store, cfg, transcodeCaps, log.With("component", "announce"))

	log.Info("shoal origin starting", "version", Version, "media_store", describeStore(cfg), "config", fmt.Sprintf("%+v", cfg.Redacted()))
	if err := store.Ping(ctx); err != nil {
		log.Warn("redis is not reachable yet; the API answers 503 until it is", "err", err)
	}
	if ready != nil {
		ready(&originNode{cfg: cfg, store: store})
	}

	// The hub outlives ingest so that shutdown ends every stream properly
	// (the packager writes ENDLIST) before the packager stops.
	hubCtx, stopHub := context.WithCancel(context.WithoutCancel(ctx))
	defer stopHub()
	var hubGroup errgroup.Group
	hubGroup.Go(func() error { return hub.Run(hubCtx) })
	// The mirror outlives the packager: what it writes as streams end
	// goes up before the origin stops (for at most mirrorDrain).
	mirrorCtx, stopMirror := context.WithCancel(context.WithoutCancel(ctx))
	defer stopMirror()
	// The leases on live streams outlive the packager and the mirror: an
	// origin that stops keeps its streams until all it wrote of them is in
	// the store, so an origin taking them over continues them whole.
	ownersCtx, stopOwners := context.WithCancel(context.WithoutCancel(ctx))
	defer stopOwners()
	var ownersGroup errgroup.Group
	ownersGroup.Go(func() error { owners.run(ownersCtx); return nil })
	var mirrorGroup errgroup.Group
	if mirror != nil {
		mirrorGroup.Go(func() error { return mirror.Run(mirrorCtx, mirrorDrain) })
	}
	pkgCtx, stopPkg := context.WithCancel(context.WithoutCancel(ctx))
	defer stopPkg()
	var pkgGroup errgroup.Group
	pkgGroup.Go(func() error { return pkg.Run(pkgCtx) })
	pkgGroup.Go(func() error { return announcer.Run(pkgCtx) })
	tcCtx, stopTC := context.WithCancel(context.WithoutCancel(ctx))
	defer stopTC()
	var tcGroup errgroup.Group
	if tc != nil {
		tcGroup.Go(func() error { return tc.Run(tcCtx) })
	}

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return keys.Run(gctx) })
	g.Go(func() error { self.run(gctx); return nil })
	g.Go(func() error { migrateStreamKeys(gctx, store, log); return nil })
	keeper := newSigningKeyKeeper(store, map[string]ed25519.PrivateKey{"content": contentKey, "playback": playbackKey}, log.With("component", "keys"))
	g.Go(func() error { keeper.run(gctx); return nil })
	g.Go(func() error { return rtmpIngest.Run(gctx) })
	if rtspIngest != nil {
		g.Go(func() error { return rtspIngest.Run(gctx) })
	}
	if srtIngest != nil {
		g.Go(func() error { return srtIngest.Run(gctx) })
	}
	g.Go(func() error { return whipIngest.Run(gctx) })
	g.Go(func() error { return whepPlay.Run(gctx) })
	if restreamer != nil {
		g.Go(func() error { return restreamer.Run(gctx) })
	}
	g.Go(func() error { return puller.Run(gctx) })
	g.Go(func() error { return httpSrv.run(gctx) })
	if httpSrv.tracker != nil {
		p2pTick := time.NewTicker(p2pFlushEvery)
		defer p2pTick.Stop()
		stats := newP2PBatcher(httpSrv.tracker.TakeStats)
		g.Go(func() error {
			runP2PStats(gctx, p2pTick.C, stats, "origin-"+ids.New(), api.RecordP2PStats, log.With("component", "p2p"))
			return nil
		})
	}
	if shop != nil {
		// Each edge is due at its own random times; a tick looks for those.
		auditTick := time.NewTicker(min(max(shop.interval/10, 100*time.Millisecond), 5*time.Second))
		defer auditTick.Stop()
		g.Go(func() error { shop.run(gctx, auditTick.C); return nil })
	}
	g.Go(func() error { return hooks.Run(gctx) })
	sealTick := time.NewTicker(api.SealEvery())
	defer sealTick.Stop()
	g.Go(func() error { sealEpochs(gctx, sealTick.C, api, log.With("component", "accounting")); return nil })
	g.Go(func() error { recoverUploads(gctx, api, log.With("component", "api")); return nil })
	g.Go(func() error {
		expireUploads(gctx, api, cfg.UploadExpiry.Std(), log.With("component", "api"))
		return nil
	})
	g.Go(func() error { return records.Run(gctx) })
	g.Go(func() error { return workerJobs.Run(gctx) })
	if vodWorker != nil {
		g.Go(func() error { return vodWorker.Run(gctx) })
	}
	err = g.Wait()
	owners.draining.Store(true)

	// Shutdown ends the live sources first, so that every ladder flushes its
	// encoders and ends its renditions, then the hub (ending whatever is
	// left); the packager finishes every playlist it was writing (ENDLIST).
	hub.EndAll(func(k media.StreamKey) bool { return k.Rendition == media.RenditionSource })
	stopTC() // no new ladders; running ones finish their source
	_ = tcGroup.Wait()
	stopHub()
	_ = hubGroup.Wait()
	_ = pkgGroup.Wait()
	stopPkg()
	stopMirror()
	_ = mirrorGroup.Wait()
	stopOwners()
	_ = ownersGroup.Wait()
	log.Info("shoal origin stopped")
	return err
}

// sealEpochs seals the accounting reports of the epochs that are over at
// every tick, until ctx is done (every origin does; the first to seal an
// epoch wins).
func sealEpochs(ctx context.Context, tick <-chan time.Time, api *playerapi.API, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick:
			if err := api.SealEpochs(ctx); err != nil && ctx.Err() == nil {
				log.Warn("could not seal the accounting reports of ended epochs; retrying", "err", err)
			}
		}
	}
}

// recoverUploads finishes the uploads a crash interrupted (see
// playerapi.API.RecoverUploads), retrying while Redis or the media store
// fails.
func recoverUploads(ctx context.Context, api *playerapi.API, log *slog.Logger) {
	retry := 5 * time.Second
	for {
		n, err := api.RecoverUploads(ctx)
		if n > 0 {
			log.Info("finished uploads a restart interrupted", "uploads", n)
		}
		if err == nil {
			return
		}
		// Redis or the media store down: tried again, less and less
		// often (at most every minute), until it works.
		log.Warn("finishing interrupted uploads; retrying", "err", err, "in", retry)
		select {
		case <-ctx.Done():
			return
		case <-time.After(retry):
		}
		retry = min(2*retry, time.Minute)
	}
}

// uploadSweep is how often an origin looks for tus uploads past
// upload_expiry.
const uploadSweep = 10 * time.Minute

// expireUploads removes the tus uploads nothing came to for expiry (see
// playerapi.API.ExpireUploads), every uploadSweep; 0 keeps them.
func expireUploads(ctx context.Context, api *playerapi.API, expiry time.Duration, log *slog.Logger) {
	if expiry <= 0 {
		return
	}
	every(ctx, uploadSweep, func() bool {
		n, err := api.ExpireUploads(ctx, expiry)
		if n > 0 {
			log.Info("removed abandoned uploads", "uploads", n, "expiry", expiry)
		}
		if err != nil && ctx.Err() == nil {
			log.Warn("removing abandoned uploads; trying again later", "err", err)
		}
		return false
	})
}

// contentKeyMap is the content keys as the pages embed them: key id ->
// unpadded base64url public key.
func contentKeyMap(keys ...ed25519.PublicKey) map[string]string {
	out := map[string]string{}
	for _, k := range keys {
		out[manifest.KeyID(k)] = base64.RawURLEncoding.EncodeToString(k)
	}
	return out
}

// rtspURL is the RTSP URL publishers use, "" when RTSP ingest is off.
func rtspURL(cfg config.Config) string {
	if cfg.RTSPAddr == config.Off {
		return ""
	}
	return cfg.RTSPPublicURL
}

// srtURL is the SRT URL publishers use, "" when SRT ingest is off.
func srtURL(cfg config.Config) string {
	if cfg.SRTAddr == config.Off {
		return ""
	}
	return cfg.SRTPublicURL
}

// masterRenditions is what a stream's master playlist is to list: its
// ladder's rungs (and the source with passthrough); nil without a ladder.
func masterRenditions(tc *transcode.Transcoder, passthrough bool) func(id string) []string {
	if tc == nil {
		return nil
	}
	return func(id string) []string {
		rungs := tc.Rungs(id)
		if passthrough && len(rungs) > 0 {
			rungs = append(slices.Clone(rungs), media.RenditionSource)
		}
		return rungs
	}
}

// migrateStreamKeys hashes the plain stream keys of live streams created
// before keys were stored hashed (see routing.MigrateStreamKeys), retrying
// while Redis is unreachable, until done or ctx is done. Those keys work
// meanwhile.
func migrateStreamKeys(ctx context.Context, store *routing.Store, log *slog.Logger) {
	for {
		n, err := store.MigrateStreamKeys(ctx, 100)
		if err == nil {
			if n > 0 {
				log.Info("stream keys now stored hashed", "live_streams", n)
			}
			return
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("could not hash stored stream keys yet; retrying", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

// remoteLadders is lo as the transcoder's RemoteLadders (nil when off).
func remoteLadders(lo *remote.LiveOrigin) transcode.RemoteLadders {
	if lo == nil {
		return nil
	}
	return lo
}
