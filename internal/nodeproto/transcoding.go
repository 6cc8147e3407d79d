package nodeproto

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
