package clientconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// ChunkSize is the most a watched response hands to its connection in one
// write: a client that takes this much per timeout is never cut.
const ChunkSize = 256 << 10

// ErrStalled is the cause of a cut response's context, and what its
// writes return once it is cut.
var ErrStalled = errors.New("clientconn: the client took no response bytes for too long")

// Clock tells the time. Tests pass one they move by hand.
type Clock interface{ Now() time.Time }

type wallClock struct{}

func (wallClock) Now() time.Time { return time.Now() }

// Watchdog cuts responses whose client has stopped reading. Wrap the
// handlers to watch, and call Run (or, in tests, Sweep).
type Watchdog struct {
	timeout time.Duration
	clock   Clock
	log     *slog.Logger

	mu     sync.Mutex
	active map[*response]struct{}

	cuts atomic.Int64
}

// NewWatchdog returns a Watchdog that cuts a response once one of its
// writes has waited timeout by clock (nil: the wall clock). A nil logger
// discards.
func NewWatchdog(timeout time.Duration, clock Clock, log *slog.Logger) (*Watchdog, error) {
	if timeout <= 0 {
		return nil, fmt.Errorf("clientconn: stall timeout %v is not positive", timeout)
	}
	if clock == nil {
		clock = wallClock{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Watchdog{timeout: timeout, clock: clock, log: log, active: make(map[*response]struct{})}, nil
}

// Cuts returns how many responses the watchdog has cut.
func (wd *Watchdog) Cuts() int64 { return wd.cuts.Load() }

// Wrap returns h with its responses watched. h sees a request whose
// context ends with cause ErrStalled when its response is cut; a cut
// response is then aborted (http.ErrAbortHandler), so the client never
// takes a cut body for a whole one.
func (wd *Watchdog) Wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		rw := &response{ResponseWriter: w, wd: wd, rc: http.NewResponseController(w), cancel: cancel, req: r}
		wd.track(rw, true)
		defer wd.track(rw, false)
		rw.serve(h, r.WithContext(ctx))
		if rw.cut.Load() {
			panic(http.ErrAbortHandler)
		}
	})
}

// track adds r to the responses Sweep looks at, or removes it.
func (wd *Watchdog) track(r *response, on bool) {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	if on {
		wd.active[r] = struct{}{}
	} else {
		delete(wd.active, r)
	}
}

// Run sweeps until ctx ends, often enough that a stuck response is cut
// within an eighth of the timeout (at most a second) after it is due.
func (wd *Watchdog) Run(ctx context.Context) {
	t := time.NewTicker(min(max(wd.timeout/8, 10*time.Millisecond), time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			wd.Sweep()
		}
	}
}

// Sweep cuts every response whose current write has waited the timeout,
// and returns how many it cut.
func (wd *Watchdog) Sweep() int {
	now := wd.clock.Now().UnixNano()
	var stalled []*response
	wd.mu.Lock()
	for r := range wd.active {
		if since := r.since.Load(); since != 0 && now-since >= int64(wd.timeout) && !r.cut.Load() {
			stalled = append(stalled, r)
		}
	}
	wd.mu.Unlock()
	cut := 0
	for _, r := range stalled {
		if r.cutOff() {
			cut++
		}
	}
	return cut
}

// response is a watched http.ResponseWriter. It writes in pieces of at
// most ChunkSize, noting when each starts.
type response struct {
	http.ResponseWriter
	wd     *Watchdog
	rc     *http.ResponseController // of the server's own writer
	cancel context.CancelCauseFunc
	req    *http.Request

	since atomic.Int64 // clock's UnixNano at the start of the write under way; 0: none
	cut   atomic.Bool

	mu   sync.Mutex // orders a cut before the handler's return
	done bool       // the handler has returned
}

var (
	_ io.ReaderFrom = (*response)(nil)
	_ http.Flusher  = (*response)(nil)
)

// begin notes that a write starts, unless the response is cut.
func (r *response) begin() error {
	if r.cut.Load() {
		return ErrStalled
	}
	r.since.Store(max(r.wd.clock.Now().UnixNano(), 1))
	return nil
}

func (r *response) end() { r.since.Store(0) }

// cutOff ends the request's context, so what the handler waits on lets
// go, and fails the write blocked now: a write deadline in the past
// unblocks it at once (HTTP/1: the connection; HTTP/2: the stream). It
// reports whether it cut: not once the handler has returned.
func (r *response) cutOff() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done || !r.cut.CompareAndSwap(false, true) {
		return false
	}
	r.wd.cuts.Add(1)
	r.cancel(ErrStalled)
	if err := r.rc.SetWriteDeadline(time.Unix(1, 0)); err != nil {
		r.wd.log.Warn("cannot cut a stalled client's response", "client", r.req.RemoteAddr, "path", r.req.URL.Path, "error", err)
		return true
	}
	r.wd.log.Warn("client took no response bytes for too long: response cut, connection closed",
		"client", r.req.RemoteAddr, "method", r.req.Method, "path", r.req.URL.Path, "timeout", r.wd.timeout)
	return true
}

// serve runs h. Once h returns (or panics) the server's writer may serve
// another request (HTTP/1) or be gone (HTTP/2): no cut may reach it then.
func (r *response) serve(h http.Handler, req *http.Request) {
	defer func() {
		r.mu.Lock()
		r.done = true
		r.mu.Unlock()
	}()
	h.ServeHTTP(r, req)
}

func (r *response) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return r.ResponseWriter.Write(p)
	}
	var total int
	for len(p) > 0 {
		c := p[:min(len(p), ChunkSize)]
		if err := r.begin(); err != nil {
			return total, err
		}
		n, err := r.ResponseWriter.Write(c)
		r.end()
		total += n
		if err != nil {
			return total, err
		}
		p = p[n:]
	}
	return total, nil
}

// ReadFrom keeps the server's io.ReaderFrom (sendfile for files) while
// handing over at most ChunkSize bytes per call: a file, or a file behind
// an io.LimitedReader, is passed on as an io.LimitedReader of the file.
func (r *response) ReadFrom(src io.Reader) (int64, error) {
	rf, ok := r.ResponseWriter.(io.ReaderFrom)
	if !ok {
		return io.Copy(writerOnly{r}, src)
	}
	var total int64
	outer, _ := src.(*io.LimitedReader)
	chunk := new(io.LimitedReader) // one for every piece: no garbage per piece
	for {
		chunk.R, chunk.N = src, ChunkSize
		if outer != nil {
			if outer.N <= 0 {
				return total, nil
			}
			chunk.R, chunk.N = outer.R, min(outer.N, ChunkSize)
		}
		want := chunk.N
		if err := r.begin(); err != nil {
			return total, err
		}
		n, err := rf.ReadFrom(chunk)
		r.end()
		total += n
		if outer != nil {
			outer.N -= n
		}
		if err != nil || n < want {
			return total, err // n < want: src ended
		}
	}
}

func (r *response) Flush() {
	if r.begin() != nil {
		return
	}
	_ = r.rc.Flush()
	r.end()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (r *response) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// writerOnly hides ReadFrom so io.Copy does not recurse.
type writerOnly struct{ io.Writer }
