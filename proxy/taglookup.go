package proxy

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Outcomes of tag requests answered without an upstream request of their
// own.
const (
	// OutcomeJoined is a tag checked by joining the lookup another
	// request had under way, its body from the cache.
	OutcomeJoined = "joined"
	// OutcomeFresh is a tag answered from a record younger than
	// Options.TagFreshness, its body from the cache.
	OutcomeFresh = "fresh"
)

// tagKey says which tag lookups share one upstream request: those of the
// same tag in the same upstream repository asking for the same manifest
// types (cache.NormalizeAccept, as the tag records group them), since
// ECR converts a manifest by tag to what Accept allows.
type tagKey struct {
	host, repo, tag, accept string
	// get is the GET by tag that fetches the manifest, sent when the
	// HEAD's answer is not stored; its answer is not the HEAD's. named is
	// the digest that HEAD named: a request whose HEAD saw the tag move
	// does not join a GET sent before the move.
	get   bool
	named digest.Digest
}

// tagAnswer is what one tag lookup learned from ECR.
type tagAnswer struct {
	// dgst is the digest ECR named, as it spelled it ("" when it named
	// none); usable says whether it is a valid sha256 digest.
	dgst      digest.Digest
	mediaType string
	size      int64
	body      []byte // the manifest, for a GET
	stored    bool   // body came from the store, not from ECR
	// why says, when the lookup failed, that ECR could not answer
	// (tagRequest); "" when it did, or the failure was not ECR's.
	why string
	// stale says the answer came stale from upstream: a mirror in front
	// of which ECR is unreachable answered from its record (Warning 110).
	// It is passed on with that Warning and not recorded, so that this
	// mirror's own record keeps its age.
	stale bool
	// deadline ends the lookup: the GET that follows a HEAD keeps it, so
	// both together take at most the tag timeout, as they did on one
	// client's context.
	deadline time.Time
}

// warning is the Warning header of a's answer: the stale one when
// upstream's answer was stale.
func (a tagAnswer) warning() string {
	if a.stale {
		return staleWarning
	}
	return ""
}

// staleFromUpstream tells whether upstream answered from its own stale
// record (Warning: 110, as this mirror's staleAnswer does): a mirror
// tier in front of which ECR cannot be reached.
func staleFromUpstream(resp *http.Response) bool {
	for _, w := range resp.Header.Values("Warning") {
		if code, _, _ := strings.Cut(strings.TrimSpace(w), " "); code == "110" {
			return true
		}
	}
	return false
}

func (a tagAnswer) usable() bool {
	return a.dgst != "" && a.dgst.Validate() == nil && a.dgst.Algorithm() == digest.SHA256
}

// manifestByTag revalidates a tag upstream, then serves the manifest it
// names from the store when it can. Concurrent requests for one tag
// (tagKey) share one lookup (p.tags): run on a context of its own under
// the tag timeout, so a black-holed link cannot hang the pull and the
// client that started it hanging up does not fail the others. Each
// answer is recorded; when ECR cannot answer (no answer, 5xx, 429) the
// last recorded one may be served instead (staleAnswer), to every
// request that shared the lookup. What ECR says about the tag (401, 403,
// 404) is passed on. With Options.TagFreshness, a record young enough is
// served without asking (freshAnswer).
func (p *Proxy) manifestByTag(ctx context.Context, req *registry.Request) (*registry.Content, error) {
	p.stats.TagLookups.Add(1)
	t := manifestTarget(req.Name, req.Tag, acceptHeader(req.Accept))
	if c, ok := p.freshAnswer(req, t.accept); ok {
		return c, nil
	}
	key := tagKey{host: p.up.base.Host, repo: req.Name, tag: req.Tag, accept: cache.NormalizeAccept(t.accept.Get("Accept"))}
	head, joined, err := p.tags.do(ctx, key, func(ctx context.Context) (tagAnswer, error) { return p.headTag(ctx, t) })
	var rerr *registry.Error
	if err != nil && (head.why != "" || req.Head || !errors.As(err, &rerr) || rerr.HTTPStatus() != http.StatusNotFound) {
		return p.staleAnswer(ctx, req, t.accept, head.why, sharedError(err))
	}
	// A 404 to HEAD has no body to say whether the tag or the repository
	// is unknown: the GET below asks again and passes ECR's answer on.
	if err == nil && head.usable() {
		outcome := tagOutcome(true, joined)
		if req.Head {
			return &registry.Content{Dgst: head.dgst, MediaType: head.mediaType, Size: head.size, Outcome: outcome, Warning: head.warning()}, nil
		}
		if c, ok, err := p.stored(head.dgst, false); ok || err != nil {
			if ok {
				c.Outcome, c.Warning = outcome, head.warning()
				if head.mediaType != "" {
					c.MediaType = head.mediaType
				}
			}
			return c, err
		}
	}
	return p.manifestBodyByTag(ctx, req, t, key, head, err == nil && head.dgst != "")
}

// manifestBodyByTag answers a tag whose manifest the store does not hold
// (or whose digest ECR did not name) with the manifest fetched by tag:
// requests that get there together share the GET (p.tags, key.get); one
// that comes after it finds the manifest stored. With a shared tier or
// peers, a manifest whose digest the HEAD named is fetched by that digest
// through a flight (shared tier, then its owner, then ECR: byDigest), so
// that the cluster downloads it from ECR once. Once ECR has named the
// tag's digest (known), an older answer is known to be outdated: a
// failure then is never masked.
func (p *Proxy) manifestBodyByTag(ctx context.Context, req *registry.Request, t target, key tagKey, head tagAnswer, known bool) (*registry.Content, error) {
	key.get, key.named = true, head.dgst
	got, joined, err := p.tags.do(ctx, key, func(ctx context.Context) (tagAnswer, error) {
		if head.usable() {
			if body, ok := p.storedManifest(head.dgst); ok {
				return tagAnswer{dgst: head.dgst, mediaType: head.mediaType, size: int64(len(body)), body: body, stored: true, stale: head.stale}, nil
			}
			if a, ok := p.byDigest(ctx, req, head); ok {
				return a, nil
			}
		}
		if !head.deadline.IsZero() {
			var cancel context.CancelFunc
			ctx, cancel = context.WithDeadline(ctx, head.deadline)
			defer cancel()
		}
		return p.getTag(ctx, t)
	})
	if err != nil {
		if known {
			return nil, sharedError(err)
		}
		return p.staleAnswer(ctx, req, t.accept, got.why, sharedError(err))
	}
	c := &registry.Content{Dgst: got.dgst, MediaType: got.mediaType, Size: got.size, Outcome: tagOutcome(got.stored, joined), Warning: got.warning()}
	if !req.Head {
		c.Body = bytesBody{bytes.NewReader(got.body)}
	}
	return c, nil
}

// headTag asks ECR which manifest t's tag names (a HEAD). An answer that
// names one is recorded, and links the manifest to the repository.
func (p *Proxy) headTag(ctx context.Context, t target) (tagAnswer, error) {
	deadline, _ := ctx.Deadline()
	resp, why, err := p.tagRequest(ctx, http.MethodHead, t)
	if err != nil {
		return tagAnswer{why: why, deadline: deadline}, err
	}
	resp.Body.Close()
	a := tagAnswer{dgst: digest.Digest(resp.Header.Get("Docker-Content-Digest")), deadline: deadline}
	if !a.usable() {
		return a, nil
	}
	// ECR named the tag's manifest in this repository: it holds the
	// manifest, and the type it declared is the manifest's, whoever
	// stored the same bytes before.
	a.mediaType, a.size, a.stale = mediaType(resp, kindManifest), resp.ContentLength, staleFromUpstream(resp)
	if !a.stale {
		p.recordTag(t, a.dgst, a.mediaType, a.size)
	}
	p.retype(a.dgst, a.mediaType)
	p.link(t.repo, a.dgst)
	return a, nil
}

// getTag fetches t's manifest by tag, with the client's Accept, since ECR
// converts manifests by tag to what the client accepts and such a
// conversion has no digest to fetch by. It stores and records it.
func (p *Proxy) getTag(ctx context.Context, t target) (tagAnswer, error) {
	resp, why, err := p.tagRequest(ctx, http.MethodGet, t)
	if err != nil {
		return tagAnswer{why: why}, err
	}
	defer resp.Body.Close()
	body, err := p.readManifest(resp, t.path())
	if err != nil {
		return tagAnswer{why: noAnswerWhy(ctx, err)}, err
	}
	got := digest.FromBytes(body)
	if h := resp.Header.Get("Docker-Content-Digest"); h != "" && h != got.String() {
		p.stats.DigestMismatches.Add(1)
		return tagAnswer{}, registry.Errorf(registry.CodeUnavailable, "upstream manifest %s has digest %s but upstream says %s", t.path(), got, h).WithStatus(http.StatusBadGateway)
	}
	mt := mediaType(resp, kindManifest)
	_, statErr := p.store.Stat(got)
	if err := p.store.Put(got, mt, body); err != nil {
		p.log.Warn("caching manifest failed", "name", t.repo, "tag", t.ref, "digest", got, "error", err)
	} else if errors.Is(statErr, cache.ErrNotFound) {
		p.writeShared(got) // new here: the shared tier may lack it too
	}
	p.link(t.repo, got)
	stale := staleFromUpstream(resp)
	if !stale {
		p.recordTag(t, got, mt, int64(len(body)))
	}
	return tagAnswer{dgst: got, mediaType: mt, size: int64(len(body)), body: body, stale: stale}, nil
}

// freshAnswer answers a tag from its record for the request's Accept when
// Options.TagFreshness allows the record's age and the store holds its
// manifest, without asking ECR.
func (p *Proxy) freshAnswer(req *registry.Request, accept http.Header) (*registry.Content, bool) {
	if p.tagFreshness <= 0 {
		return nil, false
	}
	rec, err := p.tagRecord(req.Name, req.Tag, accept.Get("Accept"))
	if err != nil {
		if !errors.Is(err, cache.ErrNotFound) {
			p.log.Warn("reading tag record failed", "repository", req.Name, "tag", req.Tag, "error", err)
		}
		return nil, false
	}
	// A record from the future (the clock was set back) is not trusted.
	if age := p.clock.Since(rec.Checked); age < 0 || age >= p.tagFreshness {
		return nil, false
	}
	c, ok, err := p.stored(rec.Digest, req.Head)
	if !ok || err != nil {
		return nil, false
	}
	if rec.MediaType != "" {
		c.MediaType = rec.MediaType
	}
	c.Outcome = OutcomeFresh
	p.stats.TagFresh.Add(1)
	return c, true
}

// storedManifest reads dgst's manifest from the store, when it holds it.
func (p *Proxy) storedManifest(dgst digest.Digest) ([]byte, bool) {
	f, info, err := p.store.Get(dgst)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	if info.Size > p.manifestLimit {
		return nil, false
	}
	body, err := io.ReadAll(io.LimitReader(f, p.manifestLimit))
	if err != nil || int64(len(body)) != info.Size {
		return nil, false
	}
	return body, true
}

// tagOutcome is the outcome of a tag answered with a body from the store
// (stored) or from ECR, by a lookup of its own or one it joined.
func tagOutcome(stored, joined bool) string {
	switch {
	case stored && joined:
		return OutcomeJoined
	case stored:
		return OutcomeRevalidated
	case joined:
		return OutcomeCoalesced
	}
	return OutcomeMiss
}

// sharedError gives a caller of a shared lookup a copy of its error, so
// that no two requests hold the same *registry.Error.
func sharedError(err error) error {
	if rerr, ok := err.(*registry.Error); ok {
		cp := *rerr
		return &cp
	}
	return err
}

// byDigest fetches the manifest head named by its digest through a
// flight, when a shared tier or peers may hold it; ok false: fetch it by
// tag. The HEAD asked with the client's Accept, so the digest it named
// is the manifest the client would get by tag, and a manifest by digest
// is never converted.
func (p *Proxy) byDigest(ctx context.Context, req *registry.Request, head tagAnswer) (tagAnswer, bool) {
	if p.shared == nil && p.peers == nil {
		return tagAnswer{}, false
	}
	if !head.deadline.IsZero() {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, head.deadline)
		defer cancel()
	}
	byDgst := &registry.Request{Name: req.Name, Dgst: head.dgst, Accept: req.Accept}
	t := manifestTarget(req.Name, head.dgst.String(), acceptHeader(req.Accept))
	c, err := p.fromFlight(ctx, byDgst, t)
	if err != nil {
		p.log.Warn("fetching a tag's manifest by digest failed; fetching it by tag", "name", req.Name, "tag", req.Tag, "digest", head.dgst, "error", err)
		return tagAnswer{}, false
	}
	defer c.Body.Close()
	body, err := io.ReadAll(io.LimitReader(c.Body, p.manifestLimit+1))
	if err != nil || int64(len(body)) > p.manifestLimit || digest.FromBytes(body) != head.dgst {
		p.log.Warn("reading a tag's manifest by digest failed; fetching it by tag", "name", req.Name, "tag", req.Tag, "digest", head.dgst, "bytes", len(body), "error", err)
		return tagAnswer{}, false
	}
	return tagAnswer{dgst: head.dgst, mediaType: cmp.Or(head.mediaType, c.MediaType), size: int64(len(body)), body: body, stale: head.stale}, true
}
