package proxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/registry"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

// SharedBlobs is the blob tier several replicas share, content by digest
// in an object store; *sharedstore.Store implements it.
type SharedBlobs interface {
	// Open streams dgst's object; an error wrapping
	// sharedstore.ErrNotFound when there is none.
	Open(ctx context.Context, dgst digest.Digest) (*sharedstore.Object, error)
	// Put writes size bytes of r, verified as dgst, unless the tier
	// holds dgst already; another replica writing it first is success.
	Put(ctx context.Context, dgst digest.Digest, size int64, mediaType string, r io.ReaderAt) error
	// Delete removes dgst's object.
	Delete(ctx context.Context, dgst digest.Digest) error
}

// Background writes to the shared tier: at most sharedWriters at once,
// at most sharedBacklog waiting; past that a write is skipped (another
// replica's download, or this one's next, writes the digest later).
const (
	sharedWriters = 4
	sharedBacklog = 1024
)

// sharedCoolOff is how long misses go straight to upstream after a read
// of the shared tier failed (not a missing object): a tier that is down
// then costs one failed attempt, not one per miss.
const sharedCoolOff = 10 * time.Second

// sharedTier is a proxy's use of the shared blob tier.
type sharedTier struct {
	blobs     SharedBlobs
	writes    *writeQueue  // writes of blobs after their download
	skipUntil atomic.Int64 // Unix nanoseconds: reads skip the tier until then
	meta      *metaTier    // links and records (sharedmeta.go); nil: blobs only
}

// writeQueue bounds a kind of background write to the shared tier: at
// most cap(slots) running, at most sharedBacklog started or waiting.
type writeQueue struct {
	slots   chan struct{} // one per write running
	waiting atomic.Int64  // writes started or waiting
}

func newWriteQueue(running int) *writeQueue {
	return &writeQueue{slots: make(chan struct{}, running)}
}

// writeBehind runs write in the background through q: it never delays a
// client; past q's backlog the write is skipped, and a skipped or failed
// write is logged (with attrs) and counted, never a failed pull. written
// counts those that worked.
func (p *Proxy) writeBehind(q *writeQueue, written *atomic.Int64, write func() error, attrs ...any) {
	if q.waiting.Add(1) > sharedBacklog {
		q.waiting.Add(-1)
		p.stats.SharedWriteFailures.Add(1)
		p.log.Warn("shared store write skipped: too many waiting", append(attrs, "waiting", sharedBacklog)...)
		return
	}
	p.inflight.Add(1)
	go func() {
		defer p.inflight.Done()
		defer q.waiting.Add(-1)
		select {
		case q.slots <- struct{}{}:
		case <-p.bg.Done():
			return
		}
		defer func() { <-q.slots }()
		if err := write(); err != nil {
			p.stats.SharedWriteFailures.Add(1)
			p.log.Warn("shared store write failed", append(attrs, "error", err)...)
			return
		}
		written.Add(1)
	}()
}

// readable reports whether reads may try the tier at now.
func (s *sharedTier) readable(now time.Time) bool { return now.UnixNano() >= s.skipUntil.Load() }

// failed starts a cool-off at now.
func (s *sharedTier) failed(now time.Time) { s.skipUntil.Store(now.Add(sharedCoolOff).UnixNano()) }

func newSharedTier(blobs SharedBlobs) *sharedTier {
	return &sharedTier{blobs: blobs, writes: newWriteQueue(sharedWriters), meta: newMetaTier(blobs)}
}

// fillShared fills fl from the shared tier, when it holds the digest,
// the way fill does from upstream: through a cache.Writer that clients
// follow and that verifies the digest at commit. A repository not linked
// to the digest is confirmed upstream first, as for a local hit
// (links.go). done false: the tier has no object for the digest, or
// cannot be reached (then it is not asked again for sharedCoolOff):
// download from upstream. It sets *started once
// fl.ready is closed.
func (p *Proxy) fillShared(fl *flight, t target, started *bool) (done bool, err error) {
	if !p.shared.readable(p.clock.Now()) {
		return false, nil
	}
	ctx, cancel := context.WithCancelCause(p.bg)
	stall := newStallWatch(p.stallClock, p.stallTimeout, cancel)
	obj, err := p.shared.blobs.Open(ctx, fl.dgst)
	if err != nil {
		stall.stop()
		cancel(nil)
		if !errors.Is(err, sharedstore.ErrNotFound) && p.bg.Err() == nil {
			p.shared.failed(p.clock.Now())
			p.log.Warn("shared store unreadable; downloading from upstream, and skipping the store for a while", "digest", fl.dgst, "cool_off", sharedCoolOff, "error", err)
		}
		return false, nil
	}
	stall.r = obj.Body
	a := &attempt{resp: &http.Response{Body: obj.Body}, ctx: ctx, cancel: cancel, stall: stall, body: stall}
	if t.kind == kindManifest && (obj.Size > p.manifestLimit || obj.Size < 0 && !p.sizeSharedManifest(obj, a)) {
		a.close()
		return false, nil // not a manifest this mirror takes: ask upstream
	}
	// Confirming upstream is not the tier's silence: the clock waits.
	stall.stop()
	mt, err := p.sharedMediaType(fl, t, obj.MediaType)
	stall.resume()
	if err != nil {
		a.close()
		return true, err
	}
	w, err := p.store.Create(fl.dgst, obj.Size, mt)
	if err != nil {
		a.close()
		return true, fmt.Errorf("creating cache entry for %s: %w", fl.dgst, err)
	}
	fl.w, fl.mediaType, fl.fromShared, *started = w, mt, true, true
	close(fl.ready)
	return true, p.copyShared(w, a, t)
}

// headOrTiers answers a HEAD by digest of content the store lacks:
// upstream's answer, or, when upstream cannot answer (down, 5xx, 429),
// the shared tier's or the digest's owner's, fetched through a flight as
// a GET would be (so it is held to the same links and confirmation, and
// stored for the GET that follows). containerd sends such a HEAD first
// for an image pinned by digest.
func (p *Proxy) headOrTiers(ctx context.Context, req *registry.Request, t target) (*registry.Content, error) {
	c, err := p.head(ctx, t)
	if err == nil || p.shared == nil && (p.peers == nil || t.noPeers) || !cannotAnswer(err) || ctx.Err() != nil {
		return c, err
	}
	get := &registry.Request{Name: req.Name, Dgst: req.Dgst, Accept: req.Accept}
	tc, terr := p.fromFlight(ctx, get, t)
	if terr != nil {
		p.log.Debug("upstream cannot answer a HEAD, nor can the shared tier or peers", "path", t.path(), "error", terr)
		return nil, err
	}
	if tc.Body != nil {
		tc.Body.Close() // the download goes on, for the GET that follows
		tc.Body = nil
	}
	return tc, nil
}

// sizeSharedManifest reads a manifest object sent without its size
// whole, up to the manifest limit, so that it is held to the limit as
// a declared size is: false when it is over it or its read failed.
func (p *Proxy) sizeSharedManifest(obj *sharedstore.Object, a *attempt) bool {
	b, err := io.ReadAll(io.LimitReader(a.body, p.manifestLimit+1))
	if err != nil || int64(len(b)) > p.manifestLimit {
		return false
	}
	obj.Size, a.body = int64(len(b)), bytes.NewReader(b)
	return true
}

// sharedMediaType is the media type of fl's content from the shared tier,
// once the repository is known to hold it: linked, or confirmed upstream.
func (p *Proxy) sharedMediaType(fl *flight, t target, stored string) (string, error) {
	// A manifest must be served as the manifest type upstream declares,
	// so an object stored without one is confirmed too, as in fromStore.
	if !p.linked(fl.name, fl.dgst) || t.kind == kindManifest && !cache.IsManifestType(stored) {
		mt, err := p.confirm(p.bg, &registry.Request{Name: fl.name, Dgst: fl.dgst}, t.kind)
		if err != nil {
			return "", err
		}
		stored = cmp.Or(mt, stored)
		p.link(fl.name, fl.dgst)
	}
	if t.kind == kindBlob {
		return cmp.Or(stored, "application/octet-stream"), nil
	}
	return stored, nil
}

// copyShared copies a shared object's body into w and commits it
// (copyTier): a body cut short goes on from upstream; content that does
// not match its digest is deleted from the tier and downloaded again from
// upstream.
func (p *Proxy) copyShared(w *cache.Writer, a *attempt, t target) error {
	return p.copyTier(w, a, t, tierSource{what: "shared store read", hits: &p.stats.SharedHits,
		corrupt: func(err error) error {
			p.dropShared(w.Digest(), err)
			return fmt.Errorf("%w: %w", errSharedCorrupt, err)
		}})
}

// tierSource is where copyTier's bytes come from: another replica's tier
// rather than upstream.
type tierSource struct {
	what    string        // names the body in logs: "shared store read"
	hits    *atomic.Int64 // counts the flights it filled whole
	resumed func()        // told when the rest comes from upstream; nil: nothing
	// corrupt is the flight's error for content that does not match its
	// digest (after whatever the tier does about it).
	corrupt func(error) error
}

// copyTier copies a's body from src into w and commits it. A body cut
// short goes on from upstream where it stopped (resume.go), into the same
// writer, so the clients following see one body; content that does not
// match its digest fails the flight (no client gets it whole) with
// src.corrupt's error, and the download starts again from upstream
// (refetch).
func (p *Proxy) copyTier(w *cache.Writer, a *attempt, t target, src tierSource) error {
	buf := p.bufs.Get().(*[]byte)
	_, err := io.CopyBuffer(w, struct{ io.Reader }{a.body}, *buf)
	p.bufs.Put(buf)
	if cause := context.Cause(a.ctx); err != nil && errors.Is(cause, errStalled) {
		err = cause
	}
	a.close()
	if err == nil {
		_, err = w.Commit()
	} else if !errors.Is(err, cache.ErrSizeMismatch) && p.bg.Err() == nil {
		p.log.Warn(src.what+" cut short; going on from upstream", "digest", w.Digest(), "offset", w.Written(), "error", err)
		if src.resumed != nil {
			src.resumed()
		}
		resumes := 0
		next, rerr := p.resumeDownload(w, t, &resumes, transportError(http.MethodGet, t.path(), err))
		if rerr != nil {
			w.Abort(rerr)
			return rerr
		}
		return p.copyResuming(w, next, t)
	}
	if errors.Is(err, cache.ErrDigestMismatch) || errors.Is(err, cache.ErrSizeMismatch) {
		return src.corrupt(err)
	}
	if err != nil {
		w.Abort(err)
		return err
	}
	src.hits.Add(1)
	return nil
}

// errSharedCorrupt says a flight's shared-tier object did not match its
// digest: the download starts again from upstream (refetch).
var errSharedCorrupt = errors.New("the shared store's object does not match its digest")

// refetch starts fl's download again, from upstream now that the corrupt
// object is gone, so that the store holds the digest whether or not the
// client that got the cut body retries; a retry joins it.
func (p *Proxy) refetch(fl *flight, t target) {
	t.upstreamOnly = true // whether or not the delete worked
	if _, _, err := p.startFlightLocked(fl.dgst, t); err != nil && !errors.Is(err, errStored) {
		p.log.Warn("downloading again after a corrupt shared object failed to start", "digest", fl.dgst, "error", err)
	}
}

// dropShared deletes a shared object that did not match its digest.
func (p *Proxy) dropShared(dgst digest.Digest, why error) {
	p.stats.SharedCorrupt.Add(1)
	p.log.Warn("shared store object does not match its digest; deleting it", "digest", dgst, "error", why)
	if err := p.shared.blobs.Delete(p.bg, dgst); err != nil {
		p.log.Warn("deleting a corrupt shared store object failed", "digest", dgst, "error", err)
	}
}

// writeShared writes stored content to the shared tier in the background,
// once its download has committed it: it never delays a client, and a
// failure is logged and counted, never a failed pull.
func (p *Proxy) writeShared(dgst digest.Digest) {
	if p.shared == nil {
		return
	}
	p.writeBehind(p.shared.writes, &p.stats.SharedWrites, func() error { return p.putShared(dgst) }, "digest", dgst)
}

// putShared writes dgst from the local store's file, part by part.
func (p *Proxy) putShared(dgst digest.Digest) error {
	f, info, err := p.store.Get(dgst)
	if errors.Is(err, cache.ErrNotFound) {
		return nil // evicted already, or too large to keep
	}
	if err != nil {
		return fmt.Errorf("opening %s in the local store: %w", dgst, err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(p.bg, sharedWriteTimeout(info.Size))
	defer cancel()
	return p.shared.blobs.Put(ctx, dgst, info.Size, info.MediaType, f)
}

// sharedWriteTimeout bounds a background write of size bytes: a minute,
// plus a second per MiB, so that a store that hangs cannot hold the
// write slots for good.
func sharedWriteTimeout(size int64) time.Duration {
	return time.Minute + time.Duration(size>>20)*time.Second
}
