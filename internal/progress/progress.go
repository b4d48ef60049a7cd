// Package progress is how the image and cache commands report long work:
// bars with rate and ETA on a terminal, log lines elsewhere, or only
// failures when quiet. HumanBytes formats sizes for their output. A
// Counter is a task fed by a done-of-total callback.
//
// Rates (meter.go) are of all the bytes of a task, whatever number of
// streams read them, and of all tasks for the total, over the last 10 s,
// on a clock tests inject (WithClock). A failed task's bar is removed and
// a line "<task>: <reason>" printed in its place.
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

// barWidth is the width of a bar itself, between its counters and its
// rate; the line takes the terminal's width.
const barWidth = 40

// lineInterval is how often log-line mode reports a running total.
const lineInterval = 10 * time.Second

// Progress reports bytes done per task (an image, an archive) and in
// total: with mpb bars on a terminal, else with a log line as each task
// ends and a running total every lineInterval. A task's rate and ETA are
// those of all its bytes, whatever streams read them, and the total's
// those of all tasks' bytes (see meter).
type Progress struct {
	mode  Mode
	out   io.Writer
	what  string // the command, for log lines
	now   func() time.Time
	bars  *mpb.Progress
	total *mpb.Bar // nil unless bars
	meter *meter   // every task's bytes

	mu                    sync.Mutex
	start, lastLine       time.Time
	doneBytes, totalBytes int64
}

// Option changes how a Progress works.
type Option func(*options)

type options struct {
	now     func() time.Time
	refresh <-chan any
}

// WithClock makes now the clock of rates, ETAs and durations (default
// time.Now).
func WithClock(now func() time.Time) Option { return func(o *options) { o.now = now } }

// WithManualRefresh draws the bars each time ch yields, rather than every
// 150 ms.
func WithManualRefresh(ch <-chan any) Option { return func(o *options) { o.refresh = ch } }

// New starts reporting the work of the command what to out in mode; end
// it with Wait.
func New(ctx context.Context, out io.Writer, mode Mode, what string, opts ...Option) *Progress {
	o := options{now: time.Now}
	for _, opt := range opts {
		opt(&o)
	}
	p := &Progress{mode: mode, out: out, what: what, now: o.now, start: o.now()}
	p.lastLine, p.meter = p.start, newMeter(p.start)
	if mode == Bars {
		refresh := mpb.WithAutoRefresh() // Choose has checked for a terminal already
		if o.refresh != nil {
			refresh = mpb.WithManualRefresh(o.refresh)
		}
		p.bars = mpb.NewWithContext(ctx, mpb.WithOutput(out), refresh, mpb.WithRefreshRate(150*time.Millisecond))
		p.total = p.bars.AddBar(0, mpb.BarWidth(barWidth), mpb.BarPriority(1<<30), // always the last line
			mpb.PrependDecorators(decor.Name("total", decor.WCSyncSpaceR), decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace)),
			mpb.AppendDecorators(decor.Any(func(s decor.Statistics) string { return p.rateText(p.meter, s) }, decor.WCSyncSpace)))
	}
	return p
}

// rateText is a bar's rate and ETA: m's rate now, and the time the bar's
// bytes left take at it.
func (p *Progress) rateText(m *meter, s decor.Statistics) string {
	switch {
	case s.Completed:
		return "done"
	case s.Aborted:
		return ""
	}
	return formatRate(m.rate(p.now()), s.Total-s.Current)
}

// Task is one unit of work with a byte count.
type Task struct {
	p     *Progress
	name  string
	bar   *mpb.Bar
	start time.Time
	meter *meter
	mu    sync.Mutex
	done  int64
	total int64
}

// Task starts a task of total bytes (0 if not yet known).
func (p *Progress) Task(name string, total int64) *Task {
	start := p.now()
	t := &Task{p: p, name: name, start: start, total: total, meter: newMeter(start)}
	p.grow(total)
	if p.bars != nil {
		t.bar = p.bars.AddBar(total, mpb.BarWidth(barWidth),
			mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR), decor.OnAbort(decor.CountersKibiByte("% .1f / % .1f", decor.WCSyncSpace), "failed")),
			mpb.AppendDecorators(decor.Any(func(s decor.Statistics) string { return p.rateText(t.meter, s) }, decor.WCSyncSpace)))
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

// Add counts n bytes done, from any of the task's streams.
func (t *Task) Add(n int64) {
	now := t.p.now()
	t.mu.Lock()
	t.done += n
	t.mu.Unlock()
	t.meter.add(n, now)
	t.p.meter.add(n, now)
	if t.bar != nil {
		t.bar.IncrInt64(n)
		t.p.total.IncrInt64(n)
	}
	t.p.mu.Lock()
	t.p.doneBytes += n
	report := t.p.mode == Lines && now.Sub(t.p.lastLine) >= lineInterval
	if report {
		t.p.lastLine = now
	}
	done, total := t.p.doneBytes, t.p.totalBytes
	t.p.mu.Unlock()
	if report {
		t.p.logf("%s of %s, %s", HumanBytes(done), HumanBytes(total), formatRate(t.p.meter.rate(now), total-done))
	}
}

// Reader counts what r yields against the task.
func (t *Task) Reader(r io.Reader) io.Reader { return &taskReader{t: t, r: r} }

type taskReader struct {
	t *Task
	r io.Reader
}

func (tr *taskReader) Read(b []byte) (int, error) {
	n, err := tr.r.Read(b)
	if n > 0 {
		tr.t.Add(int64(n))
	}
	return n, err
}

// Finish ends the task. A failed task's bar is removed and a line
// "<name>: <reason>" printed in its place (in log lines, "FAILED <name>:
// <reason>"); a task that went well gets a line in log-line mode only
// (bars show it already).
func (t *Task) Finish(err error, detail string) {
	t.mu.Lock()
	done, total := t.done, t.total
	t.mu.Unlock()
	if done < total { // skipped bytes (already there) and failed ones count as done
		t.p.grow(done - total)
	}
	if t.bar != nil {
		if err != nil {
			t.bar.Abort(true)
			t.p.bars.Write([]byte(t.name + ": " + err.Error() + "\n"))
			return
		}
		t.bar.SetTotal(done, true)
	}
	d := t.p.now().Sub(t.start)
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
	line := fmt.Sprintf("%s %s: %s\n", p.now().Format(time.DateTime), p.what, fmt.Sprintf(format, args...))
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

// Counter is a task fed by a callback that reports done of total bytes
// so far, whose total is known only then ("cache verify" rehashing the
// cache): the task starts at the first report. Reports come from one
// goroutine at a time.
type Counter struct {
	p    *Progress
	name string
	t    *Task
	last int64
}

// Counter is a task by name that starts when Report is first called.
func (p *Progress) Counter(name string) *Counter { return &Counter{p: p, name: name} }

// Report counts done of total bytes.
func (c *Counter) Report(done, total int64) {
	if c.t == nil {
		c.t = c.p.Task(c.name, total)
	}
	c.t.Add(done - c.last)
	c.last = done
}

// Finish ends the task, if a report started it.
func (c *Counter) Finish(err error) {
	if c.t != nil {
		c.t.Finish(err, "")
	}
}
