package cache

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
	"github.com/ecr-mirror/ecr-mirror/internal/tmpfs"
)

// failAfter makes the store's temp-file writes fail with errno once limit
// bytes of a file are written (a partial write first), while on is set.
func failAfter(s *Store, limit int64, errno syscall.Errno, on *atomic.Bool) {
	s.tempWriteAt = func(f *os.File, p []byte, off int64) (int, error) {
		if !on.Load() || off+int64(len(p)) <= limit {
			return f.WriteAt(p, off)
		}
		n := 0
		if off < limit {
			n, _ = f.WriteAt(p[:limit-off], off)
		}
		return n, &os.PathError{Op: "write", Path: f.Name(), Err: errno}
	}
}

// writeAll writes data in chunks of n bytes and commits.
func writeAll(w *Writer, data []byte, n int) (kept bool, err error) {
	for len(data) > 0 {
		c := data[:min(n, len(data))]
		if _, err := w.Write(c); err != nil {
			w.Abort(err)
			return false, err
		}
		data = data[len(c):]
	}
	return w.Commit()
}

// testWindow is the relay ring of these tests' stores: what matters is
// how the bytes and offsets fall against it, not its production size
// (relayWindow), and a small one keeps the copies few under -race.
const testWindow = 256 << 10

// openRelayStore is openStore with a relay ring of testWindow bytes.
func openRelayStore(t *testing.T, dir string) *Store {
	t.Helper()
	s := openStore(t, dir, 1<<30)
	s.ringSize = testWindow
	return s
}

// readFollower reads a follower to its end, through Read or WriteTo.
func readFollower(r io.ReadCloser, writeTo bool) ([]byte, error) {
	defer r.Close()
	var buf bytes.Buffer
	var err error
	if writeTo {
		// bytes.Buffer takes a file through ReadFrom: the sendfile path.
		_, err = r.(io.WriterTo).WriteTo(&buf)
	} else {
		_, err = io.Copy(&buf, struct{ io.Reader }{r})
	}
	return buf.Bytes(), err
}

// A temp-file write that fails with ENOSPC or EDQUOT relays the rest: every
// follower, from any offset and through Read or WriteTo, gets exactly the
// bytes; the entry is verified, not kept, nothing stays on disk, and the
// next download with room is stored.
func TestRelayOnDiskFull(t *testing.T) {
	t.Parallel()
	data, dgst := blob(61, 3*testWindow+123_457)
	const limit = testWindow/2 + 4321 // bytes that reach the temp file
	tests := []struct {
		name  string
		size  int64
		errno syscall.Errno
	}{
		{"ENOSPC known size", int64(len(data)), syscall.ENOSPC},
		{"EDQUOT unknown size", -1, syscall.EDQUOT},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s := openRelayStore(t, dir)
			var full atomic.Bool
			full.Store(true)
			failAfter(s, limit, tc.errno, &full)
			w, err := s.Create(dgst, tc.size, "application/octet-stream")
			if err != nil {
				t.Fatal(err)
			}
			offsets := []int64{0, 1, limit - 1, limit, limit + 1, 2*testWindow + 17, int64(len(data)) - 1, int64(len(data))}
			type result struct {
				name string
				off  int64
				got  []byte
				err  error
			}
			results := make(chan result, 2*len(offsets))
			for _, off := range offsets {
				for _, writeTo := range []bool{false, true} {
					r, err := w.NewReader(context.Background(), off)
					if err != nil {
						t.Fatal(err)
					}
					go func() {
						got, err := readFollower(r, writeTo)
						results <- result{fmt.Sprintf("offset %d writeTo %v", off, writeTo), off, got, err}
					}()
				}
			}
			kept, err := writeAll(w, data, 100_000)
			if kept || err != nil {
				t.Fatalf("Commit = %v, %v; want false, nil", kept, err)
			}
			for range 2 * len(offsets) {
				r := <-results
				if r.err != nil || !bytes.Equal(r.got, data[r.off:]) {
					t.Errorf("%s: %d bytes, err %v; want the %d bytes from there", r.name, len(r.got), r.err, int64(len(data))-r.off)
				}
			}
			if st := s.Stats(); st.DiskFull != 1 || st.Commits != 0 || st.Entries != 0 {
				t.Errorf("stats %+v; want DiskFull 1, nothing stored", st)
			}
			if _, err := s.Stat(dgst); !errors.Is(err, ErrNotFound) {
				t.Errorf("Stat after a relayed download: %v, want ErrNotFound", err)
			}
			if f := tmpFiles(t, dir); len(f) != 0 {
				t.Errorf("temp files left: %v", f)
			}
			if f := blobFiles(t, dir); len(f) != 0 {
				t.Errorf("blob files left: %v", f)
			}

			// With room again the same download is stored.
			full.Store(false)
			w, err = s.Create(dgst, tc.size, "application/octet-stream")
			if err != nil {
				t.Fatal(err)
			}
			if kept, err := writeAll(w, data, 100_000); !kept || err != nil {
				t.Fatalf("Commit with room = %v, %v", kept, err)
			}
			readEntry(t, s, dgst, data)
			if st := s.Stats(); st.DiskFull != 1 {
				t.Errorf("DiskFull = %d after a stored download, want 1", st.DiskFull)
			}
		})
	}
}

// A digest mismatch in relay mode fails every follower: none gets the
// whole body.
func TestRelayDigestMismatch(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openRelayStore(t, dir)
	var full atomic.Bool
	full.Store(true)
	failAfter(s, testWindow/2, syscall.ENOSPC, &full)
	data, _ := blob(62, 2*testWindow)
	wrong := digest.FromString("something else")
	w, err := s.Create(wrong, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, off := range []int64{0, testWindow / 2, testWindow + 5} {
		for _, writeTo := range []bool{false, true} {
			r, err := w.NewReader(context.Background(), off)
			if err != nil {
				t.Fatal(err)
			}
			wg.Go(func() {
				got, err := readFollower(r, writeTo)
				if !errors.Is(err, ErrDigestMismatch) || int64(len(got)) >= int64(len(data))-off {
					t.Errorf("follower at %d (writeTo %v): %d bytes, err %v; want fewer than all and ErrDigestMismatch", off, writeTo, len(got), err)
				}
			})
		}
	}
	if kept, err := writeAll(w, data, 16<<10); kept || !errors.Is(err, ErrDigestMismatch) {
		t.Fatalf("Commit = %v, %v; want ErrDigestMismatch", kept, err)
	}
	wg.Wait()
	if f := tmpFiles(t, dir); len(f) != 0 {
		t.Errorf("temp files left: %v", f)
	}
}

// In relay mode Write waits for the slowest follower, so at most the
// window's bytes past the disk are held; a follower whose context ends
// is no longer waited for and then fails cleanly, as does a reader that
// starts after bytes have left memory.
func TestRelayBackpressure(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openRelayStore(t, dir)
	var full atomic.Bool
	full.Store(true)
	failAfter(s, 0, syscall.ENOSPC, &full) // nothing reaches the disk
	data, dgst := blob(63, 4*testWindow)
	w, err := s.Create(dgst, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	slow, err := w.NewReader(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	lctx, cancel := context.WithCancel(context.Background())
	lagging, err := w.NewReader(lctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer lagging.Close()
	const chunk = 8 << 10 // divides the window: Write stops exactly at its edge
	done := make(chan error, 1)
	go func() {
		_, err := writeAll(w, data, chunk)
		done <- err
	}()

	// heldAt waits until Write has filled the window ahead of the slowest
	// reader (at offset low), and checks it went no further.
	heldAt := func(low int64) {
		t.Helper()
		testwait.Until(t, fmt.Sprintf("Write to fill the window ahead of offset %d", low), func() bool {
			return w.Written() >= low+testWindow
		})
		select {
		case err := <-done:
			t.Fatalf("the download finished (%v) with followers not reading", err)
		default:
		}
		if n := w.Written(); n != low+testWindow {
			t.Fatalf("Write held at %d bytes; want %d, a window ahead of the slowest reader", n, low+testWindow)
		}
	}
	heldAt(0)
	// The slow follower reads a quarter window: Write moves on by as much.
	p := make([]byte, testWindow/4)
	if _, err := io.ReadFull(slow, p); err != nil || !bytes.Equal(p, data[:len(p)]) {
		t.Fatalf("slow follower: %v", err)
	}
	cancel() // lagging is no longer waited for
	heldAt(int64(len(p)))
	// A reader starting now at 0 would need bytes that are gone.
	if _, err := w.NewReader(context.Background(), 0); !errors.Is(err, ErrNotBuffered) {
		t.Fatalf("late NewReader(0) = %v, want ErrNotBuffered", err)
	}
	if _, err := lagging.Read(p); err == nil {
		t.Fatal("a follower whose context ended read on")
	}
	rest, err := io.ReadAll(slow)
	if err != nil || !bytes.Equal(rest, data[len(p):]) {
		t.Fatalf("slow follower read %d bytes, %v", len(rest), err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.DiskFull != 1 {
		t.Errorf("DiskFull = %d, want 1", st.DiskFull)
	}
}

// Below the free-space reserve no temp file is written: at Create the
// download relays from the start, and a writer whose check finds the
// reserve reached switches on the way; with room again it stores.
func TestRelayBelowReserve(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openRelayStore(t, dir)
	var free atomic.Int64
	s.freeSpace = func() (int64, error) { return free.Load(), nil }
	data, dgst := blob(64, 3<<20) // past the first free-space check, at 1 MiB

	// Full at Create.
	free.Store(s.minFree - 1)
	w, err := s.Create(dgst, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	if w.tmpPath != "" || len(tmpFiles(t, dir)) != 0 {
		t.Fatalf("a temp file was created below the reserve: %q", w.tmpPath)
	}
	r, err := w.NewReader(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := readFollower(r, true); got <- b }()
	if kept, err := writeAll(w, data, 100_000); kept || err != nil {
		t.Fatalf("Commit = %v, %v; want false, nil", kept, err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("follower got %d bytes, want the %d", len(b), len(data))
	}

	// Room at Create, then the reserve is reached during the download.
	free.Store(1 << 40)
	w, err = s.Create(dgst, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:1<<20]); err != nil {
		t.Fatal(err)
	}
	free.Store(0)
	r, err = w.NewReader(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	go func() { b, _ := readFollower(r, false); got <- b }()
	if kept, err := writeAll(w, data[1<<20:], 100_000); kept || err != nil {
		t.Fatalf("Commit = %v, %v; want false, nil", kept, err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("follower got %d bytes, want the %d", len(b), len(data))
	}
	if st := s.Stats(); st.DiskFull != 2 || st.Entries != 0 {
		t.Fatalf("stats %+v, want DiskFull 2 and nothing stored", st)
	}
	if f := tmpFiles(t, dir); len(f) != 0 {
		t.Errorf("temp files left: %v", f)
	}

	free.Store(1 << 40)
	mustPut(t, s, data, dgst)
	readEntry(t, s, dgst, data)
}

// On a real full filesystem (a tmpfs of 8 MiB, with the reserve turned
// off so that the temp-file write itself meets ENOSPC) the download
// relays, and the store still works afterwards.
func TestRelayOnRealENOSPC(t *testing.T) {
	t.Parallel()
	dir := tmpfs.Mount(t, "8m")
	s, err := Open(Options{Dir: dir, MaxSize: 1 << 30, AccessFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	s.minFree = 0
	s.ringSize = testWindow
	data, dgst := blob(65, 16<<20)
	w, err := s.Create(dgst, int64(len(data)), "")
	if err != nil {
		t.Fatal(err)
	}
	r, err := w.NewReader(context.Background(), 0)
	if err != nil {
		t.Fatal(err)
	}
	got := make(chan []byte, 1)
	go func() { b, _ := readFollower(r, true); got <- b }()
	if kept, err := writeAll(w, data, 256<<10); kept || err != nil {
		t.Fatalf("Commit = %v, %v; want false, nil", kept, err)
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("follower got %d bytes, want the %d", len(b), len(data))
	}
	if st := s.Stats(); st.DiskFull != 1 {
		t.Fatalf("DiskFull = %d, want 1", st.DiskFull)
	}
	if f := tmpFiles(t, dir); len(f) != 0 {
		t.Errorf("temp files left: %v", f)
	}
	small, sdgst := blob(66, 100_000)
	mustPut(t, s, small, sdgst)
	readEntry(t, s, sdgst, small)
}
