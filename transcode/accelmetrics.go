package transcode

import (
	"strconv"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

var (
	accelInfoDesc = prometheus.NewDesc("shoal_transcode_accel_info",
		"Where this node transcodes: the encoder (software, nvenc, qsv) and where it decodes and scales (cpu, cuda); always 1.",
		[]string{"encoder", "decode"}, nil)
	gpuInfoDesc = prometheus.NewDesc("shoal_transcode_gpu_info",
		"An NVIDIA GPU the probe found at start, with the codecs NVDEC decoded and whether NVENC encoded; always 1.",
		[]string{"gpu", "name", "nvdec", "nvenc"}, nil)
	gpuSessionsDesc = prometheus.NewDesc("shoal_transcode_gpu_nvenc_sessions",
		"NVENC sessions the probe could hold open at once on the GPU (0: no NVENC).", []string{"gpu"}, nil)
	gpuSessionsUsedDesc = prometheus.NewDesc("shoal_transcode_gpu_nvenc_sessions_in_use",
		"NVENC sessions the ladders on the GPU hold now.", []string{"gpu"}, nil)
	gpuLaddersDesc = prometheus.NewDesc("shoal_transcode_gpu_ladders",
		"Ladders running on the GPU now.", []string{"gpu"}, nil)
	gpuHealthyDesc = prometheus.NewDesc("shoal_transcode_gpu_healthy",
		"1 while the GPU takes new ladders; 0 once 3 ladders in a row failed on it (they moved to the CPU).", []string{"gpu"}, nil)
	gpuMemoryDesc = prometheus.NewDesc("shoal_transcode_gpu_memory_used_bytes",
		"Memory in use on the GPU, all processes (NVML).", []string{"gpu"}, nil)
)

// accelCollector exports what the hardware probe found and how much of the
// GPUs is in use.
type accelCollector struct{ a Accel }

// NewAccelCollector returns the metrics of a: what the probe found and the
// GPUs' use, read at each scrape.
func NewAccelCollector(a Accel) prometheus.Collector { return accelCollector{a} }

func (c accelCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{accelInfoDesc, gpuInfoDesc, gpuSessionsDesc, gpuSessionsUsedDesc, gpuLaddersDesc, gpuHealthyDesc, gpuMemoryDesc} {
		ch <- d
	}
}

func (c accelCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(accelInfoDesc, prometheus.GaugeValue, 1, c.a.Backend, c.a.Decode())
	for _, g := range c.a.Found {
		idx := strconv.Itoa(g.Index)
		nvenc := "no"
		if g.NVENC {
			nvenc = "yes"
		}
		ch <- prometheus.MustNewConstMetric(gpuInfoDesc, prometheus.GaugeValue, 1, idx, g.Name, strings.Join(g.NVDEC, ","), nvenc)
		ch <- prometheus.MustNewConstMetric(gpuSessionsDesc, prometheus.GaugeValue, float64(g.NVENCSessions), idx)
		sessions, ladders := g.InUse()
		ch <- prometheus.MustNewConstMetric(gpuSessionsUsedDesc, prometheus.GaugeValue, float64(sessions), idx)
		ch <- prometheus.MustNewConstMetric(gpuLaddersDesc, prometheus.GaugeValue, float64(ladders), idx)
		healthy := 0.0
		if g.Healthy() {
			healthy = 1
		}
		ch <- prometheus.MustNewConstMetric(gpuHealthyDesc, prometheus.GaugeValue, healthy, idx)
		if used := g.MemoryUsed(); used >= 0 {
			ch <- prometheus.MustNewConstMetric(gpuMemoryDesc, prometheus.GaugeValue, float64(used), idx)
		}
	}
}
