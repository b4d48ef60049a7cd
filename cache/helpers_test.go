package cache

import (
	"bytes"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

// blob returns n deterministic pseudo-random bytes for seed and their digest.
func blob(seed uint64, n int) ([]byte, digest.Digest) {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b, digest.FromBytes(b)
}

func openStore(t testing.TB, dir string, maxSize int64) *Store {
	t.Helper()
	s, err := Open(Options{Dir: dir, MaxSize: maxSize, AccessFlushInterval: time.Hour})
	if err != nil {
		t.Fatalf("Open(%s): %v", dir, err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func mustPut(t testing.TB, s *Store, data []byte, dgst digest.Digest) {
	t.Helper()
	if err := s.Put(dgst, "application/octet-stream", data); err != nil {
		t.Fatalf("Put(%s): %v", dgst, err)
	}
}

// readEntry reads an entry through Get and fails unless it equals want.
func readEntry(t testing.TB, s *Store, dgst digest.Digest, want []byte) {
	t.Helper()
	f, info, err := s.Get(dgst)
	if err != nil {
		t.Fatalf("Get(%s): %v", dgst, err)
	}
	defer f.Close()
	got, err := io.ReadAll(f)
	if err != nil {
		t.Fatalf("read %s: %v", dgst, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("Get(%s) returned %d bytes, want %d equal bytes", dgst, len(got), len(want))
	}
	if info.Size != int64(len(want)) || info.Digest != dgst {
		t.Fatalf("Get(%s) info = %+v, want size %d", dgst, info, len(want))
	}
}

// blobFiles lists the files under <dir>/blobs relative to it.
func blobFiles(t testing.TB, dir string) []string {
	t.Helper()
	return listFiles(t, filepath.Join(dir, blobsDirName))
}

func tmpFiles(t testing.TB, dir string) []string {
	t.Helper()
	return listFiles(t, filepath.Join(dir, tmpDirName))
}

func listFiles(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(root, path)
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	slices.Sort(out)
	return out
}

// relBlobPath is where dgst lives relative to <dir>/blobs.
func relBlobPath(dgst digest.Digest) string {
	return filepath.Join("sha256", dgst.Encoded()[:2], dgst.Encoded())
}

func blobPaths(dgsts ...digest.Digest) []string {
	out := make([]string, 0, len(dgsts))
	for _, d := range dgsts {
		out = append(out, relBlobPath(d))
	}
	slices.Sort(out)
	return out
}

// indexed returns the sizes of the blob records in the store's index.
func indexed(t testing.TB, s *Store) map[digest.Digest]int64 {
	t.Helper()
	recs, bad, err := loadIndex(s.db)
	if err != nil {
		t.Fatal(err)
	}
	if len(bad) > 0 {
		t.Fatalf("index has %d bad records", len(bad))
	}
	out := make(map[digest.Digest]int64, len(recs))
	for _, r := range recs {
		out[r.dgst] = r.e.size
	}
	return out
}

func assertFileSet(t testing.TB, what string, got, want []string) {
	t.Helper()
	if len(got) == 0 && len(want) == 0 {
		return
	}
	if !slices.Equal(got, want) {
		t.Fatalf("%s = %q, want %q", what, got, want)
	}
}

// writeChunks writes data to w in chunks of n, pausing briefly between them
// so that followers catch up and block.
func writeChunks(w *Writer, data []byte, n int, pause time.Duration) error {
	for len(data) > 0 {
		c := min(n, len(data))
		if _, err := w.Write(data[:c]); err != nil {
			return err
		}
		data = data[c:]
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	return nil
}

func fileExists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
