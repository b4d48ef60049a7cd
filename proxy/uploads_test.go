package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"
)

// The session table: one request per session at a time (a second one
// ends the copy), a cap on sessions and staged bytes, idle expiry, and
// staging files that never show in their directory.
func TestUploadTable(t *testing.T) {
	t.Parallel()
	newTable := func(t *testing.T) *uploadTable {
		return &uploadTable{log: slog.New(slog.DiscardHandler), dir: t.TempDir(), idle: time.Hour, max: 2, limit: 10,
			sessions: make(map[string]*upload)}
	}
	t.Run("clash", func(t *testing.T) {
		t.Parallel()
		tb := newTable(t)
		tb.start("a/blobs/uploads/1")
		u := tb.acquire("a/blobs/uploads/1")
		if u == nil {
			t.Fatal("no session")
		}
		if tb.acquire("a/blobs/uploads/1") != nil {
			t.Fatal("a second request got the session while the first held it")
		}
		tb.release(u)
		if tb.acquire("a/blobs/uploads/1") != nil {
			t.Fatal("the session survived a clash")
		}
	})
	t.Run("cap and budget", func(t *testing.T) {
		t.Parallel()
		tb := newTable(t)
		for _, k := range []string{"1", "2", "3"} {
			tb.start(k)
		}
		if tb.acquire("3") != nil {
			t.Fatal("a session past the cap was tracked")
		}
		u := tb.acquire("1")
		if err := u.stage([]byte("12345")); err != nil {
			t.Fatal(err)
		}
		if files := listDir(t, tb.dir); len(files) != 0 {
			t.Fatalf("staging files visible: %v", files)
		}
		u2 := tb.acquire("2")
		if err := u2.stage([]byte("123456")); !errors.Is(err, errStagingFull) {
			t.Fatalf("staging past the budget: %v", err)
		}
		tb.drop(u)
		tb.release(u)
		if err := u2.stage([]byte("123456")); err != nil {
			t.Fatalf("staging after a drop freed the budget: %v", err)
		}
		tb.release(u2)
		if got := tb.staged.Load(); got != 6 {
			t.Fatalf("staged = %d, want 6", got)
		}
	})
	t.Run("idle", func(t *testing.T) {
		t.Parallel()
		tb := newTable(t)
		tb.idle = 10 * time.Millisecond
		tb.start("1")
		deadline := time.Now().Add(10 * time.Second)
		for {
			u := tb.acquire("1")
			if u == nil {
				break
			}
			tb.release(u)
			if time.Now().After(deadline) {
				t.Fatal("an idle session was never dropped")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// The tee copies what upstream reads and reports the copy complete only
// when every byte up to EOF went to its target; a copy failure, a stop or
// a body read short ends the copy without failing the reads.
func TestTee(t *testing.T) {
	t.Parallel()
	errDisk := errors.New("disk full")
	tests := []struct {
		name         string
		body         string
		copy         bool // copy at all (copyTo != nil)
		failAfter    int  // copyTo calls that succeed before one fails; 0: never fails
		stopAt       int  // bytes read before stop; -1: never stopped
		readTo       int  // bytes upstream reads; -1: to EOF
		wantCopied   int64
		wantComplete bool
	}{
		{name: "whole body", body: "abcdefgh", copy: true, stopAt: -1, readTo: -1, wantCopied: 8, wantComplete: true},
		{name: "empty body", body: "", copy: true, stopAt: -1, readTo: -1, wantCopied: 0, wantComplete: true},
		{name: "not copying", body: "abcdefgh", copy: false, stopAt: -1, readTo: -1, wantCopied: 0},
		{name: "copy fails", body: "abcdefgh", copy: true, failAfter: 1, stopAt: -1, readTo: -1, wantCopied: 3},
		{name: "stopped", body: "abcdefgh", copy: true, stopAt: 3, readTo: -1, wantCopied: 3},
		{name: "read short", body: "abcdefgh", copy: true, stopAt: -1, readTo: 6, wantCopied: 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var got []byte
			calls := 0
			var copyTo func([]byte) error
			if tc.copy {
				copyTo = func(b []byte) error {
					if calls++; tc.failAfter > 0 && calls > tc.failAfter {
						return errDisk
					}
					got = append(got, b...)
					return nil
				}
			}
			tb := newTee(strings.NewReader(tc.body), copyTo)
			var read []byte
			buf := make([]byte, 3)
			for tc.readTo < 0 || len(read) < tc.readTo {
				if len(read) == tc.stopAt {
					tb.stop()
				}
				n, err := tb.Read(buf)
				read = append(read, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Read: %v (a copy must never fail the body)", err)
				}
			}
			if want := tc.body; tc.readTo < 0 && string(read) != want {
				t.Fatalf("read %q, want %q", read, want)
			}
			tb.Close()
			copied, complete := tb.finish(context.Background())
			if copied != tc.wantCopied || complete != tc.wantComplete {
				t.Fatalf("finish = %d, %v; want %d, %v", copied, complete, tc.wantCopied, tc.wantComplete)
			}
			if string(got) != tc.body[:copied] {
				t.Fatalf("copied %q, want %q", got, tc.body[:copied])
			}
			if _, err := tb.Read(buf); tc.readTo < 0 && err != io.EOF {
				t.Fatalf("Read after finish: %v, want EOF", err)
			}
		})
	}
}

// finish waits for the upstream request to be done with the body, but no
// longer than the request's context.
func TestTeeFinishEndsWithContext(t *testing.T) {
	t.Parallel()
	tb := newTee(strings.NewReader("abc"), func([]byte) error { return nil })
	if _, err := io.ReadAll(tb); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // never Closed: only the context ends the wait
	copied, complete := tb.finish(ctx)
	if copied != 3 || !complete {
		t.Fatalf("finish = %d, %v; want 3, true", copied, complete)
	}
	if n, _ := tb.Read(make([]byte, 1)); n != 0 {
		t.Fatalf("read %d bytes after the end", n)
	}
}
