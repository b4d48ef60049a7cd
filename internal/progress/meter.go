package progress

import (
	"sync"
	"time"
)

// rateWindow is how far back a meter looks for its rate: long enough to
// smooth the bursts of several streams, short enough to follow a change.
const rateWindow = 10 * time.Second

// sampleEvery spaces a meter's samples, so that a window holds a few
// dozen of them however small the reads are.
const sampleEvery = rateWindow / 20

// sample is how many bytes a meter had counted at a time.
type sample struct {
	at    time.Time
	bytes int64
}

// meter measures the rate of bytes counted from any number of concurrent
// streams: all bytes counted within the last rateWindow (or since the
// start, when that is shorter) over the time they took. Unlike a rate per
// read, it is the rate of the whole, whatever the streams.
type meter struct {
	mu      sync.Mutex
	done    int64
	samples []sample // oldest first; the first is the start, with 0 bytes
}

func newMeter(start time.Time) *meter {
	return &meter{samples: []sample{{at: start}}}
}

// add counts n bytes done at now.
func (m *meter) add(n int64, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.done += n
	if now.Sub(m.samples[len(m.samples)-1].at) >= sampleEvery {
		m.samples = append(m.samples, sample{at: now, bytes: m.done})
	}
}

// rate is the bytes per second counted over the window ending at now.
func (m *meter) rate(now time.Time) float64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	// base is the newest sample at least a window old, else the start.
	base := 0
	for i, s := range m.samples {
		if now.Sub(s.at) < rateWindow {
			break
		}
		base = i
	}
	m.samples = m.samples[base:] // older ones are never the base again
	from := m.samples[0]
	elapsed := now.Sub(from.at).Seconds()
	if elapsed <= 0 {
		return 0
	}
	return float64(m.done-from.bytes) / elapsed
}

// formatRate formats a rate and, when the rate and the bytes left allow
// it, the time left at that rate: "1.0 MiB/s, ETA 3s".
func formatRate(rate float64, left int64) string {
	s := HumanBytes(int64(rate)) + "/s"
	if eta, ok := etaOf(rate, left); ok {
		s += ", ETA " + eta.String()
	}
	return s
}

// etaOf is the time left bytes take at rate, to the second; false when
// nothing is left or nothing moves.
func etaOf(rate float64, left int64) (time.Duration, bool) {
	if left <= 0 || rate <= 0 {
		return 0, false
	}
	return time.Duration(float64(left) / rate * float64(time.Second)).Round(time.Second), true
}
