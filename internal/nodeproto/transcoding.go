package nodeproto

import (
	"fmt"
	"math"
	"strings"
	"unicode/utf8"
)

// Transcoding is what a node that transcodes (an origin's live ladders, a
// VOD worker) can do, as its hardware probe and its self-benchmark found
// at start. Like every figure a node gives about itself, it is a claim:
// the origin schedules by it but credits only work it confirmed.
type Transcoding struct {
	// Encoder is the H.264 encoder the node uses: "software" (x264),
	// "nvenc" or "qsv".
	Encoder string `json:"encoder"`
	// Decode says where video is decoded and scaled: "cpu", or "cuda"
	// (NVDEC and scale_cuda on the node's NVIDIA GPUs).
	Decode string `json:"decode"`
	// GPUs are the NVIDIA GPUs the probe found (none without a driver).
	GPUs []GPU `json:"gpus"`
	// Ladders is how many live ladders the node runs at once.
	Ladders int `json:"ladders"`
	// LaddersFrom says where Ladders comes from: "measured" (the
	// self-benchmark), "configured" (transcode.max_ladders) or "default"
	// (before the self-benchmark finished, or when it could not run).
	LaddersFrom string `json:"ladders_from"`
	// RealtimeX is how many times faster than real time the node encoded
	// one ladder in its self-benchmark (0 before it ran).
	RealtimeX float64 `json:"realtime_x,omitempty"`
	// Summary is the probe's one-line verdict, as the node logged it.
	Summary string `json:"summary"`
}

// GPU is one NVIDIA GPU as the probe found it: what it decodes (NVDEC),
// whether it encodes (NVENC) and how many encode sessions it opened at once.
type GPU struct {
	Index int    `json:"index"`
	Name  string `json:"name"`
	// NVDEC lists the codecs a probe decoded on the GPU ("h264", "hevc").
	NVDEC []string `json:"nvdec"`
	NVENC bool     `json:"nvenc"`
	// NVENCSessions is how many H.264 encode sessions the probe could
	// hold open at once (consumer cards cap them); 0 without NVENC.
	NVENCSessions int `json:"nvenc_sessions"`
	// Problem says what did not work, when something did not.
	Problem string `json:"problem,omitempty"`
}

// Bounds of a Transcoding a node sends about itself.
const (
	maxGPUs        = 64
	maxSummary     = 1000
	maxGPUName     = 200
	maxLadders     = 1000
	maxRealtimeX   = 100_000
	maxNVDECCodecs = 16
)

// Check refuses a Transcoding that no node could truthfully send: an
// unknown encoder or decode, absurd figures, overlong text. What a node
// says about itself is an input: refused when absurd, never clamped.
func (t Transcoding) Check() error {
	switch {
	case t.Encoder != "software" && t.Encoder != "nvenc" && t.Encoder != "qsv":
		return fmt.Errorf(`transcode: "encoder" must be software, nvenc or qsv, got %q`, clip(t.Encoder))
	case t.Decode != "cpu" && t.Decode != "cuda":
		return fmt.Errorf(`transcode: "decode" must be cpu or cuda, got %q`, clip(t.Decode))
	case t.Ladders < 0 || t.Ladders > maxLadders:
		return fmt.Errorf(`transcode: "ladders" must be between 0 and %d`, maxLadders)
	case t.LaddersFrom != "measured" && t.LaddersFrom != "configured" && t.LaddersFrom != "default":
		return fmt.Errorf(`transcode: "ladders_from" must be measured, configured or default, got %q`, clip(t.LaddersFrom))
	case math.IsNaN(t.RealtimeX) || t.RealtimeX < 0 || t.RealtimeX > maxRealtimeX:
		return fmt.Errorf(`transcode: "realtime_x" must be between 0 and %d`, maxRealtimeX)
	case len(t.Summary) > maxSummary || !utf8.ValidString(t.Summary):
		return fmt.Errorf(`transcode: "summary" must be UTF-8 text of at most %d bytes`, maxSummary)
	case len(t.GPUs) > maxGPUs:
		return fmt.Errorf(`transcode: "gpus" may list at most %d GPUs`, maxGPUs)
	}
	for i, g := range t.GPUs {
		switch {
		case g.Index < 0 || g.Index >= maxGPUs:
			return fmt.Errorf(`transcode: gpus[%d]: "index" must be between 0 and %d`, i, maxGPUs-1)
		case len(g.Name) > maxGPUName || !utf8.ValidString(g.Name) || len(g.Problem) > maxSummary || !utf8.ValidString(g.Problem):
			return fmt.Errorf(`transcode: gpus[%d]: "name" and "problem" must be short UTF-8 text`, i)
		case len(g.NVDEC) > maxNVDECCodecs:
			return fmt.Errorf(`transcode: gpus[%d]: "nvdec" may list at most %d codecs`, i, maxNVDECCodecs)
		case g.NVENCSessions < 0 || g.NVENCSessions > maxLadders:
			return fmt.Errorf(`transcode: gpus[%d]: "nvenc_sessions" must be between 0 and %d`, i, maxLadders)
		}
		for _, c := range g.NVDEC {
			if len(c) == 0 || len(c) > 16 || strings.Trim(c, "abcdefghijklmnopqrstuvwxyz0123456789") != "" {
				return fmt.Errorf(`transcode: gpus[%d]: "nvdec" lists codec names such as "h264"`, i)
			}
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 40 {
		s = s[:40]
	}
	return strings.ToValidUTF8(s, "?")
}
