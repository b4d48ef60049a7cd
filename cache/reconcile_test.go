package cache

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"
)

// TestReconcile plants every kind of leftover a crash or an operator can
// leave and checks that Open removes them and keeps the good entries.
func TestReconcile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	blobs := filepath.Join(dir, blobsDirName)
	s := openStore(t, dir, 1<<20)
	good1, good1Dgst := blob(600, 1000)
	good2, good2Dgst := blob(601, 2000)
	trunc, truncDgst := blob(602, 3000)
	gone, goneDgst := blob(603, 400)
	for _, e := range []struct {
		data []byte
		dgst digest.Digest
	}{{good1, good1Dgst}, {good2, good2Dgst}, {trunc, truncDgst}, {gone, goneDgst}} {
		mustPut(t, s, e.data, e.dgst)
	}
	// A download in progress at crash time.
	partial, partialDgst := blob(604, 1000)
	w, _ := s.Create(partialDgst, int64(len(partial)), "")
	w.Write(partial[:500])
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	plant := func(rel string, data []byte) {
		t.Helper()
		p := filepath.Join(dir, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// Index says 3000 bytes, file has 10.
	if err := os.Truncate(filepath.Join(blobs, relBlobPath(truncDgst)), 10); err != nil {
		t.Fatal(err)
	}
	// Index entry with no file.
	if err := os.Remove(filepath.Join(blobs, relBlobPath(goneDgst))); err != nil {
		t.Fatal(err)
	}
	plant(filepath.Join(tmpDirName, "stray-upload"), []byte("half"))
	plant(filepath.Join(tmpDirName, "nested", "dir", "file"), []byte("x"))
	// Renamed into place but never indexed.
	unindexed, unindexedDgst := blob(605, 700)
	plant(filepath.Join(blobsDirName, relBlobPath(unindexedDgst)), unindexed)
	// Names that are not digests, and a good file in the wrong fan-out dir.
	plant(filepath.Join(blobsDirName, "sha256", "zz", "not-a-digest"), []byte("x"))
	plant(filepath.Join(blobsDirName, "sha256", good1Dgst.Encoded()[:2], "ABC"), []byte("x"))
	plant(filepath.Join(blobsDirName, "sha256", "junk"), []byte("x"))
	wrongFanout := "00"
	if good2Dgst.Encoded()[:2] == wrongFanout {
		wrongFanout = "01"
	}
	plant(filepath.Join(blobsDirName, "sha256", wrongFanout, good2Dgst.Encoded()), good2)
	// Records that do not parse.
	db, err := openIndex(filepath.Join(dir, indexDirName), slog.New(slog.DiscardHandler), lockSettle)
	if err != nil {
		t.Fatal(err)
	}
	_, badValDgst := blob(606, 10)
	plant(filepath.Join(blobsDirName, relBlobPath(badValDgst)), make([]byte, 10))
	wb := db.NewWriteBatch()
	wb.Set([]byte(blobKeyPrefix+"sha256:nothex"), encodeRecord(&entry{size: 1}))
	wb.Set(blobKey(badValDgst), []byte{99, 1, 2})
	wb.Set([]byte("tag/other-package"), []byte("left alone"))
	if err := wb.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	var logs bytes.Buffer
	s, err = Open(Options{Dir: dir, MaxSize: 1 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil)), AccessFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()

	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
	assertFileSet(t, "blobs/", blobFiles(t, dir), blobPaths(good1Dgst, good2Dgst))
	got := indexed(t, s)
	if len(got) != 2 || got[good1Dgst] != 1000 || got[good2Dgst] != 2000 {
		t.Fatalf("index after reconcile = %v, want only the two good entries", got)
	}
	readEntry(t, s, good1Dgst, good1)
	readEntry(t, s, good2Dgst, good2)
	for _, d := range []digest.Digest{truncDgst, goneDgst, unindexedDgst, partialDgst, badValDgst} {
		if _, err := s.Stat(d); !errors.Is(err, ErrNotFound) {
			t.Errorf("Stat(%s) = %v, want ErrNotFound", d, err)
		}
	}
	if s.Size() != 3000 || s.Stats().Entries != 2 {
		t.Fatalf("Size = %d, Stats = %+v", s.Size(), s.Stats())
	}
	err = s.db.View(func(txn *badger.Txn) error {
		_, err := txn.Get([]byte("tag/other-package"))
		return err
	})
	if err != nil {
		t.Fatalf("a key outside blob/ was touched: %v", err)
	}
	for _, want := range []string{"removed_temp_files=3", "dropped_bad_records=2", "dropped_missing_files=1", "dropped_size_mismatches=1", "removed_stray_files=6"} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("summary log %q lacks %s", logs.String(), want)
		}
	}
}
