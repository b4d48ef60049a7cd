package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestFollowers: readers from offset 0 and from the middle get exactly the
// right bytes while another goroutine writes in chunks.
func TestFollowers(t *testing.T) {
	t.Parallel()
	data, dgst := blob(11, 300_000)
	tests := []struct {
		name string
		size int64
	}{
		{"known size", int64(len(data))},
		{"unknown size", -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir, 1<<20)
			w, err := s.Create(dgst, tc.size, "m")
			if err != nil {
				t.Fatal(err)
			}
			offsets := []int64{0, 1, 12_345, int64(len(data)) - 1, int64(len(data))}
			type result struct {
				off int64
				got []byte
				err error
			}
			results := make(chan result, len(offsets))
			for _, off := range offsets {
				r, err := w.NewReader(context.Background(), off)
				if err != nil {
					t.Fatalf("NewReader(%d): %v", off, err)
				}
				go func() {
					defer r.Close()
					got, err := io.ReadAll(r)
					results <- result{off, got, err}
				}()
			}
			writeErr := make(chan error, 1)
			go func() {
				if err := writeChunks(w, data, 7919, 50*time.Microsecond); err != nil {
					writeErr <- err
					return
				}
				_, err := w.Commit()
				writeErr <- err
			}()
			if err := <-writeErr; err != nil {
				t.Fatalf("writer: %v", err)
			}
			for range offsets {
				r := <-results
				if r.err != nil {
					t.Fatalf("reader at %d: %v", r.off, r.err)
				}
				if !bytes.Equal(r.got, data[r.off:]) {
					t.Fatalf("reader at %d got %d bytes, want %d equal bytes", r.off, len(r.got), len(data)-int(r.off))
				}
			}
			readEntry(t, s, dgst, data)
		})
	}
}

// TestFollowerNeverSeesLastByte asserts the safety rule directly: with every
// byte written but no Commit, a follower gets all but the last byte and
// then blocks; the last byte arrives only after Commit.
func TestFollowerNeverSeesLastByte(t *testing.T) {
	t.Parallel()
	data, dgst := blob(12, 10_000)
	for _, size := range []int64{int64(len(data)), -1} {
		t.Run(fmt.Sprintf("size=%d", size), func(t *testing.T) {
			t.Parallel()
			s := openStore(t, t.TempDir(), 1<<20)
			w, _ := s.Create(dgst, size, "")
			if _, err := w.Write(data); err != nil {
				t.Fatal(err)
			}
			r, err := w.NewReader(context.Background(), 0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			head := make([]byte, len(data)-1)
			if _, err := io.ReadFull(r, head); err != nil {
				t.Fatalf("reading all but the last byte: %v", err)
			}
			if !bytes.Equal(head, data[:len(data)-1]) {
				t.Fatal("wrong bytes before the last one")
			}

			// A follower with a short deadline must time out, not get the byte.
			r2, _ := w.NewReader(context.Background(), int64(len(data))-1)
			defer r2.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			defer cancel()
			r3, _ := w.NewReader(ctx, int64(len(data))-1)
			defer r3.Close()
			buf := make([]byte, 10)
			if n, err := r3.Read(buf); n != 0 || !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("Read of the last byte before Commit = %d, %v; want 0, deadline exceeded", n, err)
			}

			tail := make(chan []byte, 1)
			go func() {
				b, _ := io.ReadAll(r)
				tail <- b
			}()
			select {
			case b := <-tail:
				t.Fatalf("follower returned %q before Commit", b)
			case <-time.After(50 * time.Millisecond):
			}
			if kept, err := w.Commit(); !kept || err != nil {
				t.Fatalf("Commit = %v, %v", kept, err)
			}
			if b := <-tail; !bytes.Equal(b, data[len(data)-1:]) {
				t.Fatalf("after Commit follower got %q, want the last byte", b)
			}
			if b, err := io.ReadAll(r2); err != nil || !bytes.Equal(b, data[len(data)-1:]) {
				t.Fatalf("reader at the last byte after Commit = %q, %v", b, err)
			}
		})
	}
}

func TestFollowerEmptyEntry(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	_, dgst := blob(0, 0)
	w, _ := s.Create(dgst, 0, "")
	r, _ := w.NewReader(context.Background(), 0)
	defer r.Close()
	done := make(chan error, 1)
	go func() {
		n, err := r.Read(make([]byte, 1))
		if n != 0 {
			err = errors.New("read a byte of an empty entry")
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Read of an empty entry returned %v before Commit", err)
	case <-time.After(20 * time.Millisecond):
	}
	if kept, err := w.Commit(); !kept || err != nil {
		t.Fatalf("Commit = %v, %v", kept, err)
	}
	if err := <-done; err != io.EOF {
		t.Fatalf("Read after Commit = %v, want io.EOF", err)
	}
}

func TestFollowerUnblock(t *testing.T) {
	t.Parallel()
	data, dgst := blob(13, 1000)
	tests := []struct {
		name string
		// unblock is called while a Read waits; want is the Read error.
		unblock func(cancel context.CancelFunc, w *Writer, r io.ReadCloser)
		want    error
	}{
		{"ctx cancel", func(cancel context.CancelFunc, _ *Writer, _ io.ReadCloser) { cancel() }, context.Canceled},
		{"abort nil", func(_ context.CancelFunc, w *Writer, _ io.ReadCloser) { w.Abort(nil) }, ErrAborted},
		{"abort with cause", func(_ context.CancelFunc, w *Writer, _ io.ReadCloser) { w.Abort(io.ErrUnexpectedEOF) }, io.ErrUnexpectedEOF},
		{"close", func(_ context.CancelFunc, _ *Writer, r io.ReadCloser) { r.Close() }, os.ErrClosed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openStore(t, dir, 1<<20)
			w, _ := s.Create(dgst, int64(len(data)), "")
			w.Write(data[:100])
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			r, err := w.NewReader(ctx, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			buf := make([]byte, 200)
			if n, err := r.Read(buf); n != 100 || err != nil {
				t.Fatalf("first Read = %d, %v; want 100 bytes", n, err)
			}
			done := make(chan error, 1)
			go func() {
				_, err := r.Read(buf)
				done <- err
			}()
			select {
			case err := <-done:
				t.Fatalf("Read returned %v with no new data", err)
			case <-time.After(20 * time.Millisecond):
			}
			tc.unblock(cancel, w, r)
			select {
			case err := <-done:
				if !errors.Is(err, tc.want) {
					t.Fatalf("blocked Read = %v, want %v", err, tc.want)
				}
			case <-time.After(time.Minute):
				t.Fatal("Read still blocked")
			}
			if tc.want == ErrAborted || tc.want == io.ErrUnexpectedEOF {
				if _, err := w.NewReader(context.Background(), 0); !errors.Is(err, tc.want) {
					t.Fatalf("NewReader after Abort = %v, want %v", err, tc.want)
				}
				if _, err := w.Commit(); !errors.Is(err, tc.want) {
					t.Fatalf("Commit after Abort = %v, want %v", err, tc.want)
				}
				assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
				if s.Stats().Aborts != 1 {
					t.Fatalf("Aborts = %d, want 1", s.Stats().Aborts)
				}
			}
		})
	}
}

// TestFollowerSurvivesDiscard: an entry larger than MaxSize is verified and
// not kept, and a follower that is mid-way still reads it to the end.
func TestFollowerSurvivesDiscard(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1000)
	data, dgst := blob(14, 5000)
	w, _ := s.Create(dgst, int64(len(data)), "")
	r, _ := w.NewReader(context.Background(), 0)
	defer r.Close()
	w.Write(data)
	head := make([]byte, 100)
	if _, err := io.ReadFull(r, head); err != nil {
		t.Fatal(err)
	}
	kept, err := w.Commit()
	if kept || err != nil {
		t.Fatalf("Commit of an entry larger than MaxSize = %v, %v; want false, nil", kept, err)
	}
	assertFileSet(t, "blobs/", blobFiles(t, dir), nil)
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
	if _, err := s.Stat(dgst); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of discarded entry = %v", err)
	}
	rest, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(append(head, rest...), data) {
		t.Fatalf("follower after discard: %d bytes, %v", len(head)+len(rest), err)
	}
	if st := s.Stats(); st.Discarded != 1 || st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("Stats = %+v, want one discard and nothing stored", st)
	}
	if err := s.Put(dgst, "", data); err != nil {
		t.Fatalf("Put of an entry larger than MaxSize = %v, want nil", err)
	}
}

// TestReadersSurviveEviction: a follower and a Get caller keep reading the
// right bytes after the entry is evicted and its file unlinked.
func TestReadersSurviveEviction(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 10_000)
	data, dgst := blob(15, 6000)
	w, _ := s.Create(dgst, int64(len(data)), "")
	follower, _ := w.NewReader(context.Background(), 0)
	defer follower.Close()
	w.Write(data)
	if kept, err := w.Commit(); !kept || err != nil {
		t.Fatalf("Commit = %v, %v", kept, err)
	}
	f, _, err := s.Get(dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	other, otherDgst := blob(16, 6000)
	mustPut(t, s, other, otherDgst) // evicts dgst
	if _, err := s.Stat(dgst); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Stat of evicted entry = %v", err)
	}
	if fileExists(filepath.Join(dir, blobsDirName, relBlobPath(dgst))) {
		t.Fatal("evicted file still on disk")
	}
	for name, r := range map[string]io.Reader{"follower": follower, "Get file": f} {
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("%s after eviction: %d bytes, %v; want %d equal bytes", name, len(got), err, len(data))
		}
	}
}

func TestWriteFailsPastKnownSize(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	data, dgst := blob(17, 100)
	w, _ := s.Create(dgst, 99, "")
	r, _ := w.NewReader(context.Background(), 0)
	defer r.Close()
	if _, err := w.Write(data[:50]); err != nil {
		t.Fatal(err)
	}
	if n, err := w.Write(data[50:]); n != 0 || !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("Write past the size = %d, %v; want 0, ErrSizeMismatch", n, err)
	}
	if _, err := io.ReadAll(r); !errors.Is(err, ErrSizeMismatch) {
		t.Fatalf("follower = %v, want ErrSizeMismatch", err)
	}
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
}

// plainWriter hides io.ReaderFrom so WriteTo takes its buffered path.
type plainWriter struct{ buf bytes.Buffer }

func (p *plainWriter) Write(b []byte) (int, error) { return p.buf.Write(b) }

// TestFollowerWriteTo: io.Copy from a follower (WriteTo) delivers exactly
// the entry while it is written, into a destination that takes files
// (an *os.File, as an HTTP response over TCP does, gets them without a
// copy through user space) and into a plain writer.
func TestFollowerWriteTo(t *testing.T) {
	t.Parallel()
	data, dgst := blob(17, 2_000_000)
	tests := []struct {
		name string
		dst  func(t *testing.T) (io.Writer, func() []byte)
	}{
		{"file destination", func(t *testing.T) (io.Writer, func() []byte) {
			f, err := os.Create(filepath.Join(t.TempDir(), "out"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { f.Close() })
			return f, func() []byte {
				b, err := os.ReadFile(f.Name())
				if err != nil {
					t.Fatal(err)
				}
				return b
			}
		}},
		{"plain destination", func(t *testing.T) (io.Writer, func() []byte) {
			p := &plainWriter{}
			return p, p.buf.Bytes
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := openStore(t, t.TempDir(), 1<<30)
			w, err := s.Create(dgst, int64(len(data)), "")
			if err != nil {
				t.Fatal(err)
			}
			const offset = 1234
			r, err := w.NewReader(context.Background(), offset)
			if err != nil {
				t.Fatal(err)
			}
			dst, contents := tc.dst(t)
			copied := make(chan error, 1)
			go func() {
				defer r.Close()
				n, err := io.Copy(dst, r)
				if err == nil && n != int64(len(data)-offset) {
					err = fmt.Errorf("copied %d bytes, want %d", n, len(data)-offset)
				}
				copied <- err
			}()
			if err := writeChunks(w, data, 65_521, 20*time.Microsecond); err != nil {
				t.Fatal(err)
			}
			if _, err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := <-copied; err != nil {
				t.Fatal(err)
			}
			if got := contents(); !bytes.Equal(got, data[offset:]) {
				t.Fatalf("got %d bytes, want the %d bytes from offset %d", len(got), len(data)-offset, offset)
			}
		})
	}
}

// TestFollowerWriteToFailure: a WriteTo in progress ends with the
// writer's error, never with a clean end, when the digest mismatches.
func TestFollowerWriteToFailure(t *testing.T) {
	t.Parallel()
	data, dgst := blob(18, 100_000)
	s := openStore(t, t.TempDir(), 1<<30)
	w, err := s.Create(dgst, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := w.NewReader(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	f, err := os.Create(filepath.Join(t.TempDir(), "out"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(f, r)
		copied <- err
	}()
	bad := bytes.Clone(data)
	bad[len(bad)/2] ^= 0xff
	if err := writeChunks(w, bad, 10_007, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Commit(); !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Commit = %v, want ErrDigestMismatch", err)
	}
	if err := <-copied; !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("WriteTo ended with %v, want the digest mismatch", err)
	}
	if info, _ := f.Stat(); info.Size() >= int64(len(data)) {
		t.Fatalf("the destination got all %d bytes of a body that failed verification", info.Size())
	}
}
