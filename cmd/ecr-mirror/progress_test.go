package main

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
		mode progressMode
		want []string // in the output
		not  []string
	}{
		{mode: progressLines, want: []string{"export: team/app:v1: 3 blobs, 1.0 MiB in", "FAILED team/bad:v1: boom"}},
		{mode: progressQuiet, want: []string{"FAILED team/bad:v1: boom"}, not: []string{"team/app:v1"}},
		{mode: progressBars, want: []string{"team/app:v1", "total", "MiB"}},
	}
	for _, tt := range tests {
		var out testkit.SyncBuffer
		p := newProgress(context.Background(), &out, tt.mode, "export")
		ok := p.task("team/app:v1", 0)
		ok.AddTotal(1 << 20)
		if _, err := io.Copy(io.Discard, ok.Reader(bytes.NewReader(make([]byte, 1<<20)))); err != nil {
			t.Fatal(err)
		}
		ok.finish(nil, "3 blobs")
		bad := p.task("team/bad:v1", 10)
		bad.finish(errors.New("boom"), "")
		p.wait()
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

func TestParseAge(t *testing.T) {
	t.Parallel()
	for in, ok := range map[string]bool{"30d": true, "1.5d": true, "12h": true, "90m": true, "0d": false, "-3h": false, "soon": false, "d": false} {
		if _, err := parseAge(in); (err == nil) != ok {
			t.Errorf("parseAge(%q): %v", in, err)
		}
	}
}
