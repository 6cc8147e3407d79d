package verify

import (
	"math"
	"math/cmplx"
)

// AudioMatch is how a window of coded audio compares with the source's
// sound, both decoded to stereo PCM at one rate (CompareAudio).
type AudioMatch struct {
	// Correlation is the normalized cross-correlation of the two
	// windows, both channels together, at the best lag: 1 for the same
	// sound at any level, about 0 for unrelated sounds, negative for an
	// inverted one.
	Correlation float64
	// FullCorrelation is the same over the whole band (the best lag is
	// found with it).
	FullCorrelation float64
	// Lag is how many samples the coded audio is late against the
	// source's at the best lag (negative: early).
	Lag int
	// SourceLevel and Level are the source's and the coded audio's RMS
	// over the window (both channels, at the best lag), in dBFS; -200 for
	// digital silence.
	SourceLevel, Level float64
}

// SNR is the signal-to-noise ratio that Correlation amounts to (dB): the
// source's energy over that of what remains of it once the coded audio,
// at the best gain, is taken away.
func (m AudioMatch) SNR() float64 {
	c := max(m.Correlation, 0)
	if c >= 1 {
		return 200
	}
	return -10 * math.Log10(1-c*c)
}

// CompareAudio compares source, a window of the source's sound (left and
// right channels of the same length), with coded, the coded audio's sound
// around it at the same rate: sample offset of coded is where the window
// starts when the coded audio keeps time exactly. Every lag from -maxLag
// to maxLag samples is tried (coded beyond its ends is silence), and the
// one that correlates best is kept.
func CompareAudio(source, coded [2][]float32, offset, maxLag int, band float64) AudioMatch {
	n := len(source[0])
	maxLag = max(maxLag, 0)
	m := AudioMatch{SourceLevel: -200, Level: -200}
	if n == 0 || len(source[1]) != n {
		return m
	}
	// The coded audio from offset-maxLag for n + 2*maxLag samples.
	span := n + 2*maxLag
	at := func(ch, j int) float64 {
		k := offset - maxLag + j
		if k < 0 || k >= len(coded[ch]) || k >= len(coded[1-ch]) {
			return 0
		}
		return float64(coded[ch][k])
	}
	size := 1
	for size < span {
		size <<= 1
	}
	// Both channels in one complex FFT each: the real part of
	// conj(left + i right) x (left' + i right') is left left' + right
	// right', the two channels' correlations summed.
	x := make([]complex128, size)
	y := make([]complex128, size)
	var ex float64
	for i := range n {
		l, r := float64(source[0][i]), float64(source[1][i])
		x[i] = complex(l, r)
		ex += l*l + r*r
	}
	energy := make([]float64, span+1) // prefix sums of the coded audio's energy
	for j := range span {
		l, r := at(0, j), at(1, j)
		y[j] = complex(l, r)
		energy[j+1] = energy[j] + l*l + r*r
	}
	fft(x, false)
	fft(y, false)
	for i := range x {
		x[i] = cmplx.Conj(x[i]) * y[i]
	}
	fft(x, true)
	best, bestLag, bestEnergy := math.Inf(-1), 0, 0.0
	for k := 0; k <= 2*maxLag; k++ {
		ey := energy[k+n] - energy[k]
		if ex <= 0 || ey <= 0 {
			continue
		}
		c := real(x[k]) / float64(size) / math.Sqrt(ex*ey)
		// The lag nearest to none wins a tie (a silent stretch, a
		// periodic sound).
		if lag := k - maxLag; c > best+1e-9 || c >= best-1e-9 && abs(int64(lag)) < abs(int64(bestLag)) {
			best, bestLag, bestEnergy = c, lag, ey
		}
	}
	m.SourceLevel = dbfs(ex, 2*n)
	if math.IsInf(best, -1) {
		// One of them silent: no correlation.
		m.Level = dbfs(energy[maxLag+n]-energy[maxLag], 2*n)
		return m
	}
	m.Lag = bestLag
	m.Level = dbfs(bestEnergy, 2*n)
	m.FullCorrelation = min(max(best, -1), 1)
	m.Correlation = min(max(bandCorrelation(source, coded, offset+bestLag, band), -1), 1)
	return m
}

// bandCorrelation is the normalized correlation of source with coded from
// offset on (the same length), both channels together, in the band below
// band (a share of the rate: 0.5 is all of it): the cosine of the angle
// between their projections on that band (zero-padded to a power of two,
// a brick-wall mask on their spectra).
func bandCorrelation(source, coded [2][]float32, offset int, band float64) float64 {
	n := len(source[0])
	size := 1
	for size < n {
		size <<= 1
	}
	x := make([]complex128, size)
	y := make([]complex128, size)
	for i := range n {
		x[i] = complex(float64(source[0][i]), float64(source[1][i]))
		if k := offset + i; k >= 0 && k < len(coded[0]) && k < len(coded[1]) {
			y[i] = complex(float64(coded[0][k]), float64(coded[1][k]))
		}
	}
	fft(x, false)
	fft(y, false)
	// Bin f and bin size-f are the same frequency: with both channels
	// packed in one complex signal, a channel's spectrum at f is
	// (Z[f] + conj(Z[size-f])) / 2 and the other's (Z[f] - conj(Z[size-f])) / 2i,
	// and summing over f and size-f the cross terms cancel: the masked
	// sums of conj(X)Y, |X|^2 and |Y|^2 over both bins are the two
	// channels' summed.
	cut := int(band * float64(size))
	var xy, xx, yy float64
	for f := range size {
		if min(f, size-f) > cut {
			continue
		}
		xy += real(x[f])*real(y[f]) + imag(x[f])*imag(y[f])
		xx += real(x[f])*real(x[f]) + imag(x[f])*imag(x[f])
		yy += real(y[f])*real(y[f]) + imag(y[f])*imag(y[f])
	}
	if xx <= 0 || yy <= 0 {
		return 0
	}
	return xy / math.Sqrt(xx*yy)
}

// dbfs is the RMS level of samples whose squares sum to energy, in dB
// of full scale (-200 for none).
func dbfs(energy float64, samples int) float64 {
	if energy <= 0 || samples <= 0 {
		return -200
	}
	return max(10*math.Log10(energy/float64(samples)), -200)
}

// fft transforms x in place (its length a power of two): the discrete
// Fourier transform, or with inverse the inverse one, unscaled.
func fft(x []complex128, inverse bool) {
	n := len(x)
	if n <= 1 {
		return
	}
	for i, j := 1, 0; i < n; i++ {
		bit := n >> 1
		for ; j&bit != 0; bit >>= 1 {
			j ^= bit
		}
		j ^= bit
		if i < j {
			x[i], x[j] = x[j], x[i]
		}
	}
	sign := -1.0
	if inverse {
		sign = 1
	}
	tw := make([]complex128, n/2)
	for k := range tw {
		s, c := math.Sincos(sign * 2 * math.Pi * float64(k) / float64(n))
		tw[k] = complex(c, s)
	}
	for size := 2; size <= n; size <<= 1 {
		half, step := size/2, n/size
		for start := 0; start < n; start += size {
			for k := range half {
				u, v := x[start+k], x[start+k+half]*tw[k*step]
				x[start+k], x[start+k+half] = u+v, u-v
			}
		}
	}
}
