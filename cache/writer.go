package cache

import (
	"context"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"

	"github.com/opencontainers/go-digest"
)

type writerState int

const (
	stateWriting    writerState = iota
	stateCommitting             // verified or being verified; Write and Abort refused
	stateCommitted              // terminal: followers see every byte, then io.EOF
	stateFailed                 // terminal: followers get w.err
)

// Writer receives one entry being downloaded. It is safe for one goroutine
// to Write/Commit/Abort while any number of other goroutines read through
// NewReader. Every Writer must end with Commit or Abort; until then its temp
// file stays in <Dir>/tmp.
type Writer struct {
	s         *Store
	dgst      digest.Digest
	size      int64 // declared, or -1
	mediaType string
	tmpPath   string
	f         *os.File  // opened read-write; followers ReadAt on it
	h         hash.Hash // used only by the writing goroutine

	mu      sync.Mutex
	cond    sync.Cond // on mu; broadcast when written or state changes
	written int64
	state   writerState
	err     error // why the writer failed, for followers
	// refs counts users of f: one for the writer until it finishes, one per
	// open follower. The last one closes f.
	refs int
}

// Digest returns the digest the writer was created for.
func (w *Writer) Digest() digest.Digest { return w.dgst }

// Size returns the declared size, or -1 if it is unknown.
func (w *Writer) Size() int64 { return w.size }

// Written returns the number of bytes written so far.
func (w *Writer) Written() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written
}

// Write appends p to the temp file and the hash. Writing past a known size
// fails the writer with ErrSizeMismatch (followers get that error too).
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.state != stateWriting {
		err := w.finishedErrLocked("write")
		w.mu.Unlock()
		return 0, err
	}
	off := w.written
	w.mu.Unlock()
	if w.size >= 0 && off+int64(len(p)) > w.size {
		err := fmt.Errorf("%w: %s: declared %d bytes, got at least %d", ErrSizeMismatch, w.dgst, w.size, off+int64(len(p)))
		if w.fail(err, stateWriting) {
			w.s.stats.sizeMismatches.Add(1)
		}
		return 0, err
	}
	// WriteAt at our own offset: followers' ReadAt and this never share a
	// file position.
	n, err := w.f.WriteAt(p, off)
	w.h.Write(p[:n])
	w.mu.Lock()
	w.written += int64(n)
	w.cond.Broadcast()
	w.mu.Unlock()
	if err != nil {
		err = fmt.Errorf("cache: write %s to temp file %s: %w", w.dgst, w.tmpPath, err)
		w.fail(err, stateWriting)
		return n, err
	}
	return n, nil
}

// Commit verifies the entry and stores it. A size or digest mismatch
// returns an error wrapping ErrSizeMismatch or ErrDigestMismatch, removes
// the temp file and fails the followers. On success the file is fsynced,
// renamed into place and indexed (durably) before Commit returns, after
// evicting least recently used entries to make room. kept is false when the
// entry alone exceeds MaxSize: it was verified but not stored. If the digest
// is already stored, the new copy is dropped and kept is true. Followers
// receive every byte after a successful Commit, kept or not.
func (w *Writer) Commit() (kept bool, err error) {
	w.mu.Lock()
	if w.state != stateWriting {
		err := w.finishedErrLocked("commit")
		w.mu.Unlock()
		return false, err
	}
	w.state = stateCommitting
	written := w.written
	w.mu.Unlock()

	if w.size >= 0 && written != w.size {
		err := fmt.Errorf("%w: %s: declared %d bytes, got %d", ErrSizeMismatch, w.dgst, w.size, written)
		w.fail(err, stateCommitting)
		w.s.stats.sizeMismatches.Add(1)
		return false, err
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, w.h.Sum(nil)); got != w.dgst {
		err := fmt.Errorf("%w: want %s, got %s (%d bytes)", ErrDigestMismatch, w.dgst, got, written)
		w.fail(err, stateCommitting)
		w.s.stats.digestMismatches.Add(1)
		return false, err
	}
	kept, err = w.s.admit(w.dgst, written, w.mediaType, w.f, w.tmpPath)
	if err != nil {
		w.fail(err, stateCommitting)
		return false, err
	}
	w.mu.Lock()
	w.state = stateCommitted
	w.cond.Broadcast()
	w.releaseLocked()
	w.mu.Unlock()
	return kept, nil
}

// Abort fails the writer: the temp file is removed and followers get err,
// or ErrAborted if err is nil. It is idempotent and a no-op once Commit has
// started.
func (w *Writer) Abort(err error) {
	if err == nil {
		err = fmt.Errorf("%w: %s", ErrAborted, w.dgst)
	} else {
		err = fmt.Errorf("cache: entry %s aborted: %w", w.dgst, err)
	}
	if w.fail(err, stateWriting) {
		w.s.stats.aborts.Add(1)
	}
}

// fail moves the writer from state from to stateFailed with err, wakes the
// followers and removes the temp file. It reports whether it did so.
func (w *Writer) fail(err error, from writerState) bool {
	w.mu.Lock()
	if w.state != from {
		w.mu.Unlock()
		return false
	}
	w.state = stateFailed
	w.err = err
	w.cond.Broadcast()
	w.releaseLocked()
	w.mu.Unlock()
	w.s.dropTemp(w.tmpPath)
	return true
}

func (w *Writer) finishedErrLocked(op string) error {
	switch w.state {
	case stateFailed:
		return w.err
	case stateCommitted:
		return fmt.Errorf("cache: %s %s: %w", op, w.dgst, ErrWriterDone)
	default:
		return fmt.Errorf("cache: %s %s: commit in progress", op, w.dgst)
	}
}

// releaseLocked drops one reference to the temp file and closes it with
// the last one.
func (w *Writer) releaseLocked() {
	w.refs--
	if w.refs == 0 {
		if err := w.f.Close(); err != nil {
			w.s.log.Warn("cache: close temp file", "path", w.tmpPath, "error", err)
		}
	}
}

// visibleLocked is how many bytes followers may read now. Until the entry
// is committed the final byte is held back, so a follower can never receive
// a complete body that then fails verification.
func (w *Writer) visibleLocked() int64 {
	if w.state == stateCommitted {
		return w.written
	}
	v := w.written - 1
	if w.size >= 0 {
		v = min(w.written, w.size-1)
	}
	return max(v, 0)
}

// NewReader returns a reader of the entry from offset that follows the
// writer: it returns bytes as soon as they are written (except the final
// byte, held back until Commit) and blocks until more land, ctx is done
// (returning ctx.Err()) or the writer finishes. After a successful Commit it
// reads to the end and returns io.EOF; after a failure it returns the
// writer's error. The reader works on the writer's own open file, so
// renames, eviction and discarding do not disturb it. Close it when done.
// Once the writer is committed NewReader returns ErrWriterDone: use
// Store.Get instead.
func (w *Writer) NewReader(ctx context.Context, offset int64) (io.ReadCloser, error) {
	if ctx == nil {
		return nil, fmt.Errorf("cache: reader for %s: nil context", w.dgst)
	}
	if offset < 0 || (w.size >= 0 && offset > w.size) {
		return nil, fmt.Errorf("cache: reader for %s: offset %d out of range (size %d)", w.dgst, offset, w.size)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == stateFailed || w.state == stateCommitted {
		return nil, w.finishedErrLocked("read")
	}
	w.refs++
	r := &follower{w: w, ctx: ctx, off: offset}
	r.stop = context.AfterFunc(ctx, func() {
		// Broadcast under the lock so a reader between its ctx check and
		// Wait cannot miss the wake-up.
		w.mu.Lock()
		w.cond.Broadcast()
		w.mu.Unlock()
	})
	return r, nil
}

// follower is the io.ReadCloser returned by NewReader. Read and Close may
// be called from different goroutines; Close unblocks a waiting Read.
type follower struct {
	w    *Writer
	ctx  context.Context
	stop func() bool

	// Guarded by w.mu.
	off     int64
	reading bool // a ReadAt is in progress outside the lock
	closed  bool
}

func (r *follower) Read(p []byte) (int, error) {
	w := r.w
	w.mu.Lock()
	var visible int64
	for {
		if r.closed {
			w.mu.Unlock()
			return 0, fmt.Errorf("cache: read %s: %w", w.dgst, os.ErrClosed)
		}
		if w.state == stateFailed {
			err := w.err
			w.mu.Unlock()
			return 0, err
		}
		visible = w.visibleLocked()
		if r.off < visible {
			break
		}
		if w.state == stateCommitted {
			w.mu.Unlock()
			if r.off > visible {
				return 0, fmt.Errorf("cache: read %s: offset %d is past the end (%d bytes)", w.dgst, r.off, visible)
			}
			return 0, io.EOF
		}
		if err := r.ctx.Err(); err != nil {
			w.mu.Unlock()
			return 0, err
		}
		if len(p) == 0 {
			w.mu.Unlock()
			return 0, nil
		}
		w.cond.Wait()
	}
	n := min(int64(len(p)), visible-r.off)
	off := r.off
	r.reading = true
	w.mu.Unlock()

	m, err := w.f.ReadAt(p[:n], off)

	w.mu.Lock()
	r.reading = false
	r.off += int64(m)
	if r.closed {
		// Close ran during ReadAt and left the release to us.
		w.releaseLocked()
	}
	w.mu.Unlock()
	if m == int(n) {
		return m, nil
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return m, fmt.Errorf("cache: read %s at offset %d: %w", w.dgst, off+int64(m), err)
}

func (r *follower) Close() error {
	r.stop()
	w := r.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if r.closed {
		return nil
	}
	r.closed = true
	w.cond.Broadcast()
	if !r.reading {
		w.releaseLocked()
	}
	return nil
}
