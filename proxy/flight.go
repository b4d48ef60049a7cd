package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// errStored says the digest is already in the store: read it from there.
var errStored = errors.New("already stored")

// flight is one upstream download of a digest into the store.
type flight struct {
	dgst  digest.Digest
	host  string        // the upstream it is downloaded from (Proxy.host)
	name  string        // the repository it is downloaded from
	ready chan struct{} // closed once w is set or err is final
	done  chan struct{} // closed once the flight has left the proxy's map
	// Set before ready is closed:
	err        error
	w          *cache.Writer
	mediaType  string
	fromShared bool // filled from the shared tier, not upstream
	fromPeer   bool // filled from the digest's owner among the peers
	// resumedUpstream: a peer's body was cut and upstream gave the rest
	// (set and read by the download's goroutine only).
	resumedUpstream bool
	// askingPeer is true while the download waits on a peer's answer: a
	// peer's request does not join it (startFlight), or two replicas
	// that each take the other for the owner would wait on each other.
	askingPeer atomic.Bool
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

// startFlight returns the download of req.Dgst from t (req's content in
// req.Name), starting it unless one is under way (joined: once req may
// follow it, mayJoin) or the digest is already stored (errStored).
func (p *Proxy) startFlight(ctx context.Context, req *registry.Request, t target) (fl *flight, joined bool, err error) {
	fl, joined, err = p.startFlightLocked(req.Dgst, t)
	if joined && t.noPeers && fl.askingPeer.Load() {
		return nil, false, registry.Errorf(registry.CodeUnavailable, "this replica is asking another peer for %s", req.Dgst)
	}
	if joined {
		if err := p.mayJoin(ctx, req, fl, t.kind); err != nil {
			return nil, false, err
		}
	}
	return fl, joined, err
}

func (p *Proxy) startFlightLocked(dgst digest.Digest, t target) (fl *flight, joined bool, err error) {
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
	if !p.slots.take() {
		p.stats.Refused.Add(1)
		e := registry.Errorf(registry.CodeTooManyRequests, "the mirror is already running its limit of %d upstream downloads; try again shortly", p.maxDownloads)
		e.Header = http.Header{"Retry-After": {"1"}}
		return nil, false, e
	}
	fl = &flight{dgst: dgst, host: p.host, name: t.repo, ready: make(chan struct{}), done: make(chan struct{})}
	p.flights[dgst] = fl
	p.inflight.Add(1)
	go p.download(fl, t)
	return fl, false, nil
}

// download fetches a flight's content into the store. It runs on the
// proxy's own context: a client hanging up does not stop it, so the next
// client finds the content cached.
func (p *Proxy) download(fl *flight, t target) {
	defer p.inflight.Done()
	start := time.Now()
	err := p.fill(fl, t)
	p.mu.Lock()
	if p.flights[fl.dgst] == fl { // a failed flight may have been replaced
		delete(p.flights, fl.dgst)
	}
	p.mu.Unlock()
	p.slots.give()
	close(fl.done)
	if err != nil {
		p.stats.DownloadFailures.Add(1) // the store counts digest mismatches
		p.log.Warn("download failed; nothing was cached", "digest", fl.dgst, "path", t.path(), "error", err)
		if errors.Is(err, errSharedCorrupt) || errors.Is(err, errPeerCorrupt) {
			p.refetch(fl, t)
		}
		return
	}
	if t.kind == kindManifest {
		// Stored now, so what it references is known: link that too
		// (and tell the shared tier, unless it came from there).
		p.linkFrom(fl.name, fl.dgst, !fl.fromShared)
	}
	if !fl.fromShared && (!fl.fromPeer || fl.resumedUpstream) {
		p.writeShared(fl.dgst) // a peer's content is the owner's to write
	}
	p.log.Debug("download complete", "digest", fl.dgst, "path", t.path(), "bytes", fl.w.Written(), "duration", time.Since(start))
}

// fill runs the download and settles the flight: every follower sees the
// bytes, or the error. The shared tier, if any, is read before upstream
// (sharedtier.go), then the digest's owner among the peers (peertier.go)
// and, if the owner failed, the shared tier again (it may have written
// the digest meanwhile). A blob whose upstream body stops short is
// resumed where it stopped (resume.go), into the same writer.
func (p *Proxy) fill(fl *flight, t target) (err error) {
	started := false
	defer func() {
		if !started {
			fl.err = err
			close(fl.ready)
		}
	}()
	if done, err := p.fillTiers(fl, t, &started); done {
		return err
	}
	p.stats.Downloads.Add(1)
	ctx, cancel := context.WithCancelCause(p.bg)
	resp, err := p.up.do(ctx, http.MethodGet, t.path(), t.accept, t.kind, http.StatusOK)
	if err != nil {
		cancel(nil)
		return err
	}
	p.link(fl.name, fl.dgst) // upstream answered for this repository
	stall := newStallReader(resp.Body, p.stallClock, p.stallTimeout, cancel)
	a := &attempt{resp: resp, ctx: ctx, cancel: cancel, stall: stall, body: stall}
	if t.kind == kindManifest {
		if resp.ContentLength > p.manifestLimit {
			a.close()
			return manifestTooLarge(t.path(), resp.ContentLength, p.manifestLimit)
		}
		// A writer with an unknown size would take any length: cap it.
		a.body = io.LimitReader(stall, p.manifestLimit)
	}
	w, err := p.store.Create(fl.dgst, resp.ContentLength, mediaType(resp, t.kind))
	if err != nil {
		a.close()
		return fmt.Errorf("creating cache entry for %s: %w", fl.dgst, err)
	}
	fl.w, fl.mediaType, started = w, mediaType(resp, t.kind), true
	close(fl.ready)
	return p.copyResuming(w, a, t)
}

// fillTiers fills fl from the shared tier or a peer, when either has the
// digest: done false, download it from upstream.
func (p *Proxy) fillTiers(fl *flight, t target, started *bool) (done bool, err error) {
	if t.upstreamOnly {
		return false, nil
	}
	if p.shared != nil {
		if done, err := p.fillShared(fl, t, started); done {
			return true, err
		}
	}
	if p.peers == nil || t.noPeers {
		return false, nil
	}
	asked, done, err := p.fillPeer(fl, t, started)
	if done || !asked || p.shared == nil {
		return done, err
	}
	return p.fillShared(fl, t, started)
}

// errStalled says an upstream body sent nothing for too long.
var errStalled = errors.New("upstream sent no data for too long")

// stallReader cancels a download whose upstream stops sending: a half-open
// connection would otherwise hold every client of the digest forever. Its
// clock runs from its creation to the first Read (so it can cover the wait
// for response headers too) and then only while a Read is blocked: time
// the download spends elsewhere (waiting for the bandwidth cap, writing)
// is not upstream's silence.
type stallReader struct {
	r       io.Reader // nil until the response is in (newStallWatch)
	timeout time.Duration
	timer   clockwork.Timer
}

func newStallReader(r io.Reader, clock clockwork.Clock, timeout time.Duration, cancel context.CancelCauseFunc) *stallReader {
	s := newStallWatch(clock, timeout, cancel)
	s.r = r
	return s
}

// newStallWatch starts the clock of a stallReader whose body is not there
// yet: set r once the response headers are in.
func newStallWatch(clock clockwork.Clock, timeout time.Duration, cancel context.CancelCauseFunc) *stallReader {
	return &stallReader{timeout: timeout, timer: clock.AfterFunc(timeout, func() {
		cancel(fmt.Errorf("%w (%v)", errStalled, timeout))
	})}
}

func (s *stallReader) Read(p []byte) (int, error) {
	s.timer.Reset(s.timeout)
	n, err := s.r.Read(p)
	s.timer.Stop()
	return n, err
}

// stop stops the clock: for good, or while the download waits on
// something other than the body (a confirmation upstream) until resume.
func (s *stallReader) stop() { s.timer.Stop() }

// resume starts a stopped clock again, from zero.
func (s *stallReader) resume() { s.timer.Reset(s.timeout) }
