package cache

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func TestPutGetStatDelete(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)

	tests := []struct {
		name      string
		size      int
		mediaType string
	}{
		{"empty", 0, "application/vnd.oci.empty.v1+json"},
		{"one byte", 1, "application/octet-stream"},
		{"manifest", 1234, "application/vnd.oci.image.manifest.v1+json"},
		{"layer", 100_000, "application/vnd.oci.image.layer.v1.tar+gzip"},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data, dgst := blob(uint64(i), tc.size)
			before := time.Now()
			if err := s.Put(dgst, tc.mediaType, data); err != nil {
				t.Fatalf("Put: %v", err)
			}
			info, err := s.Stat(dgst)
			if err != nil {
				t.Fatalf("Stat: %v", err)
			}
			if info.Digest != dgst || info.Size != int64(tc.size) || info.MediaType != tc.mediaType || info.LastAccess.Before(before) {
				t.Fatalf("Stat = %+v, want digest %s size %d media type %q, access after %v", info, dgst, tc.size, tc.mediaType, before)
			}
			readEntry(t, s, dgst, data)
			onDisk, err := os.ReadFile(filepath.Join(dir, blobsDirName, relBlobPath(dgst)))
			if err != nil || string(onDisk) != string(data) {
				t.Fatalf("file on disk: %d bytes, err %v; want %d bytes", len(onDisk), err, len(data))
			}
			if got := indexed(t, s)[dgst]; got != int64(tc.size) {
				t.Fatalf("index size = %d, want %d", got, tc.size)
			}

			if err := s.Delete(dgst); err != nil {
				t.Fatalf("Delete: %v", err)
			}
			if _, err := s.Stat(dgst); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Stat after Delete: %v, want ErrNotFound", err)
			}
			if _, _, err := s.Get(dgst); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get after Delete: %v, want ErrNotFound", err)
			}
			if err := s.Delete(dgst); !errors.Is(err, ErrNotFound) {
				t.Fatalf("second Delete: %v, want ErrNotFound", err)
			}
			if fileExists(filepath.Join(dir, blobsDirName, relBlobPath(dgst))) {
				t.Fatal("file still on disk after Delete")
			}
			if _, ok := indexed(t, s)[dgst]; ok {
				t.Fatal("index record still present after Delete")
			}
		})
	}
	if s.Size() != 0 || s.Stats().Entries != 0 {
		t.Fatalf("Size = %d, Entries = %d after deleting everything", s.Size(), s.Stats().Entries)
	}
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
}

func TestInvalidDigest(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	_, good := blob(1, 10)
	tests := []struct {
		name string
		dgst digest.Digest
	}{
		{"empty", ""},
		{"no algorithm", digest.Digest(good.Encoded())},
		{"short hex", "sha256:abcd"},
		{"upper hex", digest.Digest("sha256:" + strings.ToUpper(good.Encoded()))},
		{"path traversal", "sha256:../../../../etc/passwd"},
		{"traversal of right length", digest.Digest("sha256:../" + good.Encoded()[3:])},
		{"unknown algorithm", digest.Digest("md5:" + good.Encoded()[:32])},
		{"sha512 unsupported", digest.Digest("sha512:" + strings.Repeat("ab", 64))},
		{"sha384 unsupported", digest.Digest("sha384:" + strings.Repeat("ab", 48))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			check := func(op string, err error) {
				t.Helper()
				if err == nil || errors.Is(err, ErrNotFound) {
					t.Fatalf("%s(%q) = %v, want an invalid digest error", op, tc.dgst, err)
				}
			}
			_, err := s.Stat(tc.dgst)
			check("Stat", err)
			_, _, err = s.Get(tc.dgst)
			check("Get", err)
			_, err = s.Create(tc.dgst, 1, "")
			check("Create", err)
			check("Put", s.Put(tc.dgst, "", []byte("x")))
			check("Delete", s.Delete(tc.dgst))
		})
	}
}

func TestCreateRejectsBadArguments(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	_, dgst := blob(1, 10)
	if _, err := s.Create(dgst, -2, ""); err == nil {
		t.Fatal("Create with size -2 succeeded")
	}
	if _, err := s.Create(dgst, 10, strings.Repeat("x", maxMediaTypeLen+1)); err == nil {
		t.Fatal("Create with an oversized media type succeeded")
	}
}

func TestOpenRejectsBadOptions(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts Options
	}{
		{"no dir", Options{MaxSize: 1}},
		{"zero max size", Options{Dir: t.TempDir()}},
		{"negative max size", Options{Dir: t.TempDir(), MaxSize: -1}},
		{"negative interval", Options{Dir: t.TempDir(), MaxSize: 1, AccessFlushInterval: -time.Second}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if s, err := Open(tc.opts); err == nil {
				s.Close()
				t.Fatalf("Open(%+v) succeeded", tc.opts)
			}
		})
	}
}

// TestCommitRejects covers every way a body can fail verification: nothing
// may reach blobs/ or the index, tmp/ must be empty and a follower that was
// reading must get the error.
func TestCommitRejects(t *testing.T) {
	t.Parallel()
	data, dgst := blob(7, 50_000)
	other, _ := blob(8, 50_000)
	tests := []struct {
		name     string
		size     int64
		body     []byte
		writeErr error // expected from Write, if any
		want     error
	}{
		{"wrong digest", int64(len(data)), other, nil, ErrDigestMismatch},
		{"wrong digest unknown size", -1, other, nil, ErrDigestMismatch},
		{"short body", int64(len(data)), data[:len(data)-1], nil, ErrSizeMismatch},
		{"long body", int64(len(data)), append(append([]byte{}, data...), 'x'), ErrSizeMismatch, ErrSizeMismatch},
		{"long body unknown size", -1, append(append([]byte{}, data...), 'x'), nil, ErrDigestMismatch},
		{"empty body", int64(len(data)), nil, nil, ErrSizeMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir, 1<<20)
			w, err := s.Create(dgst, tc.size, "application/octet-stream")
			if err != nil {
				t.Fatal(err)
			}
			r, err := w.NewReader(context.Background(), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			followerErr := make(chan error, 1)
			go func() {
				_, err := io.Copy(io.Discard, r)
				followerErr <- err
			}()

			_, err = w.Write(tc.body)
			if !errors.Is(err, tc.writeErr) || (tc.writeErr == nil) != (err == nil) {
				t.Fatalf("Write = %v, want %v", err, tc.writeErr)
			}
			kept, err := w.Commit()
			if kept || !errors.Is(err, tc.want) {
				t.Fatalf("Commit = %v, %v; want false, %v", kept, err, tc.want)
			}
			if !strings.Contains(err.Error(), dgst.String()) {
				t.Fatalf("Commit error %q does not name the digest", err)
			}
			select {
			case err := <-followerErr:
				if !errors.Is(err, tc.want) {
					t.Fatalf("follower got %v, want %v", err, tc.want)
				}
			case <-time.After(time.Minute):
				t.Fatal("follower still blocked after a failed Commit")
			}
			if _, err := w.NewReader(context.Background(), 0); !errors.Is(err, tc.want) {
				t.Fatalf("NewReader after failure = %v, want %v", err, tc.want)
			}
			w.Abort(nil) // no-op after failure
			assertFileSet(t, "blobs/", blobFiles(t, dir), nil)
			assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
			if n := len(indexed(t, s)); n != 0 {
				t.Fatalf("index has %d records, want 0", n)
			}
			if _, err := s.Stat(dgst); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Stat = %v, want ErrNotFound", err)
			}
			if s.Size() != 0 {
				t.Fatalf("Size = %d, want 0", s.Size())
			}
		})
	}
}

func TestErrorDetails(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	data, dgst := blob(1, 100)
	_, otherDgst := blob(2, 100)

	w, _ := s.Create(dgst, 101, "")
	w.Write(data)
	_, err := w.Commit()
	for _, want := range []string{dgst.String(), "101", "100"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("size mismatch error %q does not mention %q", err, want)
		}
	}
	err = s.Put(otherDgst, "", data)
	if !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Put with wrong digest = %v", err)
	}
	for _, want := range []string{otherDgst.String(), dgst.String()} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("digest mismatch error %q does not mention %q", err, want)
		}
	}
	if st := s.Stats(); st.DigestMismatches != 1 || st.SizeMismatches != 1 {
		t.Fatalf("Stats = %+v, want one digest and one size mismatch", st)
	}
}

func TestWriterLifecycle(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	data, dgst := blob(3, 4096)

	w, err := s.Create(dgst, int64(len(data)), "m")
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != int64(len(data)) || w.Written() != 0 || w.Digest() != dgst {
		t.Fatalf("fresh writer: size %d written %d digest %s", w.Size(), w.Written(), w.Digest())
	}
	if _, err := w.NewReader(context.Background(), -1); err == nil {
		t.Fatal("NewReader(-1) succeeded")
	}
	if _, err := w.NewReader(context.Background(), int64(len(data))+1); err == nil {
		t.Fatal("NewReader past the size succeeded")
	}
	if err := writeChunks(w, data, 1000, 0); err != nil {
		t.Fatal(err)
	}
	if w.Written() != int64(len(data)) {
		t.Fatalf("Written = %d, want %d", w.Written(), len(data))
	}
	if len(tmpFiles(t, dir)) != 1 {
		t.Fatalf("tmp/ = %q, want one temp file while writing", tmpFiles(t, dir))
	}
	if kept, err := w.Commit(); !kept || err != nil {
		t.Fatalf("Commit = %v, %v", kept, err)
	}
	w.Abort(errors.New("late")) // no-op after Commit
	if _, err := w.Write([]byte("x")); !errors.Is(err, ErrWriterDone) {
		t.Fatalf("Write after Commit = %v, want ErrWriterDone", err)
	}
	if _, err := w.Commit(); !errors.Is(err, ErrWriterDone) {
		t.Fatalf("second Commit = %v, want ErrWriterDone", err)
	}
	if _, err := w.NewReader(context.Background(), 0); !errors.Is(err, ErrWriterDone) {
		t.Fatalf("NewReader after Commit = %v, want ErrWriterDone", err)
	}
	readEntry(t, s, dgst, data)
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
	assertFileSet(t, "blobs/", blobFiles(t, dir), blobPaths(dgst))
	if st := s.Stats(); st.Commits != 1 || st.Aborts != 0 || st.Entries != 1 || st.Bytes != int64(len(data)) {
		t.Fatalf("Stats = %+v", st)
	}
}

// TestDuplicateCommit: a second download of stored content is dropped and
// reported as kept.
func TestDuplicateCommit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	data, dgst := blob(4, 3000)

	w1, _ := s.Create(dgst, int64(len(data)), "m")
	w2, _ := s.Create(dgst, -1, "m")
	w1.Write(data)
	w2.Write(data)
	if kept, err := w1.Commit(); !kept || err != nil {
		t.Fatalf("first Commit = %v, %v", kept, err)
	}
	if kept, err := w2.Commit(); !kept || err != nil {
		t.Fatalf("second Commit = %v, %v", kept, err)
	}
	mustPut(t, s, data, dgst)
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
	assertFileSet(t, "blobs/", blobFiles(t, dir), blobPaths(dgst))
	if s.Size() != int64(len(data)) || s.Stats().Entries != 1 || s.Stats().Commits != 1 {
		t.Fatalf("Size = %d, Stats = %+v; want one entry", s.Size(), s.Stats())
	}
	readEntry(t, s, dgst, data)
}

func TestGetVanishedFile(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		damage func(path string) error
	}{
		{"removed", os.Remove},
		{"truncated", func(p string) error { return os.Truncate(p, 10) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir, 1<<20)
			data, dgst := blob(5, 1000)
			mustPut(t, s, data, dgst)
			if err := tc.damage(filepath.Join(dir, blobsDirName, relBlobPath(dgst))); err != nil {
				t.Fatal(err)
			}
			if _, _, err := s.Get(dgst); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Get of damaged entry = %v, want ErrNotFound", err)
			}
			if _, err := s.Stat(dgst); !errors.Is(err, ErrNotFound) {
				t.Fatalf("Stat after drop = %v, want ErrNotFound", err)
			}
			if len(indexed(t, s)) != 0 || s.Size() != 0 {
				t.Fatalf("index %v, size %d after drop; want empty", indexed(t, s), s.Size())
			}
			assertFileSet(t, "blobs/", blobFiles(t, dir), nil)
			// It can be stored again.
			mustPut(t, s, data, dgst)
			readEntry(t, s, dgst, data)
		})
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	data, dgst := blob(6, 100)
	w, _ := s.Create(dgst, 100, "") // a download in progress must survive
	w.Write(data[:50])

	// An Open that waited for the lock would wait for this store to
	// close, which only happens after the test: it would hang.
	s2, err := Open(Options{Dir: dir, MaxSize: 1 << 20, lockSettle: heldLockSettle})
	if err == nil {
		s2.Close()
		t.Fatal("second Open of the same directory succeeded")
	}
	if !strings.Contains(err.Error(), dir) {
		t.Errorf("error %q does not name the directory", err)
	}
	w.Write(data[50:])
	if kept, err := w.Commit(); !kept || err != nil {
		t.Fatalf("Commit after the failed Open = %v, %v", kept, err)
	}
	readEntry(t, s, dgst, data)
}

func TestClosedStore(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	data, dgst := blob(9, 100)
	w, _ := s.Create(dgst, 100, "")
	w.Write(data)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := w.Commit(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Commit after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Stat(dgst); !errors.Is(err, ErrClosed) {
		t.Fatalf("Stat after Close = %v", err)
	}
	if _, _, err := s.Get(dgst); !errors.Is(err, ErrClosed) {
		t.Fatalf("Get after Close = %v", err)
	}
	if err := s.Put(dgst, "", data); !errors.Is(err, ErrClosed) {
		t.Fatalf("Put after Close = %v", err)
	}
	if err := s.Delete(dgst); !errors.Is(err, ErrClosed) {
		t.Fatalf("Delete after Close = %v", err)
	}
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
}
