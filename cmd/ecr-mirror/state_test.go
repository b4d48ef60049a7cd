package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/ecr-mirror/ecr-mirror/internal/dirtree"
)

// snapshot describes every file of dir, or fails the test.
func snapshot(t *testing.T, dir string) []string {
	t.Helper()
	s, err := dirtree.Snapshot(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestReadOnlyCommandsKeepAStoppedCache: "cache ls" and "cache verify"
// (without --repair) on a stopped mirror's cache, with a budget far
// smaller than its content (an operator's shell without the service's
// settings), list and verify everything and change nothing: every file,
// the index's included, is as it was.
func TestReadOnlyCommandsKeepAStoppedCache(t *testing.T) {
	t.Parallel()
	s := newSeededFake(t)
	m := startMirror(t, s.fake, mirrorOpts{})
	if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "team/app:v1", "team/multi:v2"); code != exitOK {
		t.Fatalf("warm: exit %d\n%s", code, errOut)
	}
	waitStored(t, m, s.all()...)
	eventually(t, "every entry indexed", func() bool {
		return len(listing(t, map[string]string{"CACHE_DIR": m.Dir}).Entries) == len(s.all())
	})
	m.Stop()
	// A damaged layer: verify reports it, and without --repair keeps it.
	flipByte(t, m.blobPath(s.appBlobs[0]))
	// Left by a crash: the server's start removes it, a look must not.
	if err := os.WriteFile(filepath.Join(m.Dir, "tmp", "leftover"), []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, m.Dir)

	env := map[string]string{"CACHE_DIR": m.Dir, "CACHE_MAX_SIZE": "1k"}
	l := listing(t, env)
	if len(l.Entries) != len(s.all()) || l.Totals.MaxBytes != 1024 {
		t.Errorf("cache ls with CACHE_MAX_SIZE=1k lists %d entries (max %d), want all %d", len(l.Entries), l.Totals.MaxBytes, len(s.all()))
	}
	code, out, errOut := cli(t, env, "cache", "verify")
	if code != exitFail || !strings.Contains(out, "bad "+s.appBlobs[0].String()) || strings.Contains(out, "removed") {
		t.Errorf("cache verify: exit %d, want %d reporting %s and removing nothing\n%s%s", code, exitFail, s.appBlobs[0], out, errOut)
	}
	if d := dirtree.Diff(before, snapshot(t, m.Dir)); len(d) > 0 {
		t.Fatalf("read-only commands changed the cache:\n%s", strings.Join(d, "\n"))
	}
	// The next start still sees it all.
	if l := listing(t, env); len(l.Entries) != len(s.all()) {
		t.Errorf("second cache ls lists %d entries, want %d", len(l.Entries), len(s.all()))
	}
}
