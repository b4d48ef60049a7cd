// Package progress is how the image and cache commands report long work:
// bars with rate and ETA on a terminal, log lines elsewhere, or only
// failures when quiet. HumanBytes formats sizes for their output.
package progress

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"
	"golang.org/x/term"
)

// Mode is how work reports itself.
type Mode int

const (
	Lines Mode = iota // plain log lines: not a terminal
	Bars              // bars, on a terminal
	Quiet             // only failures and the summary
)

// Choose picks bars on a terminal and log lines elsewhere, and
// nothing with --quiet or --json (whose stdout is for a script).
func Choose(w io.Writer, quiet bool) Mode {
	if quiet {
		return Quiet
	}
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		return Bars
	}
	return Lines
}

// lineInterval is how often log-line mode reports a running total.
const lineInterval = 10 * time.Second

// Progress reports bytes done per task (an image, an archive) and in
// total: with mpb bars (bytes, rate, ETA) on a terminal, else with a log
// line as each task ends and a running total every lineInterval.
type Progress struct {
	mode  Mode
	out   io.Writer
	what  string // the command, for log lines
	bars  *mpb.Progress
	total *mpb.Bar // nil unless bars

	mu                    sync.Mutex
	start, lastLine       time.Time
	doneBytes, totalBytes int64
}

// New starts reporting the work of the command what to out in mode; end
// it with Wait.
func New(ctx context.Context, out io.Writer, mode Mode, what string) *Progress {
	p := &Progress{mode: mode, out: out, what: what, start: time.Now()}
	p.lastLine = p.start
	if mode == Bars {
		// Choose has checked for a terminal already.
		p.bars = mpb.NewWithContext(ctx, mpb.WithOutput(out), mpb.WithAutoRefresh(), mpb.WithWidth(40), mpb.WithRefreshRate(150*time.Millisecond))
		p.total = p.bars.AddBar(0, mpb.BarPriority(1<<30), // always the last line
			mpb.PrependDecorators(decor.Name("total", decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace)),
			mpb.AppendDecorators(decor.AverageSpeed(decor.SizeB1024(0), "% .1f", decor.WCSyncSpace), decor.Name(" ETA "), decor.AverageETA(decor.ET_STYLE_GO)))
	}
	return p
}

// Task is one unit of work with a byte count.
type Task struct {
	p     *Progress
	name  string
	bar   *mpb.Bar
	start time.Time
	mu    sync.Mutex
	done  int64
	total int64
}

// Task starts a task of total bytes (0 if not yet known).
func (p *Progress) Task(name string, total int64) *Task {
	t := &Task{p: p, name: name, start: time.Now(), total: total}
	p.grow(total)
	if p.bars != nil {
		t.bar = p.bars.AddBar(total,
			mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace)),
			mpb.AppendDecorators(decor.OnComplete(decor.EwmaSpeed(decor.SizeB1024(0), "% .1f", 30, decor.WCSyncSpace), "done"),
				decor.OnComplete(decor.Name(" ETA "), ""), decor.OnComplete(decor.EwmaETA(decor.ET_STYLE_GO, 30), "")))
	}
	return t
}

// grow adds n bytes to the whole.
func (p *Progress) grow(n int64) {
	if n == 0 {
		return
	}
	p.mu.Lock()
	p.totalBytes += n
	total := p.totalBytes
	p.mu.Unlock()
	if p.total != nil {
		p.total.SetTotal(total, false)
	}
}

// AddTotal grows the task's total, as its size becomes known.
func (t *Task) AddTotal(n int64) {
	t.mu.Lock()
	t.total += n
	total := t.total
	t.mu.Unlock()
	t.p.grow(n)
	if t.bar != nil {
		t.bar.SetTotal(total, false)
	}
}

// Add counts n bytes done.
func (t *Task) Add(n int64, took time.Duration) {
	t.mu.Lock()
	t.done += n
	t.mu.Unlock()
	if t.bar != nil {
		t.bar.EwmaIncrInt64(n, took)
		t.p.total.IncrInt64(n)
	}
	t.p.mu.Lock()
	t.p.doneBytes += n
	report := t.p.mode == Lines && time.Since(t.p.lastLine) >= lineInterval
	if report {
		t.p.lastLine = time.Now()
	}
	done, total, start := t.p.doneBytes, t.p.totalBytes, t.p.start
	t.p.mu.Unlock()
	if report {
		t.p.logf("%s of %s, %s", HumanBytes(done), HumanBytes(total), rateETA(done, total, time.Since(start)))
	}
}

// Reader counts what r yields against the task.
func (t *Task) Reader(r io.Reader) io.Reader { return &taskReader{t: t, r: r, last: time.Now()} }

type taskReader struct {
	t    *Task
	r    io.Reader
	last time.Time
}

func (tr *taskReader) Read(b []byte) (int, error) {
	n, err := tr.r.Read(b)
	if n > 0 {
		now := time.Now()
		tr.t.Add(int64(n), now.Sub(tr.last))
		tr.last = now
	}
	return n, err
}

// Finish ends the task; a line says how it went unless the mode is quiet
// and it went well (bars show it already).
func (t *Task) Finish(err error, detail string) {
	t.mu.Lock()
	done, total := t.done, t.total
	t.mu.Unlock()
	if t.bar != nil {
		if err != nil {
			t.bar.Abort(false)
		} else {
			t.bar.SetTotal(done, true)
		}
	}
	if done < total { // skipped bytes (already there) still count as done
		t.p.grow(done - total)
	}
	d := time.Since(t.start)
	switch {
	case err != nil:
		t.p.logf("FAILED %s: %v", t.name, err)
	case t.p.mode == Lines:
		if detail != "" {
			detail += ", "
		}
		t.p.logf("%s: %s%s in %s (%s/s)", t.name, detail, HumanBytes(done), d.Round(time.Millisecond), HumanBytes(int64(float64(done)/max(d.Seconds(), 1e-3))))
	}
}

// logf prints a line above the bars, or a log line.
func (p *Progress) logf(format string, args ...any) {
	line := fmt.Sprintf("%s %s: %s\n", time.Now().Format(time.DateTime), p.what, fmt.Sprintf(format, args...))
	if p.bars != nil {
		p.bars.Write([]byte(line))
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	io.WriteString(p.out, line)
}

// Wait ends the bars; call it before printing the summary.
func (p *Progress) Wait() {
	if p.bars != nil {
		p.total.SetTotal(-1, true)
		p.bars.Wait()
	}
}

// rateETA formats the average rate and, when the total is known, the
// time left at that rate.
func rateETA(done, total int64, elapsed time.Duration) string {
	rate := float64(done) / max(elapsed.Seconds(), 1e-3)
	s := HumanBytes(int64(rate)) + "/s"
	if total > done && rate > 0 {
		s += ", ETA " + time.Duration(float64(total-done)/rate*float64(time.Second)).Round(time.Second).String()
	}
	return s
}

// HumanBytes formats n in binary units.
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
