package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

// OutcomePeer: a local miss streamed from the replica that owns the
// digest (Options.Peers) rather than from the shared tier or upstream.
const OutcomePeer = "peer"

// Peers reaches the other replicas of a cluster, each digest's owner
// among them; *peers.Client implements it.
type Peers interface {
	// Fetch asks req.Dgst's owner for it. An error wrapping ErrNoPeer
	// says no request was sent (this replica owns the digest, or its
	// owner failed a moment ago): the caller goes on without peers.
	Fetch(ctx context.Context, req PeerRequest) (*PeerContent, error)
}

// ErrNoPeer says there is no other replica to ask for a digest.
var ErrNoPeer = errors.New("no peer to ask")

// PeerRequest is content asked of a peer: what a client's request by
// digest names.
type PeerRequest struct {
	Registry string // the upstream's host (as CanonicalRegistry names it)
	Repo     string
	Manifest bool // a manifest, else a blob
	Dgst     digest.Digest
}

// PeerContent is a peer's answer.
type PeerContent struct {
	Body      io.ReadCloser
	Size      int64 // -1: unknown
	MediaType string
}

// peerRequestKey marks a request's context as a peer's.
type peerRequestKey struct{}

// WithPeerRequest marks ctx as a peer's request: what it downloads comes
// from the store, the shared tier or upstream, never from another peer,
// so that peers asking each other cannot loop.
func WithPeerRequest(ctx context.Context) context.Context {
	return context.WithValue(ctx, peerRequestKey{}, true)
}

// IsPeerRequest reports whether ctx is marked as a peer's request.
func IsPeerRequest(ctx context.Context) bool { return isPeerRequest(ctx) }

func isPeerRequest(ctx context.Context) bool {
	v, _ := ctx.Value(peerRequestKey{}).(bool)
	return v
}

// errPeerCorrupt says a flight's bytes from a peer did not match their
// digest: the download starts again from upstream (refetch).
var errPeerCorrupt = errors.New("the peer's content does not match its digest")

// fillPeer fills fl from the digest's owner among the peers, the way fill
// does from upstream: into a cache.Writer that clients follow and that
// verifies the digest at commit. The owner answered for the repository
// (its proxy checked it holds the digest), so it is linked. The content
// is not written to the shared tier: the owner does that. asked false:
// there was no peer to ask; done false: the peer failed before a byte
// was taken (shared tier, then upstream). It sets *started once fl.ready
// is closed.
func (p *Proxy) fillPeer(fl *flight, t target, started *bool) (asked, done bool, err error) {
	ctx, cancel := context.WithCancelCause(p.bg)
	fl.askingPeer.Store(true)
	pc, err := p.peers.Fetch(ctx, PeerRequest{Registry: p.host, Repo: t.repo, Manifest: t.kind == kindManifest, Dgst: fl.dgst})
	fl.askingPeer.Store(false)
	if err != nil {
		cancel(nil)
		if errors.Is(err, ErrNoPeer) {
			return false, false, nil
		}
		if p.bg.Err() == nil {
			p.stats.PeerFailures.Add(1)
			p.log.Warn("the digest's owner did not serve it; reading the shared tier or upstream", "digest", fl.dgst, "path", t.path(), "error", err)
		}
		return true, false, nil
	}
	stall := newStallReader(pc.Body, p.stallClock, p.stallTimeout, cancel)
	a := &attempt{resp: &http.Response{Body: pc.Body}, ctx: ctx, cancel: cancel, stall: stall, body: stall}
	mt := pc.MediaType
	if t.kind == kindManifest {
		if pc.Size > p.manifestLimit {
			a.close()
			return true, false, nil
		}
		a.body = io.LimitReader(stall, p.manifestLimit)
	} else {
		mt = cmp.Or(mt, "application/octet-stream")
	}
	w, err := p.store.Create(fl.dgst, pc.Size, mt)
	if err != nil {
		a.close()
		return true, true, fmt.Errorf("creating cache entry for %s: %w", fl.dgst, err)
	}
	p.link(fl.name, fl.dgst)
	fl.w, fl.mediaType, fl.fromPeer, *started = w, mt, true, true
	close(fl.ready)
	return true, true, p.copyPeer(fl, w, a, t)
}

// copyPeer copies a peer's body into w and commits it (copyTier): a body
// cut short (the owner stopped or died) goes on from upstream; content
// that does not match its digest is downloaded again from upstream.
func (p *Proxy) copyPeer(fl *flight, w *cache.Writer, a *attempt, t target) error {
	return p.copyTier(w, a, t, tierSource{what: "peer body", hits: &p.stats.PeerHits,
		resumed: func() { fl.resumedUpstream = true },
		corrupt: func(err error) error {
			p.log.Warn("a peer's content does not match its digest; downloading it from upstream", "digest", w.Digest(), "error", err)
			return fmt.Errorf("%w: %w", errPeerCorrupt, err)
		}})
}
