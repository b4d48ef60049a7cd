package proxy

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// Upload sessions and the tee.
//
// An uploadTable tracks the upload sessions whose bytes are being staged,
// one upload per session: its staging file, unlinked at once, and how
// many of its bytes upstream has confirmed. A tee is an upload request's
// body as upstream reads it, copying each read to a session's staging
// file or to a cache entry (push.go decides which) without ever failing
// the upload itself.

// Limits of upload sessions.
const (
	// uploadIdle drops an upload session nobody has used for this long.
	uploadIdle = time.Hour
	// maxUploads caps the sessions tracked at once; past it, uploads
	// still pass through but are not admitted.
	maxUploads = 1024
	// teeSettle is how long a success waits for the upstream request to
	// finish reading the body it copied.
	teeSettle = 10 * time.Second
)

// errStagingFull says the staging files hold as much as the cache may.
var errStagingFull = errors.New("staging files are at the cache's size budget")

// uploadTable tracks the upload sessions whose bytes are being staged.
type uploadTable struct {
	log   *slog.Logger
	dir   string        // staging files' directory; "": os.TempDir()
	idle  time.Duration // a session unused this long is dropped
	max   int           // sessions at most
	limit int64         // staged bytes at most, all sessions together

	staged atomic.Int64 // bytes in staging files

	mu       sync.Mutex
	sessions map[string]*upload
}

// newUploadTable returns a table whose staging files go to dir (or the
// system's temp dir) and together hold at most limit bytes: the store's
// budget, since more would not be kept anyway.
func newUploadTable(limit int64, log *slog.Logger, dir string) *uploadTable {
	return &uploadTable{log: log, dir: dir, idle: uploadIdle, max: maxUploads, limit: limit,
		sessions: make(map[string]*upload)}
}

// upload is one upload session's staged bytes.
type upload struct {
	t   *uploadTable
	key string
	// busy is held by the request using the session; the fields below
	// are used under it (stage runs under it too, from the upstream
	// request's body reader, which the tee orders with the request).
	busy     sync.Mutex
	f        *os.File // unlinked staging file; nil until the first byte
	size     int64    // bytes staged and confirmed by upstream
	reserved int64    // bytes counted in t.staged
	dropped  bool
	timer    *time.Timer
	// clash says another request came while busy was held: bytes went
	// past the staging file, which no longer holds the upload.
	clash atomic.Bool
}

// start tracks a new upload session, unless the table is full.
func (t *uploadTable) start(key string) {
	u := &upload{t: t, key: key}
	t.mu.Lock()
	defer t.mu.Unlock()
	if old := t.sessions[key]; old != nil || len(t.sessions) >= t.max {
		if old == nil {
			t.log.Debug("too many uploads in progress; this one will not be cached", "upload", key)
		}
		return
	}
	t.sessions[key] = u
	u.timer = time.AfterFunc(t.idle, func() { t.expire(u) })
}

// acquire returns the session of key, held for the caller, or nil when
// there is none or another request is using it.
func (t *uploadTable) acquire(key string) *upload {
	t.mu.Lock()
	u := t.sessions[key]
	t.mu.Unlock()
	if u == nil {
		return nil
	}
	if !u.busy.TryLock() {
		u.clash.Store(true)
		return nil
	}
	if u.dropped {
		u.busy.Unlock()
		return nil
	}
	return u
}

// release ends a request's hold on u.
func (t *uploadTable) release(u *upload) {
	if u.clash.Load() {
		t.drop(u)
	}
	if !u.dropped {
		u.timer.Reset(t.idle)
	}
	u.busy.Unlock()
}

// drop forgets u and its staged bytes; busy must be held.
func (t *uploadTable) drop(u *upload) {
	if u.dropped {
		return
	}
	u.dropped = true
	u.timer.Stop()
	t.mu.Lock()
	if t.sessions[u.key] == u {
		delete(t.sessions, u.key)
	}
	t.mu.Unlock()
	if u.f != nil {
		u.f.Close()
	}
	t.staged.Add(-u.reserved)
	u.reserved = 0
}

// expire drops a session left idle, or waits again while it is in use.
func (t *uploadTable) expire(u *upload) {
	if !u.busy.TryLock() {
		u.timer.Reset(t.idle)
		return
	}
	if !u.dropped {
		t.log.Debug("upload idle too long; its staged bytes are dropped", "upload", u.key)
		t.drop(u)
	}
	u.busy.Unlock()
}

// empty reports whether nothing of the upload has been staged.
func (u *upload) empty() bool { return u.size == 0 && u.f == nil }

// stage appends upload bytes to the staging file.
func (u *upload) stage(b []byte) error {
	if u.f == nil {
		f, err := os.CreateTemp(u.t.dir, "ecr-mirror-upload-*")
		if err != nil {
			return err
		}
		// Unlinked at once: it is read through f, and a crash leaves
		// nothing behind.
		if err := os.Remove(f.Name()); err != nil {
			f.Close()
			return err
		}
		u.f = f
	}
	n := int64(len(b))
	if u.t.staged.Add(n) > u.t.limit {
		u.t.staged.Add(-n)
		return errStagingFull
	}
	u.reserved += n
	_, err := u.f.Write(b)
	return err
}

// tee is an upload body that copies what upstream reads of it. Copying
// never fails the upload: a copy error only stops the copy.
type tee struct {
	r      io.Reader
	closed chan struct{} // closed when the upstream request is done with the body
	once   sync.Once

	mu     sync.Mutex
	copyTo func([]byte) error // nil: not copying (any more)
	read   int64
	copied int64
	eof    bool
	err    error // why copying stopped early
}

func newTee(r io.Reader, copyTo func([]byte) error) *tee {
	return &tee{r: r, copyTo: copyTo, closed: make(chan struct{})}
}

func (t *tee) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	t.mu.Lock()
	t.read += int64(n)
	if n > 0 && t.copyTo != nil {
		if cerr := t.copyTo(p[:n]); cerr != nil {
			t.copyTo, t.err = nil, cerr
		} else {
			t.copied += int64(n)
		}
	}
	if err == io.EOF {
		t.eof = true
	}
	t.mu.Unlock()
	return n, err
}

// Close is called by the HTTP transport when it is done with the body; the
// client's body itself is the server's to close.
func (t *tee) Close() error {
	t.once.Do(func() { close(t.closed) })
	return nil
}

// stop ends the copy at once.
func (t *tee) stop() {
	t.mu.Lock()
	t.copyTo = nil
	t.mu.Unlock()
}

// finish ends the copy once the upstream request is done with the body
// and reports how much was copied and whether that was all of it.
func (t *tee) finish(ctx context.Context) (copied int64, complete bool) {
	timer := time.NewTimer(teeSettle)
	defer timer.Stop()
	select {
	case <-t.closed:
	case <-ctx.Done():
	case <-timer.C:
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	complete = t.copyTo != nil && t.eof && t.copied == t.read
	t.copyTo = nil
	return t.copied, complete
}
