package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/registry"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

// The shared tier holds, beside content, what a replica with an empty
// disk needs to serve offline: links, tag records and referrers records
// (sharedstore/meta.go). Each replica writes what it learns from ECR, in
// the background; it reads them only when ECR cannot answer, so online
// ECR's answer wins as before: a link in the tier confirms a repository
// only when the confirming HEAD got no answer (or a 5xx or 429), and a
// tag or referrers record there is a stale answer under the same
// STALE_IF_ERROR rules as a local one.

// SharedMeta is the metadata half of the shared tier. A SharedBlobs that
// implements it (*sharedstore.Store does) shares metadata too.
type SharedMeta interface {
	PutLink(ctx context.Context, repo sharedstore.Repo, dgst digest.Digest) error
	// Linked reports whether the tier links dgst to repo.
	Linked(ctx context.Context, repo sharedstore.Repo, dgst digest.Digest) (bool, error)
	PutTag(ctx context.Context, repo sharedstore.Repo, tag, accept string, rec sharedstore.TagRecord) error
	// GetTag returns a tag record: an error wrapping
	// sharedstore.ErrNotFound when there is none, sharedstore.ErrMalformed
	// when what is there is not one.
	GetTag(ctx context.Context, repo sharedstore.Repo, tag, accept string) (sharedstore.TagRecord, error)
	PutReferrers(ctx context.Context, k sharedstore.ReferrersKey, rec sharedstore.ReferrersRecord) error
	// GetReferrers returns a referrers record, with GetTag's errors.
	GetReferrers(ctx context.Context, k sharedstore.ReferrersKey) (sharedstore.ReferrersRecord, error)
}

// linkReporter is a Links that says which links a Link call added
// (*cache.Store): those are the ones the tier may lack.
type linkReporter interface {
	LinkNew(repo cache.Repo, dgst digest.Digest) ([]digest.Digest, error)
}

const (
	// metaWriters bounds the metadata writes running at once, apart from
	// the blob writes (a large blob must not hold up a link).
	metaWriters = 2
	// metaTimeout bounds one metadata read or write.
	metaTimeout = 10 * time.Second
	// sharedRecordInterval is how often a record (tag or referrers
	// answer) is written again while what it says does not change. A
	// record in the tier is then at most this much older than ECR's last
	// answer: its age is overstated by at most this much, so a replica
	// reading it refuses it up to this much early, never serves it past
	// STALE_IF_ERROR.
	sharedRecordInterval = time.Minute
	// maxThrottled bounds the records whose last write is remembered.
	maxThrottled = 4096
	// maxClockSkew is how far in the future another replica's record may
	// be dated (clocks differ); later than that, it is refused.
	maxClockSkew = 5 * time.Minute
)

// metaTier is a proxy's use of the tier's metadata.
type metaTier struct {
	store    SharedMeta
	writes   *writeQueue
	throttle throttle
}

func newMetaTier(blobs SharedBlobs) *metaTier {
	m, ok := blobs.(SharedMeta)
	if !ok {
		return nil
	}
	return &metaTier{store: m, writes: newWriteQueue(metaWriters), throttle: throttle{last: make(map[string]throttled)}}
}

// throttle remembers when each record was last written, and what it
// said.
type throttle struct {
	mu   sync.Mutex
	last map[string]throttled
}

type throttled struct {
	value string
	at    time.Time
}

// allow reports whether key's record, saying value, is to be written at
// now: it says something new, or was last written sharedRecordInterval
// ago or more.
func (t *throttle) allow(key, value string, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if prev, ok := t.last[key]; ok && prev.value == value && now.Sub(prev.at) < sharedRecordInterval && !now.Before(prev.at) {
		return false
	}
	if len(t.last) >= maxThrottled {
		for k, v := range t.last {
			if now.Sub(v.at) >= sharedRecordInterval {
				delete(t.last, k)
			}
		}
		if len(t.last) >= maxThrottled {
			clear(t.last) // costs at most one write each
		}
	}
	t.last[key] = throttled{value: value, at: now}
	return true
}

// forget drops key's memory after a failed write, so the next answer
// writes again.
func (t *throttle) forget(key string) {
	t.mu.Lock()
	delete(t.last, key)
	t.mu.Unlock()
}

// sharedRepo is the tier's name of upstream repository name.
func (p *Proxy) sharedRepo(name string) sharedstore.Repo {
	return sharedstore.Repo{Registry: p.host, Name: name}
}

// metaTier is the tier's metadata, or nil when there is none.
func (p *Proxy) meta() *metaTier {
	if p.shared == nil {
		return nil
	}
	return p.shared.meta
}

// shareMeta runs put in the background, a bounded number at once: it
// never delays a client; a failure is logged and counted, never a
// failed pull.
func (p *Proxy) shareMeta(what string, put func(ctx context.Context, m SharedMeta) error, attrs ...any) {
	m := p.meta()
	p.writeBehind(m.writes, &p.stats.SharedMetaWrites, func() error {
		ctx, cancel := context.WithTimeout(p.bg, metaTimeout)
		defer cancel()
		return put(ctx, m.store)
	}, append([]any{"what", what}, attrs...)...)
}

// shareLinks writes links the store just added to the tier.
func (p *Proxy) shareLinks(name string, ds []digest.Digest) {
	if p.meta() == nil || len(ds) == 0 {
		return
	}
	repo := p.sharedRepo(name)
	p.shareMeta("links", func(ctx context.Context, m SharedMeta) error {
		for _, d := range ds {
			if err := m.PutLink(ctx, repo, d); err != nil {
				return err
			}
		}
		return nil
	}, "repository", name, "digests", len(ds))
}

// shareTag writes a tag record to the tier, unless the same answer was
// written less than sharedRecordInterval ago.
func (p *Proxy) shareTag(t target, accept string, rec cache.TagRecord) {
	m := p.meta()
	if m == nil {
		return
	}
	accept = cache.NormalizeAccept(accept)
	key := "tag " + t.repo + ":" + t.ref + " " + accept
	if !m.throttle.allow(key, rec.Digest.String()+" "+rec.MediaType, rec.Checked) {
		return
	}
	repo := p.sharedRepo(t.repo)
	p.shareMeta("tag record", func(ctx context.Context, s SharedMeta) error {
		err := s.PutTag(ctx, repo, t.ref, accept, sharedstore.TagRecord(rec))
		if err != nil {
			m.throttle.forget(key)
		}
		return err
	}, "repository", t.repo, "tag", t.ref)
}

// shareReferrers writes a referrers record to the tier, unless the same
// answer was written less than sharedRecordInterval ago.
func (p *Proxy) shareReferrers(k cache.ReferrersKey, rec cache.ReferrersRecord) {
	m := p.meta()
	if m == nil {
		return
	}
	sk := sharedReferrersKey(p.sharedRepo(k.Repo.Name), k)
	key := "referrers " + k.Repo.Name + "@" + k.Subject.String() + " " + k.ArtifactType + " " + k.Page
	if !m.throttle.allow(key, digest.FromBytes(rec.Body).String()+" "+rec.NextQuery+" "+rec.FiltersApplied, rec.Checked) {
		return
	}
	p.shareMeta("referrers record", func(ctx context.Context, s SharedMeta) error {
		err := s.PutReferrers(ctx, sk, sharedstore.ReferrersRecord{Body: rec.Body, FiltersApplied: rec.FiltersApplied,
			NextQuery: rec.NextQuery, Fallback: rec.Fallback, Checked: rec.Checked})
		if err != nil {
			m.throttle.forget(key)
		}
		return err
	}, "repository", k.Repo.Name, "subject", k.Subject)
}

func sharedReferrersKey(repo sharedstore.Repo, k cache.ReferrersKey) sharedstore.ReferrersKey {
	return sharedstore.ReferrersKey{Repo: repo, Subject: k.Subject, ArtifactType: k.ArtifactType, Page: k.Page}
}

// cannotAnswer tells whether an upstream request's error says ECR could
// not answer (no answer, a 5xx, 429, no credentials) rather than refused
// (404, 401, 403, another 4xx).
func cannotAnswer(err error) bool {
	var rerr *registry.Error
	return errors.As(err, &rerr) && (rerr.Code == registry.CodeUnavailable || rerr.Code == registry.CodeTooManyRequests)
}

// readMeta runs get against the tier's metadata, when there is any and
// reads may try the tier: false when it found nothing usable. A
// malformed record is logged and ignored; a tier that cannot be read is
// not asked again for sharedCoolOff.
func (p *Proxy) readMeta(ctx context.Context, what string, get func(ctx context.Context, m SharedMeta) error, attrs ...any) bool {
	m := p.meta()
	if m == nil || !p.shared.readable(p.clock.Now()) {
		return false
	}
	rctx, cancel := context.WithTimeout(ctx, metaTimeout)
	defer cancel()
	err := get(rctx, m.store)
	switch {
	case err == nil:
		return true
	case errors.Is(err, sharedstore.ErrNotFound) || ctx.Err() != nil: // or the client is gone
	case errors.Is(err, sharedstore.ErrMalformed):
		p.log.Warn("ignoring a malformed record in the shared store", append([]any{"what", what, "error", err}, attrs...)...)
	default:
		p.shared.failed(p.clock.Now())
		p.log.Warn("shared store unreadable; skipping it for a while", append([]any{"what", what, "cool_off", sharedCoolOff, "error", err}, attrs...)...)
	}
	return false
}

// sharedConfirms tells whether the tier's link of dgst to repository
// name stands in for a confirmation upstream could not give (err): it
// links dgst locally then.
func (p *Proxy) sharedConfirms(ctx context.Context, name string, dgst digest.Digest, err error) bool {
	if !cannotAnswer(err) || ctx.Err() != nil {
		return false
	}
	linked := false
	p.readMeta(ctx, "link", func(ctx context.Context, m SharedMeta) error {
		var err error
		linked, err = m.Linked(ctx, p.sharedRepo(name), dgst)
		return err
	}, "repository", name, "digest", dgst)
	if !linked {
		return false
	}
	p.log.Info("upstream cannot confirm; the shared store's link does", "repository", name, "digest", dgst, "error", err)
	p.linkFrom(name, dgst, false)
	return true
}

// sharedTagRecord is the tier's record of name:tag asked with accept.
func (p *Proxy) sharedTagRecord(ctx context.Context, name, tag, accept string) (cache.TagRecord, bool) {
	var rec sharedstore.TagRecord
	ok := p.readMeta(ctx, "tag record", func(ctx context.Context, m SharedMeta) error {
		var err error
		rec, err = m.GetTag(ctx, p.sharedRepo(name), tag, cache.NormalizeAccept(accept))
		return err
	}, "repository", name, "tag", tag)
	if ok && rec.Checked.After(p.clock.Now().Add(maxClockSkew)) {
		p.log.Warn("ignoring a shared store tag record dated in the future", "repository", name, "tag", tag, "checked", rec.Checked)
		return cache.TagRecord{}, false
	}
	return cache.TagRecord(rec), ok
}

// sharedReferrersRecord is the tier's record of k, its body an index.
func (p *Proxy) sharedReferrersRecord(ctx context.Context, k cache.ReferrersKey) (cache.ReferrersRecord, bool) {
	var rec sharedstore.ReferrersRecord
	ok := p.readMeta(ctx, "referrers record", func(ctx context.Context, m SharedMeta) error {
		var err error
		if rec, err = m.GetReferrers(ctx, sharedReferrersKey(p.sharedRepo(k.Repo.Name), k)); err != nil {
			return err
		}
		if _, err := parseReferrersIndex(rec.Body); err != nil {
			return errors.Join(sharedstore.ErrMalformed, err)
		}
		return nil
	}, "repository", k.Repo.Name, "subject", k.Subject)
	if !ok || rec.Checked.After(p.clock.Now().Add(maxClockSkew)) {
		return cache.ReferrersRecord{}, false
	}
	return cache.ReferrersRecord{Body: rec.Body, FiltersApplied: rec.FiltersApplied, NextQuery: rec.NextQuery,
		Fallback: rec.Fallback, Checked: rec.Checked}, true
}

// sharedManifest serves dgst, the manifest a shared tag record names,
// the normal way: from the local store, else from the shared tier's
// object, else upstream. The record is ECR's answer for the repository,
// so dgst is linked to it locally first. A manifest fetched is read
// whole and verified before any of it is served: a stale answer is
// given whole or not at all.
func (p *Proxy) sharedManifest(ctx context.Context, req *registry.Request, dgst digest.Digest) (*registry.Content, error) {
	p.linkFrom(req.Name, dgst, false)
	if c, ok, err := p.stored(dgst, req.Head); ok || err != nil {
		return c, err
	}
	get := &registry.Request{Name: req.Name, Dgst: dgst, Accept: req.Accept}
	c, err := p.fromFlight(ctx, get, manifestTarget(req.Name, dgst.String(), acceptHeader(req.Accept)))
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(io.LimitReader(c.Body, p.manifestLimit+1))
	c.Body.Close()
	if err == nil && digest.FromBytes(body) != dgst {
		err = fmt.Errorf("manifest of %d bytes does not match %s", len(body), dgst)
	}
	if err != nil {
		return nil, err
	}
	c.Size, c.Body = int64(len(body)), nil
	if !req.Head {
		c.Body = bytesBody{bytes.NewReader(body)}
	}
	return c, nil
}
