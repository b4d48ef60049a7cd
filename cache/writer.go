package cache

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"sync"
	"syscall"

	"github.com/opencontainers/go-digest"
)

type writerState int

const (
	stateWriting    writerState = iota
	stateCommitting             // being verified; Write and Abort refused
	stateVerified               // digest verified, being stored: followers see every byte
	stateCommitted              // terminal: followers see every byte, then io.EOF
	stateFailed                 // terminal: followers get w.err
)

// Writer receives one entry being downloaded. It is safe for one goroutine
// to Write/Commit/Abort while any number of other goroutines read through
// NewReader. Every Writer must end with Commit or Abort; until then its temp
// file stays in <Dir>/tmp.
//
// When the disk is full (a write fails with ENOSPC or EDQUOT, or free
// space falls below the store's reserve) the writer relays: the bytes
// already in the temp file stay readable there, later ones go through a
// ring of relayWindow bytes in memory, and the entry is verified but not
// kept (see "Disk full" in the package documentation).
type Writer struct {
	s         *Store
	dgst      digest.Digest
	size      int64 // declared, or -1
	mediaType string
	tmpPath   string    // "" when no temp file was created (disk full)
	procPath  string    // /proc/self/fd/<n> of f: reopens the inode whatever its name
	f         *os.File  // opened read-write; followers ReadAt on it; nil with tmpPath ""
	h         hash.Hash // used only by the hasher goroutine until hashDone
	// writeAt writes to the temp file: f.WriteAt, or a test's fault.
	writeAt func(p []byte, off int64) (int, error)
	// nextCheck is the offset at which Write next checks free space.
	nextCheck int64

	mu      sync.Mutex
	cond    sync.Cond // on mu; broadcast when written or state changes
	written int64
	// hashed is how many bytes the hasher has hashed; hashDone is set when
	// it has stopped (hashErr says why, if it failed).
	hashed   int64
	hashDone bool
	hashErr  error
	state    writerState
	err      error // why the writer failed, for followers
	// refs counts users of f: one for the writer until it finishes, one
	// for the hasher until it stops, one per open follower. The last one
	// closes f.
	refs int
	// followers are the open readers; in relay mode the slowest of them
	// (and the hasher) holds back Write.
	followers map[*follower]struct{}
	// relay says the disk was full: bytes [0, diskEnd) are in the temp
	// file, later ones in ring, where offset o sits at (o-diskEnd) mod
	// len(ring) while o >= written-len(ring).
	relay   bool
	diskEnd int64
	ring    []byte
}

// relayWindow is the bytes a relaying writer keeps in memory: Write waits
// while the slowest reader is this far behind.
const relayWindow = 4 << 20

// ErrNotBuffered is returned by a reader of a relaying Writer (the disk was
// full) asked for bytes that have already left its window in memory: a
// reader that started too late, or one whose context ended and that was
// no longer waited for. It never gets wrong bytes.
var ErrNotBuffered = errors.New("cache: bytes no longer buffered (disk full, relayed from memory)")

// isDiskFull reports whether err says the filesystem has no room.
func isDiskFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Digest returns the digest the writer was created for.
func (w *Writer) Digest() digest.Digest { return w.dgst }

// Size returns the declared size, or -1 if it is unknown.
func (w *Writer) Size() int64 { return w.size }

// Err returns why the writer failed, or nil while it has not.
func (w *Writer) Err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.state == stateFailed {
		return w.err
	}
	return nil
}

// Written returns the number of bytes written so far.
func (w *Writer) Written() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.written
}

// Write appends p to the temp file; a goroutine of the writer hashes it
// from there, in parallel with the next Write. Writing past a known size
// fails the writer with ErrSizeMismatch (followers get that error too).
// When the disk is full Write switches the writer to relay mode instead of
// failing; it then blocks while the slowest reader is relayWindow bytes
// behind.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if w.state != stateWriting {
		err := w.finishedErrLocked("write")
		w.mu.Unlock()
		return 0, err
	}
	off, relay := w.written, w.relay
	w.mu.Unlock()
	if w.size >= 0 && off+int64(len(p)) > w.size {
		err := fmt.Errorf("%w: %s: declared %d bytes, got at least %d", ErrSizeMismatch, w.dgst, w.size, off+int64(len(p)))
		if w.fail(err, stateWriting) {
			w.s.stats.sizeMismatches.Add(1)
		}
		return 0, err
	}
	if !relay && off+int64(len(p)) >= w.nextCheck {
		// Free space is checked every diskCheckEvery bytes, so the
		// index keeps its reserve (store.go, headroom).
		w.nextCheck = off + int64(len(p)) + diskCheckEvery
		if free, low := w.s.lowOnSpace(); low {
			w.startRelay(fmt.Sprintf("%d bytes free, below the reserve of %d", free, w.s.minFree))
			relay = true
		}
	}
	if relay {
		return w.relayWrite(p)
	}
	// WriteAt at our own offset: followers' ReadAt and this never share a
	// file position.
	n, err := w.writeAt(p, off)
	w.mu.Lock()
	w.written += int64(n)
	w.cond.Broadcast()
	w.mu.Unlock()
	if err != nil && isDiskFull(err) {
		w.startRelay(err.Error())
		m, err := w.relayWrite(p[n:])
		return n + m, err
	}
	if err != nil {
		err = fmt.Errorf("cache: write %s to temp file %s: %w", w.dgst, w.tmpPath, err)
		w.fail(err, stateWriting)
		return n, err
	}
	return n, nil
}

// startRelay switches the writer to relay mode: what is written from now
// on goes through memory only, and the entry will not be kept.
func (w *Writer) startRelay(why string) {
	w.mu.Lock()
	if w.relay {
		w.mu.Unlock()
		return
	}
	w.relay, w.diskEnd, w.ring = true, w.written, make([]byte, w.s.ringSize)
	w.mu.Unlock()
	w.s.stats.diskFull.Add(1)
	w.s.log.Warn("cache: disk full; streaming the download without storing it",
		"digest", w.dgst, "offset", w.diskEnd, "reason", why)
}

// relayWrite appends p to the ring, in chunks, waiting before each until
// every reader (the hasher and the open followers) is close enough behind
// that the chunk overwrites nothing still needed.
func (w *Writer) relayWrite(p []byte) (int, error) {
	var total int
	for len(p) > 0 {
		c := p[:min(len(p), len(w.ring)/4)]
		w.mu.Lock()
		for w.state == stateWriting && w.written+int64(len(c))-max(w.diskEnd, w.slowestLocked()) > int64(len(w.ring)) {
			w.cond.Wait()
		}
		if w.state != stateWriting {
			err := w.finishedErrLocked("write")
			w.mu.Unlock()
			return total, err
		}
		w.copyToRingLocked(c, w.written)
		w.written += int64(len(c))
		w.cond.Broadcast()
		w.mu.Unlock()
		total += len(c)
		p = p[len(c):]
	}
	return total, nil
}

// slowestLocked is the lowest offset a reader still needs: the hasher's
// (until it stops) and every open follower's whose context is live. A
// follower whose context ended is not waited for; if it reads again it
// gets ErrNotBuffered.
func (w *Writer) slowestLocked() int64 {
	low := w.written
	if !w.hashDone {
		low = min(low, w.hashed)
	}
	for r := range w.followers {
		if r.ctx.Err() == nil {
			low = min(low, r.off)
		}
	}
	return low
}

// lowestBufferedLocked is the lowest offset readable in relay mode: below
// diskEnd bytes come from the file, while the ring still holds diskEnd.
func (w *Writer) lowestBufferedLocked() int64 {
	return max(w.diskEnd, w.written-int64(len(w.ring)))
}

func (w *Writer) copyToRingLocked(p []byte, off int64) {
	i := int((off - w.diskEnd) % int64(len(w.ring)))
	n := copy(w.ring[i:], p)
	copy(w.ring, p[n:])
}

// copyFromRingLocked fills p from the ring at off, or fails if those
// bytes have left it.
func (w *Writer) copyFromRingLocked(p []byte, off int64) error {
	if off < w.lowestBufferedLocked() {
		return fmt.Errorf("cache: read %s at offset %d: %w", w.dgst, off, ErrNotBuffered)
	}
	i := int((off - w.diskEnd) % int64(len(w.ring)))
	n := copy(p, w.ring[i:])
	copy(p[n:], w.ring)
	return nil
}

// Commit verifies the entry and stores it. A size or digest mismatch
// returns an error wrapping ErrSizeMismatch or ErrDigestMismatch, removes
// the temp file and fails the followers. Once the digest is verified,
// followers may read every byte; then the file is fsynced, renamed into
// place and indexed (durably) before Commit returns, after evicting least
// recently used entries to make room. kept is false when the entry alone
// exceeds MaxSize, or the room pinned content leaves of it: it was
// verified but not stored. If the digest is already
// stored, the new copy is dropped and kept is true. If storing fails, Commit
// returns kept=false and the error; followers still read the verified
// bytes to the end. A writer that relayed because the disk was full, or
// whose install finds the disk full, returns kept=false and no error: the
// bytes were good, there was no room for them.
func (w *Writer) Commit() (kept bool, err error) {
	w.mu.Lock()
	if w.state != stateWriting {
		err := w.finishedErrLocked("commit")
		w.mu.Unlock()
		return false, err
	}
	w.state = stateCommitting
	w.cond.Broadcast() // the hasher stops waiting for more bytes
	written := w.written
	w.mu.Unlock()

	if w.size >= 0 && written != w.size {
		err := fmt.Errorf("%w: %s: declared %d bytes, got %d", ErrSizeMismatch, w.dgst, w.size, written)
		w.fail(err, stateCommitting)
		w.s.stats.sizeMismatches.Add(1)
		return false, err
	}
	w.mu.Lock()
	for !w.hashDone {
		w.cond.Wait()
	}
	hashErr := w.hashErr
	w.mu.Unlock()
	if hashErr != nil {
		w.fail(hashErr, stateCommitting)
		return false, hashErr
	}
	if got := digest.NewDigestFromBytes(digest.SHA256, w.h.Sum(nil)); got != w.dgst {
		err := fmt.Errorf("%w: want %s, got %s (%d bytes)", ErrDigestMismatch, w.dgst, got, written)
		w.fail(err, stateCommitting)
		w.s.stats.digestMismatches.Add(1)
		return false, err
	}
	// The bytes are verified: followers may have the last one now, while
	// the file is made durable and indexed.
	w.mu.Lock()
	w.state = stateVerified
	relay := w.relay
	w.cond.Broadcast()
	w.mu.Unlock()

	if relay {
		w.s.dropTemp(w.tmpPath)
	} else if kept, err = w.s.admit(w.dgst, written, w.mediaType, w.f, w.tmpPath); err != nil {
		// Followers keep reading verified bytes; only the store lost.
		w.s.dropTemp(w.tmpPath)
		kept = false
		if isDiskFull(err) {
			w.s.stats.diskFull.Add(1)
			w.s.log.Warn("cache: disk full; verified download not stored", "digest", w.dgst, "error", err)
			err = nil
		}
	}
	w.mu.Lock()
	w.state = stateCommitted
	w.cond.Broadcast()
	w.releaseLocked()
	w.mu.Unlock()
	return kept, err
}

// hashBufferSize is how much the hasher reads from the temp file at once.
const hashBufferSize = 256 << 10

// hashLoop hashes the temp file as it grows, reading back what Write put
// there, so that hashing runs in parallel with receiving and writing; in
// relay mode it hashes the ring from diskEnd on. It ends when the writer
// fails, or when Commit has started and every written byte is hashed.
func (w *Writer) hashLoop() {
	buf := make([]byte, hashBufferSize)
	var off int64
	var err error
	for err == nil {
		w.mu.Lock()
		for off >= w.written && w.state == stateWriting {
			w.cond.Wait()
		}
		end, state := w.written, w.state
		if state == stateFailed || off >= end {
			w.mu.Unlock()
			break // failed, or Commit is waiting and everything is hashed
		}
		n := int(min(int64(len(buf)), end-off))
		if w.relay && off >= w.diskEnd {
			// Copied under the lock: Write waits for w.hashed, so the
			// ring still holds these bytes.
			err = w.copyFromRingLocked(buf[:n], off)
			if err == nil {
				off += int64(n)
				w.hashed = off
				w.cond.Broadcast()
			}
			w.mu.Unlock()
			w.h.Write(buf[:n])
			continue
		}
		if w.relay {
			n = int(min(int64(n), w.diskEnd-off))
		}
		w.mu.Unlock()
		var m int
		m, err = w.f.ReadAt(buf[:n], off)
		w.h.Write(buf[:m])
		off += int64(m)
		if err == io.EOF && m == n {
			err = nil
		}
		if err != nil {
			err = fmt.Errorf("cache: hash %s: read temp file at %d: %w", w.dgst, off, err)
		}
		w.mu.Lock()
		w.hashed = off
		w.cond.Broadcast()
		w.mu.Unlock()
	}
	w.mu.Lock()
	w.hashDone, w.hashErr = true, err
	w.cond.Broadcast()
	w.releaseLocked()
	w.mu.Unlock()
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
	if w.refs == 0 && w.f != nil {
		if err := w.f.Close(); err != nil {
			w.s.log.Warn("cache: close temp file", "path", w.tmpPath, "error", err)
		}
	}
}

// visibleLocked is how many bytes followers may read now. Until the entry
// is committed the final byte is held back, so a follower can never receive
// a complete body that then fails verification.
func (w *Writer) visibleLocked() int64 {
	if w.state == stateCommitted || w.state == stateVerified {
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
	if w.relay && offset < w.lowestBufferedLocked() && w.lowestBufferedLocked() > w.diskEnd {
		// It would reach bytes already gone from memory.
		return nil, fmt.Errorf("cache: reader for %s at offset %d: %w", w.dgst, offset, ErrNotBuffered)
	}
	w.refs++
	r := &follower{w: w, ctx: ctx, off: offset}
	if w.followers == nil {
		w.followers = make(map[*follower]struct{})
	}
	w.followers[r] = struct{}{}
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

// waitLocked blocks until bytes past r.off are visible and returns how
// many bytes are; it returns io.EOF at the end of a finished entry, or why
// reading must stop. w.mu must be held.
func (r *follower) waitLocked() (visible int64, err error) {
	w := r.w
	for {
		if r.closed {
			return 0, fmt.Errorf("cache: read %s: %w", w.dgst, os.ErrClosed)
		}
		if w.state == stateFailed {
			return 0, w.err
		}
		visible = w.visibleLocked()
		if r.off < visible {
			return visible, nil
		}
		if w.state == stateCommitted || w.state == stateVerified {
			if r.off > visible {
				return 0, fmt.Errorf("cache: read %s: offset %d is past the end (%d bytes)", w.dgst, r.off, visible)
			}
			return 0, io.EOF
		}
		if err := r.ctx.Err(); err != nil {
			return 0, err
		}
		w.cond.Wait()
	}
}

func (r *follower) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	w := r.w
	w.mu.Lock()
	visible, err := r.waitLocked()
	if err != nil {
		w.mu.Unlock()
		return 0, err
	}
	n := min(int64(len(p)), visible-r.off)
	off := r.off
	if w.relay && off >= w.diskEnd {
		err := w.copyFromRingLocked(p[:n], off)
		if err == nil {
			r.off += n
			w.cond.Broadcast() // Write may be waiting for us
		}
		w.mu.Unlock()
		if err != nil {
			return 0, err
		}
		return int(n), nil
	}
	if w.relay {
		n = min(n, w.diskEnd-off)
	}
	r.reading = true
	w.mu.Unlock()

	m, err := w.f.ReadAt(p[:n], off)

	w.mu.Lock()
	r.reading = false
	r.off += int64(m)
	w.cond.Broadcast()
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

// WriteTo copies the entry to dst as it lands. When dst takes a file
// through io.ReaderFrom (an HTTP response over TCP does, with sendfile),
// the bytes go from the page cache to the socket without a copy through
// user space; the reader then works on its own open file description of
// the same inode, so its file offset is its own. Bytes relayed through
// memory (disk full) are copied through a buffer.
func (r *follower) WriteTo(dst io.Writer) (int64, error) {
	rf, ok := dst.(io.ReaderFrom)
	var f *os.File
	if ok && r.w.f == nil {
		ok = false
	}
	if ok {
		var err error
		if f, err = os.Open(r.w.procPath); err != nil {
			ok = false // no /proc: copy through a buffer
		} else {
			defer f.Close()
		}
	}
	if !ok {
		return io.CopyBuffer(dst, struct{ io.Reader }{r}, make([]byte, 256<<10))
	}
	w := r.w
	var total int64
	var buf []byte // for relayed bytes
	for {
		w.mu.Lock()
		visible, err := r.waitLocked()
		off := r.off
		relayed := err == nil && w.relay && off >= w.diskEnd
		if err == nil && w.relay && !relayed {
			visible = min(visible, w.diskEnd)
		}
		w.mu.Unlock()
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
		if relayed {
			if buf == nil {
				buf = make([]byte, 256<<10)
			}
			m, err := r.Read(buf)
			if m > 0 {
				var werr error
				m, werr = dst.Write(buf[:m])
				total += int64(m)
				if werr != nil {
					return total, werr
				}
			}
			if err == io.EOF {
				return total, nil
			}
			if err != nil {
				return total, err
			}
			continue
		}
		if _, err := f.Seek(off, io.SeekStart); err != nil {
			return total, fmt.Errorf("cache: read %s at offset %d: %w", w.dgst, off, err)
		}
		n := visible - off
		m, err := rf.ReadFrom(&io.LimitedReader{R: f, N: n})
		total += m
		w.mu.Lock()
		r.off += m
		w.cond.Broadcast() // Write may be waiting for us (relay mode)
		w.mu.Unlock()
		if err != nil {
			return total, err
		}
		if m < n {
			return total, fmt.Errorf("cache: read %s at offset %d: %w", w.dgst, off+m, io.ErrUnexpectedEOF)
		}
	}
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
	delete(w.followers, r)
	w.cond.Broadcast()
	if !r.reading {
		w.releaseLocked()
	}
	return nil
}
