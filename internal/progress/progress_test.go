package progress

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

func TestProgress(t *testing.T) {
	t.Parallel()
	tests := []struct {
		mode Mode
		want []string // in the output
		not  []string
	}{
		{mode: Lines, want: []string{"export: team/app:v1: 3 blobs, 1.0 MiB in", "FAILED team/bad:v1: boom"}},
		{mode: Quiet, want: []string{"FAILED team/bad:v1: boom"}, not: []string{"team/app:v1"}},
		{mode: Bars, want: []string{"team/app:v1", "total", "MiB"}},
	}
	for _, tt := range tests {
		var out testkit.SyncBuffer
		p := New(context.Background(), &out, tt.mode, "export")
		ok := p.Task("team/app:v1", 0)
		ok.AddTotal(1 << 20)
		if _, err := io.Copy(io.Discard, ok.Reader(bytes.NewReader(make([]byte, 1<<20)))); err != nil {
			t.Fatal(err)
		}
		ok.Finish(nil, "3 blobs")
		bad := p.Task("team/bad:v1", 10)
		bad.Finish(errors.New("boom"), "")
		p.Wait()
		got := out.String()
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("mode %d: output lacks %q:\n%s", tt.mode, w, got)
			}
		}
		for _, n := range tt.not {
			if strings.Contains(got, n) {
				t.Errorf("mode %d: output has %q:\n%s", tt.mode, n, got)
			}
		}
	}
}

func TestChooseIsQuietWhenAskedAndLinesOffATerminal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		quiet bool
		want  Mode
	}{
		{name: "quiet", quiet: true, want: Quiet},
		{name: "buffer", quiet: false, want: Lines},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := Choose(&bytes.Buffer{}, tt.quiet); got != tt.want {
				t.Errorf("Choose(buffer, %v) = %d, want %d", tt.quiet, got, tt.want)
			}
		})
	}
}

func TestSkippedBytesCountAsDone(t *testing.T) {
	t.Parallel()
	var out testkit.SyncBuffer
	p := New(context.Background(), &out, Lines, "warm")
	tk := p.Task("team/app:v1", 100)
	tk.Add(40)
	tk.Finish(nil, "")
	p.Wait()
	if p.doneBytes != 40 || p.totalBytes != 40 {
		t.Errorf("done %d of %d, want 40 of 40", p.doneBytes, p.totalBytes)
	}
}

func TestHumanBytes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{1 << 20, "1.0 MiB"},
		{5 << 30, "5.0 GiB"},
		{1 << 40, "1.0 TiB"},
	}
	for _, tt := range tests {
		if got := HumanBytes(tt.n); got != tt.want {
			t.Errorf("HumanBytes(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestFormatRate(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		rate float64
		left int64
		want string
	}{
		{name: "half way", rate: 1 << 20, left: 1 << 20, want: "1.0 MiB/s, ETA 1s"},
		{name: "done", rate: 512 << 10, left: 0, want: "512.0 KiB/s"},
		{name: "total unknown", rate: 1 << 20, left: -1 << 20, want: "1.0 MiB/s"},
		{name: "nothing yet", rate: 0, left: 1 << 20, want: "0 B/s"},
		{name: "rounded to the second", rate: 1 << 20, left: 5<<20 + 1<<19, want: "1.0 MiB/s, ETA 6s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := formatRate(tt.rate, tt.left); got != tt.want {
				t.Errorf("formatRate(%v, %d) = %q, want %q", tt.rate, tt.left, got, tt.want)
			}
		})
	}
}

// A Counter's task starts at the first report, with its total, and
// counts what each report adds; one never reported shows nothing.
func TestCounterStartsAtTheFirstReport(t *testing.T) {
	t.Parallel()
	var out testkit.SyncBuffer
	p := New(context.Background(), &out, Lines, "cache verify")
	idle := p.Counter("idle")
	idle.Finish(nil)
	c := p.Counter("rehashing the cache")
	for _, done := range []int64{0, 1 << 20, 3 << 20} {
		c.Report(done, 3<<20)
	}
	c.Finish(nil)
	p.Wait()
	if got := out.String(); !strings.Contains(got, "rehashing the cache: 3.0 MiB in") || strings.Contains(got, "idle") {
		t.Fatalf("output:\n%s\nwant the task's 3.0 MiB and nothing of the idle one", got)
	}
}
