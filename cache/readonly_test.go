package cache

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/dirtree"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

// TestReadOnlyOpenChangesNothing opens a store holding more than its new
// budget, with every leftover reconcile would clean, read-only: it shows
// the good entries, refuses every change, and leaves every file as it
// was, the index's included.
func TestReadOnlyOpenChangesNothing(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	datas, dgsts := entries(700, 4, 1000)
	s := openStore(t, dir, 1<<20)
	for i := range datas {
		mustPut(t, s, datas[i], dgsts[i])
	}
	if err := s.Pin(dgsts[0], "team/app:v1"); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(Repo{Name: "team/app"}, "v1", AnyAccept, TagRecord{Digest: dgsts[1], Size: 1000, Checked: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// Leftovers: a damaged entry, an unindexed file, a temp file, and
	// an index written before links (Open would derive them).
	if err := os.Truncate(filepath.Join(dir, blobsDirName, relBlobPath(dgsts[3])), 10); err != nil {
		t.Fatal(err)
	}
	stray, strayDgst := blob(710, 100)
	for path, data := range map[string][]byte{
		filepath.Join(blobsDirName, relBlobPath(strayDgst)): stray,
		filepath.Join(tmpDirName, "leftover"):               []byte("half"),
	} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, path)), dirMode); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, path), data, fileMode); err != nil {
			t.Fatal(err)
		}
	}
	db, err := openIndex(filepath.Join(dir, indexDirName), slog.New(slog.DiscardHandler), lockSettle)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(txn *badger.Txn) error { return txn.Delete(linksMarkerKey) }); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	before, err := dirtree.Snapshot(dir, nil)
	if err != nil {
		t.Fatal(err)
	}

	var logs testkit.SyncBuffer
	ro, err := Open(Options{Dir: dir, MaxSize: 1500, ReadOnly: true,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
	if err != nil {
		t.Fatalf("read-only Open: %v", err)
	}
	defer ro.Close()
	// Readers share the directory; a writer waits for them.
	ro2, err := Open(Options{Dir: dir, MaxSize: 1500, ReadOnly: true})
	if err != nil {
		t.Fatalf("second read-only Open: %v", err)
	}
	if w, err := Open(Options{Dir: dir, MaxSize: 1500, lockSettle: heldLockSettle}); err == nil {
		w.Close()
		t.Fatal("a writing Open succeeded beside read-only ones")
	}
	if got := present(ro, append(dgsts, strayDgst)); got != "11110" {
		t.Fatalf("read-only view = %s, want every indexed entry, not the stray file", got)
	}
	if ro.Size() != 4000 || ro.Stats().Evictions != 0 {
		t.Fatalf("read-only Size = %d, Stats = %+v; want everything, nothing evicted", ro.Size(), ro.Stats())
	}
	readEntry(t, ro, dgsts[1], datas[1])
	// The damaged entry is there for Verify to name, never served.
	if err := ro.Verify(dgsts[3]); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("Verify of the damaged entry = %v, want ErrSizeMismatch", err)
	}
	if _, _, err := ro.Get(dgsts[3]); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get of the damaged entry = %v, want ErrNotFound", err)
	}
	if tags, err := ro.Tags(); err != nil || len(tags) != 1 {
		t.Fatalf("Tags = %v, %v", tags, err)
	}
	if pins, err := ro.Pins(); err != nil || len(pins) != 1 {
		t.Fatalf("Pins = %v, %v", pins, err)
	}
	if !strings.Contains(logs.String(), "opened read-only, so nothing is evicted") {
		t.Errorf("no warning that the content exceeds the budget: %s", logs.String())
	}

	changes := []struct {
		name string
		do   func() error
	}{
		{"Create", func() error { _, err := ro.Create(strayDgst, 100, ""); return err }},
		{"Put", func() error { return ro.Put(strayDgst, "", stray) }},
		{"Delete", func() error { return ro.Delete(dgsts[1]) }},
		{"Pin", func() error { return ro.Pin(dgsts[1], "x") }},
		{"Unpin", func() error { return ro.Unpin(dgsts[0]) }},
		{"Link", func() error { return ro.Link(Repo{Name: "team/app"}, dgsts[1]) }},
		{"SetMediaType", func() error {
			_, err := ro.SetMediaType(dgsts[1], "application/vnd.oci.image.manifest.v1+json")
			return err
		}},
		{"PutTag", func() error {
			return ro.PutTag(Repo{Name: "team/app"}, "v2", AnyAccept, TagRecord{Digest: dgsts[1], Size: 1000})
		}},
		{"DeleteTags", func() error { _, err := ro.DeleteTags(Repo{Name: "team/app"}, "v1"); return err }},
		{"DeleteAllTags", func() error { _, err := ro.DeleteAllTags(); return err }},
		{"Purge", func() error { _, err := ro.Purge(dgsts[1]); return err }},
		{"PurgeUnused", func() error { _, err := ro.PurgeUnused(time.Now().Add(time.Hour)); return err }},
	}
	for _, c := range changes {
		if err := c.do(); !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s on a read-only store = %v, want ErrReadOnly", c.name, err)
		}
	}
	if err := errors.Join(ro.Close(), ro2.Close()); err != nil {
		t.Fatal(err)
	}
	after, err := dirtree.Snapshot(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := dirtree.Diff(before, after); len(d) > 0 {
		t.Fatalf("a read-only open changed the directory:\n%s", strings.Join(d, "\n"))
	}
	// The writing Open that follows does clean up, and evicts.
	s = openStore(t, dir, 1500)
	if got := present(s, []digest.Digest{dgsts[0], strayDgst}); got != "10" {
		t.Fatalf("after a writing Open: pinned, stray = %s, want 10", got)
	}
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
}
