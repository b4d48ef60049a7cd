package proxy

import (
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

// OutcomeStale is the outcome of a tag answered from its last recorded
// answer because ECR could not be reached (Options.StaleIfError).
const OutcomeStale = "stale"

// staleWarning is the Warning header of a stale answer (RFC 7234 5.5.1).
const staleWarning = `110 - "Response is Stale"`

// Why a tag lookup got no usable answer from ECR, as the upstream error
// metrics name it. Only these allow a stale answer; an answer that says
// something about the tag (401, 403, 404, any other 4xx) never does.
const (
	whyTimeout     = "timeout"     // no answer within the tag timeout
	whyUnreachable = "unreachable" // refused, reset, DNS failure, body cut short
	whyCredentials = "credentials" // no ECR token could be had
	whyThrottled   = "throttled"   // 429
	whyServer      = "server"      // 5xx
)

// everyStatus makes upstream.do return every answer, so that tagRequest
// sees the status itself rather than the error it maps to (a bare 400 and
// a 503 both become 502 for the client).
var everyStatus = func() []int {
	s := make([]int, 0, 500)
	for code := 100; code < 600; code++ {
		s = append(s, code)
	}
	return s
}()

// tagRequest sends a tag lookup (HEAD or GET of a manifest by tag) and
// returns the response when ECR answered 200. Otherwise it returns the
// error the client would see and, when ECR could not answer at all or
// answered 5xx or 429, why: a stale answer may then be served instead.
func (p *Proxy) tagRequest(ctx context.Context, method string, t target) (*http.Response, string, error) {
	resp, err := p.up.do(ctx, method, t.path(), t.accept, t.kind, everyStatus...)
	if err != nil {
		return nil, noAnswerWhy(ctx, err), err
	}
	if resp.StatusCode == http.StatusOK {
		return resp, "", nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
	return nil, answerWhy(resp.StatusCode), statusError(method, t.path(), t.kind, resp, body)
}

// noAnswerWhy says why a tag lookup that got no (complete) answer failed,
// or "" when it must not be masked: the client went away, or the error
// did not come from the link (a manifest over the size limit).
func noAnswerWhy(ctx context.Context, err error) string {
	var rerr *registry.Error
	switch {
	case !errors.As(err, &rerr):
		return "" // context.Canceled: the client is gone
	case errors.Is(ctx.Err(), context.DeadlineExceeded) || rerr.HTTPStatus() == http.StatusGatewayTimeout:
		return whyTimeout
	case rerr.Code != registry.CodeUnavailable:
		return ""
	case rerr.HTTPStatus() == http.StatusServiceUnavailable:
		return whyCredentials // transportError's answer to an auth.CredentialsError
	}
	return whyUnreachable
}

// answerWhy says whether an upstream status means ECR could not answer.
func answerWhy(status int) string {
	switch {
	case status == http.StatusTooManyRequests:
		return whyThrottled
	case status >= 500:
		return whyServer
	}
	return ""
}

// recordTag notes a successful revalidation of t's tag, for staleAnswer
// and freshAnswer, in the store and the shared tier.
func (p *Proxy) recordTag(t target, dgst digest.Digest, mediaType string, size int64) {
	rec := cache.TagRecord{Digest: dgst, MediaType: mediaType, Size: max(size, 0), Checked: p.clock.Now()}
	if err := p.store.PutTag(p.repo(t.repo), t.ref, t.accept.Get("Accept"), rec); err != nil {
		p.log.Warn("recording tag failed", "repository", t.repo, "tag", t.ref, "error", err)
	}
	p.shareTag(t, t.accept.Get("Accept"), rec)
}

// staleAnswer answers a tag lookup that failed with err because ECR could
// not answer (why), from the tag's last recorded answer for the same
// Accept: when Options.StaleIfError allows its age and the store still
// holds its manifest; else from the shared tier's record, its manifest
// read from the store or the tier (staleFromShared). Otherwise the
// client gets err.
func (p *Proxy) staleAnswer(ctx context.Context, req *registry.Request, accept http.Header, why string, err error) (*registry.Content, error) {
	if why == "" || p.staleIfError <= 0 || ctx.Err() != nil {
		return nil, err
	}
	if c, ok := p.staleFromStore(req, accept, why, err); ok {
		return c, nil
	}
	if c, ok := p.staleFromShared(ctx, req, accept, why, err); ok {
		return c, nil
	}
	return nil, err
}

// staleFromStore answers from the store's tag record, as staleAnswer
// says.
func (p *Proxy) staleFromStore(req *registry.Request, accept http.Header, why string, err error) (*registry.Content, bool) {
	rec, gerr := p.tagRecord(req.Name, req.Tag, accept.Get("Accept"))
	if errors.Is(gerr, cache.ErrNotFound) {
		// An import records tags for any Accept: usable when the client
		// takes the manifest's media type.
		if imp, ierr := p.tagRecord(req.Name, req.Tag, cache.AnyAccept); ierr == nil && accepts(accept.Values("Accept"), imp.MediaType) {
			rec, gerr = imp, nil
		}
	}
	if gerr != nil {
		if !errors.Is(gerr, cache.ErrNotFound) {
			p.log.Warn("reading tag record failed", "repository", req.Name, "tag", req.Tag, "error", gerr)
		}
		return nil, false
	}
	if !p.staleAge(req, rec, "") {
		return nil, false
	}
	// The record is upstream's own answer for this repository.
	c, ok, serr := p.stored(rec.Digest, req.Head)
	if !ok || serr != nil {
		p.log.Debug("manifest of tag record not in the store", "repository", req.Name, "tag", req.Tag, "digest", rec.Digest, "error", serr)
		return nil, false
	}
	return p.servedStale(c, req, rec, why, err, ""), true
}

// staleFromShared answers from the shared tier's tag record (a replica
// wrote ECR's answer there), under the same rules: its age, then its
// manifest from the store or the tier's object. The record is kept
// locally too.
func (p *Proxy) staleFromShared(ctx context.Context, req *registry.Request, accept http.Header, why string, err error) (*registry.Content, bool) {
	rec, ok := p.sharedTagRecord(ctx, req.Name, req.Tag, accept.Get("Accept"))
	if !ok || !p.staleAge(req, rec, "shared") {
		return nil, false
	}
	c, merr := p.sharedManifest(ctx, req, rec.Digest)
	if merr != nil {
		p.log.Debug("manifest of shared tag record unavailable", "repository", req.Name, "tag", req.Tag, "digest", rec.Digest, "error", merr)
		return nil, false
	}
	if perr := p.store.PutTag(p.repo(req.Name), req.Tag, accept.Get("Accept"), rec); perr != nil {
		p.log.Warn("recording tag failed", "repository", req.Name, "tag", req.Tag, "error", perr)
	}
	return p.servedStale(c, req, rec, why, err, "shared"), true
}

// staleAge tells whether Options.StaleIfError allows rec's age.
func (p *Proxy) staleAge(req *registry.Request, rec cache.TagRecord, from string) bool {
	age := max(p.clock.Since(rec.Checked), 0)
	if age > p.staleIfError {
		p.log.Debug("tag record too old to serve stale", "repository", req.Name, "tag", req.Tag, "age", age, "from", from)
		return false
	}
	return true
}

// servedStale makes c, rec's manifest, a stale answer, and counts and
// logs it.
func (p *Proxy) servedStale(c *registry.Content, req *registry.Request, rec cache.TagRecord, why string, err error, from string) *registry.Content {
	if rec.MediaType != "" {
		c.MediaType = rec.MediaType
	}
	c.Outcome, c.Warning = OutcomeStale, staleWarning
	p.stats.Stale.Add(1)
	p.log.Warn("upstream cannot answer: serving a stale tag", "repository", req.Name, "tag", req.Tag, "digest", rec.Digest,
		"age", max(p.clock.Since(rec.Checked), 0).Round(time.Millisecond), "record", cmp.Or(from, "local"), "reason", why, "error", err)
	return c
}

// tagRecord returns this upstream's record of name:tag asked with
// accept: the newer of its own and, for the main upstream, the one
// written without a host (an older version's, or an import into a
// stopped mirror).
func (p *Proxy) tagRecord(name, tag, accept string) (cache.TagRecord, error) {
	rec, err := p.store.GetTag(p.repo(name), tag, accept)
	if !p.main || err != nil && !errors.Is(err, cache.ErrNotFound) {
		return rec, err
	}
	old, oerr := p.store.GetTag(cache.Repo{Name: name}, tag, accept)
	if oerr == nil && (err != nil || old.Checked.After(rec.Checked)) {
		return old, nil
	}
	return rec, err
}

// accepts tells whether Accept header values admit mediaType. No Accept
// at all admits anything, as registries answer such a request.
func accepts(values []string, mediaType string) bool {
	if len(values) == 0 {
		return true
	}
	for _, v := range values {
		for _, part := range strings.Split(v, ",") {
			t, _, _ := strings.Cut(part, ";")
			t = strings.ToLower(strings.TrimSpace(t))
			if t == "*/*" || t == strings.ToLower(mediaType) {
				return true
			}
		}
	}
	return false
}
