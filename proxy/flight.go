package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// errStored says the digest is already in the store: read it from there.
var errStored = errors.New("already stored")

// flight is one upstream download of a digest into the store.
type flight struct {
	dgst  digest.Digest
	ready chan struct{} // closed once w is set or err is final
	done  chan struct{} // closed once the flight has left the proxy's map
	// Set before ready is closed:
	err       error
	w         *cache.Writer
	mediaType string
}

// failed reports whether the download has failed for good: a new request
// must start another rather than join it.
func (f *flight) failed() bool {
	select {
	case <-f.ready:
		return f.err != nil || f.w.Err() != nil
	default:
		return false
	}
}

// wait blocks until the download has started streaming, or failed.
func (f *flight) wait(ctx context.Context) error {
	select {
	case <-f.ready:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// flight returns the download in flight for dgst, if any is still going.
func (p *Proxy) flight(dgst digest.Digest) *flight {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fl := p.flights[dgst]; fl != nil && !fl.failed() {
		return fl
	}
	return nil
}

// startFlight returns the download of dgst, starting it unless one is
// under way (joined) or the digest is already stored (errStored).
func (p *Proxy) startFlight(dgst digest.Digest, path, kind string, hdr http.Header) (fl *flight, joined bool, err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if fl := p.flights[dgst]; fl != nil && !fl.failed() {
		return fl, true, nil
	}
	// Checked under the lock: a flight leaves the map only after its
	// content is committed, so a digest is either stored or in flight.
	if _, err := p.store.Stat(dgst); err == nil {
		return nil, false, errStored
	}
	if p.bg.Err() != nil {
		return nil, false, registry.Errorf(registry.CodeUnavailable, "the mirror is shutting down")
	}
	if p.maxDownloads > 0 && len(p.flights) >= p.maxDownloads {
		p.stats.Refused.Add(1)
		e := registry.Errorf(registry.CodeTooManyRequests, "the mirror is already running its limit of %d upstream downloads; try again shortly", p.maxDownloads)
		e.Header = http.Header{"Retry-After": {"1"}}
		return nil, false, e
	}
	fl = &flight{dgst: dgst, ready: make(chan struct{}), done: make(chan struct{})}
	p.flights[dgst] = fl
	p.inflight.Add(1)
	go p.download(fl, path, kind, hdr)
	return fl, false, nil
}

// download fetches a flight's content into the store. It runs on the
// proxy's own context: a client hanging up does not stop it, so the next
// client finds the content cached.
func (p *Proxy) download(fl *flight, path, kind string, hdr http.Header) {
	defer p.inflight.Done()
	start := time.Now()
	p.stats.Downloads.Add(1)
	err := p.fill(fl, path, kind, hdr)
	p.mu.Lock()
	if p.flights[fl.dgst] == fl { // a failed flight may have been replaced
		delete(p.flights, fl.dgst)
	}
	p.mu.Unlock()
	close(fl.done)
	if err != nil {
		p.stats.DownloadFailures.Add(1) // the store counts digest mismatches
		p.log.Warn("download failed; nothing was cached", "digest", fl.dgst, "path", path, "error", err)
		return
	}
	p.log.Debug("download complete", "digest", fl.dgst, "path", path, "bytes", fl.w.Written(), "duration", time.Since(start))
}

// fill runs the download and settles the flight: every follower sees the
// bytes, or the error.
func (p *Proxy) fill(fl *flight, path, kind string, hdr http.Header) (err error) {
	started := false
	defer func() {
		if !started {
			fl.err = err
			close(fl.ready)
		}
	}()
	ctx, cancel := context.WithCancelCause(p.bg)
	defer cancel(nil)
	resp, err := p.up.do(ctx, http.MethodGet, path, hdr, kind, http.StatusOK)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body := io.Reader(newStallReader(resp.Body, p.stallTimeout, cancel))
	if kind == "manifest" {
		if resp.ContentLength > p.manifestLimit {
			return manifestTooLarge(path, resp.ContentLength, p.manifestLimit)
		}
		// A writer with an unknown size would take any length: cap it.
		body = io.LimitReader(body, p.manifestLimit)
	}
	w, err := p.store.Create(fl.dgst, resp.ContentLength, mediaType(resp, kind))
	if err != nil {
		return fmt.Errorf("creating cache entry for %s: %w", fl.dgst, err)
	}
	fl.w, fl.mediaType, started = w, mediaType(resp, kind), true
	close(fl.ready)

	buf := p.bufs.Get().(*[]byte)
	src := &readErrors{r: body}
	n, err := io.CopyBuffer(w, src, *buf)
	p.bufs.Put(buf)
	p.stats.UpstreamBytes.Add(n)
	switch {
	case err != nil && src.err != nil: // upstream failed
		if cause := context.Cause(ctx); errors.Is(cause, errStalled) {
			err = cause
		}
		err = transportError(http.MethodGet, path, err)
		w.Abort(err)
		return err
	case err != nil: // the store failed (disk full, ...)
		w.Abort(err)
		return &registry.Error{Code: registry.CodeUnavailable,
			Message: fmt.Sprintf("the mirror could not store %s", fl.dgst), Internal: err.Error()}
	}
	if _, err := w.Commit(); err != nil {
		return err
	}
	return nil
}

// readErrors records the error of the reader it wraps, telling upstream
// failures from the store's; it also hides WriterTo, so CopyBuffer uses
// the pooled buffer.
type readErrors struct {
	r   io.Reader
	err error
}

func (r *readErrors) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// errStalled says an upstream body sent nothing for too long.
var errStalled = errors.New("upstream sent no data for too long")

// stallReader cancels a download whose upstream body stops sending: a
// half-open connection would otherwise hold every client of the digest
// forever.
type stallReader struct {
	r       io.Reader
	timeout time.Duration
	timer   *time.Timer
}

func newStallReader(r io.Reader, timeout time.Duration, cancel context.CancelCauseFunc) *stallReader {
	return &stallReader{r: r, timeout: timeout, timer: time.AfterFunc(timeout, func() {
		cancel(fmt.Errorf("%w (%v)", errStalled, timeout))
	})}
}

func (s *stallReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	if n > 0 {
		s.timer.Reset(s.timeout)
	}
	if err != nil {
		s.timer.Stop()
	}
	return n, err
}
