package progress

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// phase is a stretch of time in which streams each count chunk bytes
// every tick.
type phase struct {
	ticks   int
	streams int
	chunk   int64
}

// A meter's rate is that of all its streams together, over the last
// rateWindow: the streams' bytes add up, and an old burst leaves the
// window.
func TestMeterRateIsOfAllStreamsOverTheWindow(t *testing.T) {
	t.Parallel()
	const tick = 100 * time.Millisecond
	tests := []struct {
		name   string
		phases []phase
		want   float64 // bytes per second
	}{
		{name: "one stream", phases: []phase{{ticks: 20, streams: 1, chunk: 64 << 10}}, want: 640 << 10},
		{name: "four streams add up", phases: []phase{{ticks: 20, streams: 4, chunk: 64 << 10}}, want: 2560 << 10},
		{name: "a burst leaves the window", phases: []phase{{ticks: 20, streams: 4, chunk: 64 << 10}, {ticks: 120, streams: 1, chunk: 64 << 10}}, want: 640 << 10},
		{name: "a stall decays the rate", phases: []phase{{ticks: 50, streams: 2, chunk: 10 << 10}, {ticks: 50, streams: 0}}, want: 500 << 10 * 2 / 10},
		{name: "nothing counted", phases: []phase{{ticks: 10}}, want: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			clk := clockwork.NewFakeClockAt(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC))
			m := newMeter(clk.Now())
			for _, ph := range tt.phases {
				for range ph.ticks {
					clk.Advance(tick)
					for range ph.streams {
						m.add(ph.chunk, clk.Now())
					}
				}
			}
			if got := m.rate(clk.Now()); math.Abs(got-tt.want) > 1 {
				t.Errorf("rate %.1f B/s, want %.1f", got, tt.want)
			}
		})
	}
}

// lastFrame is the last n lines of out: the bars' last drawing, when n
// bars are left (off a terminal mpb draws each frame below the last).
func lastFrame(out string, n int) []string {
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	return lines[max(len(lines)-n, 0):]
}

// An image read by four streams at once shows their summed rate, and the
// ETA at that rate, on its bar and on the total: not the rate of one
// stream (which the bars once showed, 17.4 MiB/s for a 59.6 MiB/s image).
func TestImageBarShowsTheRateOfAllItsStreams(t *testing.T) {
	t.Parallel()
	clk := clockwork.NewFakeClockAt(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC))
	refresh := make(chan any)
	var out testkit.SyncBuffer
	p := New(context.Background(), &out, Bars, "warm", WithClock(clk.Now), WithManualRefresh(refresh))
	task := p.Task("team/app:v1", 0)
	task.AddTotal(10 << 20)
	var streams [4]chan []byte
	var wg sync.WaitGroup
	for i := range streams {
		streams[i] = make(chan []byte)
		r := task.Reader(&chanReader{ch: streams[i]})
		wg.Go(func() {
			buf := make([]byte, 128<<10)
			for {
				if _, err := r.Read(buf); err != nil {
					return
				}
			}
		})
	}
	chunk := make([]byte, 64<<10)
	for range 20 { // 2 s at 4 × 64 KiB per 100 ms: 5 MiB at 2.5 MiB/s
		clk.Advance(100 * time.Millisecond)
		for _, s := range streams {
			s <- chunk
		}
	}
	for _, s := range streams {
		close(s)
	}
	wg.Wait()
	want := "2.5 MiB/s, ETA 2s"
	testwait.Until(t, "a frame with the image's rate on both bars", func() bool {
		select {
		case refresh <- struct{}{}:
		default:
		}
		frame := lastFrame(out.String(), 2)
		return len(frame) == 2 && strings.Contains(frame[0], "team/app:v1") && strings.Contains(frame[0], want) &&
			strings.Contains(frame[1], "total") && strings.Contains(frame[1], want)
	})
	task.Finish(nil, "")
	p.Wait()
}

// chanReader yields the chunks sent on ch, and EOF once it is closed.
type chanReader struct{ ch chan []byte }

func (r *chanReader) Read(b []byte) (int, error) {
	chunk, ok := <-r.ch
	if !ok {
		return 0, io.EOF
	}
	return copy(b, chunk), nil
}

// A failed image's bar is removed, and one line names the image and why
// it failed; the images that went on keep their bars.
func TestFailedBarIsReplacedByALine(t *testing.T) {
	t.Parallel()
	clk := clockwork.NewFakeClockAt(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC))
	refresh := make(chan any)
	var out testkit.SyncBuffer
	p := New(context.Background(), &out, Bars, "warm", WithClock(clk.Now), WithManualRefresh(refresh))
	good := p.Task("team/app:v1", 100)
	bad := p.Task("team/bad:v1", 0)
	bad.Finish(errors.New("manifest v1: MANIFEST_UNKNOWN: manifest unknown"), "")
	good.Add(50)
	testwait.Until(t, "a frame without the failed bar", func() bool {
		select {
		case refresh <- struct{}{}:
		default:
		}
		frame := lastFrame(out.String(), 2)
		return len(frame) == 2 && strings.Contains(frame[0], "team/app:v1") && strings.Contains(frame[1], "total")
	})
	good.Finish(nil, "")
	p.Wait()
	// The bar is drawn once more as it is dropped, saying "failed" in
	// place of its counters, then never again; one line says why.
	want := "team/bad:v1: manifest v1: MANIFEST_UNKNOWN: manifest unknown"
	reasons := 0
	for _, l := range strings.Split(out.String(), "\n") {
		switch {
		case l == want:
			reasons++
		case strings.Contains(l, "team/bad:v1") && (strings.Contains(l, " / ") || !strings.Contains(l, " failed ")):
			t.Errorf("a line shows the failed image's bar: %q", l)
		}
	}
	if reasons != 1 {
		t.Errorf("%d lines %q, want 1; output:\n%q", reasons, want, out.String())
	}
}
