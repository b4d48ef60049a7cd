package proxy

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// The referrers API (OCI 1.1) lists the manifests whose subject is a
// digest: signatures, SBOMs, attestations. New ones appear at any time,
// so upstream is always asked first, as for tags; each answer is
// recorded (cache.ReferrersKey: repository, subject, filter, page), and
// served with a Warning while ECR cannot answer (Options.StaleIfError),
// also for a filter never asked, from the whole list's record
// (recordedReferrers).
// An upstream without the API is answered from the tag schema, the
// index tagged sha256-<hex> that clients push there instead.

var _ registry.ReferrersLister = (*Proxy)(nil)

// filterArtifactType is the OCI-Filters-Applied name of the artifactType
// filter.
const filterArtifactType = "artifactType"

// referrersAnswer is one page of referrers, and whether it was built from
// the tag schema.
type referrersAnswer struct {
	registry.ReferrerList
	fallback bool
}

// Referrers answers one page of the referrers of dgst in repository
// name; rawQuery is the client's query, sent upstream as it is.
// Concurrent requests for the same page (cache.ReferrersKey) share one
// lookup (p.referrers), run as tag lookups are: under the tag timeout, on
// a context of its own. The referring manifests an answer names are
// linked to the repository, so that fetching them needs no
// confirmation. A request that joined another's lookup is answered
// with outcome OutcomeJoined.
func (p *Proxy) Referrers(ctx context.Context, name string, dgst digest.Digest, rawQuery string) (*registry.ReferrerList, error) {
	key := referrersKey(p.repo(name), dgst, rawQuery)
	res, joined, err := p.referrers.do(ctx, key, func(lctx context.Context) (referrersResult, error) {
		a, why, err := p.referrersUpstream(lctx, name, dgst, rawQuery, key.ArtifactType)
		if err == nil && a.Warning == "" { // an upstream's stale answer keeps our record's age
			p.recordReferrers(key, a)
		}
		return referrersResult{answer: a, why: why}, err
	})
	if err != nil {
		return p.staleReferrers(ctx, key, res.why, err)
	}
	list := res.answer.ReferrerList // each caller its own; Body is shared, read-only
	if joined {
		list.Outcome = OutcomeJoined
	}
	return &list, nil
}

// referrersResult is what one shared referrers lookup learned: the
// answer, or why ECR could not give one (tagRequest's reasons).
type referrersResult struct {
	answer *referrersAnswer
	why    string
}

// referrersKey is the record key of a referrers request: the query's
// artifactType filter, and the rest of it (the page) normalised, its
// parameters sorted. A query that does not parse is its own page.
func referrersKey(repo cache.Repo, dgst digest.Digest, rawQuery string) cache.ReferrersKey {
	k := cache.ReferrersKey{Repo: repo, Subject: dgst}
	v, err := url.ParseQuery(rawQuery)
	k.ArtifactType = v.Get(filterArtifactType)
	v.Del(filterArtifactType)
	k.Page = v.Encode()
	if err != nil {
		k.Page = rawQuery
	}
	return k
}

// referrersUpstream asks upstream for one page of dgst's referrers in
// repository name, and filters it by artifactType when upstream did not.
// An upstream without the referrers API (noReferrersAPI) is answered
// from the tag schema. On failure, why says whether ECR could not answer
// (tagRequest's reasons).
func (p *Proxy) referrersUpstream(ctx context.Context, name string, dgst digest.Digest, rawQuery, artifactType string) (*referrersAnswer, string, error) {
	path := name + "/referrers/" + dgst.String()
	if rawQuery != "" {
		path += "?" + rawQuery
	}
	resp, err := p.up.do(ctx, http.MethodGet, path, nil, kindReferrers, everyStatus...)
	if err != nil {
		return nil, noAnswerWhy(ctx, err), err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, errorBodyLimit))
		if noReferrersAPI(resp.StatusCode, body) {
			return p.referrersFromTagSchema(ctx, name, dgst, artifactType)
		}
		return nil, answerWhy(resp.StatusCode), statusError(http.MethodGet, path, kindReferrers, resp, body)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, registry.MaxManifestSize+1))
	if err != nil {
		err = transportError(http.MethodGet, path, err)
		return nil, noAnswerWhy(ctx, err), err
	}
	if len(body) > registry.MaxManifestSize {
		return nil, "", registry.Errorf(registry.CodeUnavailable, "upstream referrers list of %s@%s is over %d bytes", name, dgst, registry.MaxManifestSize).WithStatus(http.StatusBadGateway)
	}
	idx, err := parseReferrersIndex(body)
	if err != nil {
		return nil, "", &registry.Error{Status: http.StatusBadGateway, Code: registry.CodeUnavailable,
			Message: "upstream answered referrers with a body that is not an image index", Internal: err.Error()}
	}
	a := &referrersAnswer{ReferrerList: registry.ReferrerList{Body: body, FiltersApplied: resp.Header.Get("OCI-Filters-Applied"),
		NextQuery: nextQuery(resp.Header.Get("Link")), Outcome: OutcomeUpstream}}
	if staleFromUpstream(resp) {
		a.Warning = staleWarning // a mirror tier's record: passed on, not recorded
	}
	if artifactType != "" && !filterApplied(a.FiltersApplied, filterArtifactType) {
		idx.filter(artifactType)
		a.Body = idx.encode()
		a.FiltersApplied = strings.Trim(a.FiltersApplied+","+filterArtifactType, ", ")
	}
	p.linkReferrers(name, idx)
	return a, "", nil
}

// noReferrersAPI tells whether an upstream error answer to a referrers
// request means the registry has no referrers API (OCI distribution
// spec: 404, whatever its body says; a registry that refuses the route
// also answers 405, or 400 UNSUPPORTED).
func noReferrersAPI(status int, body []byte) bool {
	code, _, _ := registry.ParseErrorBody(body)
	return status == http.StatusNotFound || status == http.StatusMethodNotAllowed ||
		status == http.StatusBadRequest && code == registry.CodeUnsupported
}

// filterApplied tells whether an OCI-Filters-Applied value names filter.
func filterApplied(header, filter string) bool {
	for f := range strings.SplitSeq(header, ",") {
		if strings.TrimSpace(f) == filter {
			return true
		}
	}
	return false
}

// referrersFromTagSchema answers a referrers request from the tag
// schema: the index tagged sha256-<hex of dgst> in the repository lists
// the referrers (filtered by artifactType when asked). No such tag is an
// empty list, never an error that clients would take for a missing
// repository; a missing repository is upstream's NAME_UNKNOWN.
func (p *Proxy) referrersFromTagSchema(ctx context.Context, name string, dgst digest.Digest, artifactType string) (*referrersAnswer, string, error) {
	a := &referrersAnswer{ReferrerList: registry.ReferrerList{Outcome: OutcomeUpstream}, fallback: true}
	idx := &referrersIndex{}
	t := manifestTarget(name, dgst.Algorithm().String()+"-"+dgst.Encoded(), acceptHeader(nil))
	resp, why, err := p.tagRequest(ctx, http.MethodGet, t)
	var rerr *registry.Error
	switch {
	case err == nil:
		defer resp.Body.Close()
		body, err := p.readManifest(resp, t.path())
		if err != nil {
			return nil, noAnswerWhy(ctx, err), err
		}
		if staleFromUpstream(resp) {
			a.Warning = staleWarning
		}
		if got, perr := parseReferrersIndex(body); perr == nil && isIndexType(mediaType(resp, kindManifest), body) {
			idx.manifests = got.manifests // not an index: no referrers
		}
	case errors.As(err, &rerr) && rerr.HTTPStatus() == http.StatusNotFound && rerr.Code != registry.CodeNameUnknown:
		// No tag: nothing refers to dgst.
	default:
		return nil, why, err
	}
	if artifactType != "" {
		idx.filter(artifactType)
		a.FiltersApplied = filterArtifactType
	}
	a.Body = idx.encode()
	p.linkReferrers(name, idx)
	p.stats.ReferrersFallbacks.Add(1)
	return a, "", nil
}

// isIndexType tells whether a manifest of the given Content-Type is an
// index; with a generic type, its own mediaType field says.
func isIndexType(contentType string, body []byte) bool {
	mt := contentType
	if !cache.IsManifestType(mt) {
		var f struct {
			MediaType string `json:"mediaType"`
		}
		_ = json.Unmarshal(body, &f)
		mt = f.MediaType
	}
	return mt == oci.MediaTypeImageIndex || mt == oci.MediaTypeDockerManifestList
}

// linkReferrers links the manifests a referrers answer names to
// repository name: upstream listed them there.
func (p *Proxy) linkReferrers(name string, idx *referrersIndex) {
	for _, m := range idx.manifests {
		if m.dgst.Validate() == nil && m.dgst.Algorithm() == digest.SHA256 {
			p.link(name, m.dgst)
		}
	}
}

// recordReferrers records an answer for staleReferrers, in the store and
// the shared tier. One over the record bounds is served, not recorded.
func (p *Proxy) recordReferrers(key cache.ReferrersKey, a *referrersAnswer) {
	rec := cache.ReferrersRecord{Body: a.Body, FiltersApplied: a.FiltersApplied, NextQuery: a.NextQuery,
		Fallback: a.fallback, Checked: p.clock.Now()}
	if err := p.store.PutReferrers(key, rec); err != nil {
		level := slog.LevelWarn
		if errors.Is(err, cache.ErrTooLarge) {
			level = slog.LevelDebug
		}
		p.log.Log(context.Background(), level, "recording referrers failed", "repository", key.Repo.Name, "subject", key.Subject, "error", err)
		return
	}
	p.shareReferrers(key, rec)
}

// staleReferrers answers a referrers request that failed with err
// because ECR could not answer (why) from its last recorded answer, when
// Options.StaleIfError allows its age. Otherwise the client gets err.
func (p *Proxy) staleReferrers(ctx context.Context, key cache.ReferrersKey, why string, err error) (*registry.ReferrerList, error) {
	if why == "" || p.staleIfError <= 0 || ctx.Err() != nil {
		return nil, err
	}
	rec, gerr := p.recordedReferrers(key)
	if gerr != nil && !errors.Is(gerr, cache.ErrNotFound) {
		p.log.Warn("reading referrers record failed", "repository", key.Repo.Name, "subject", key.Subject, "error", gerr)
	}
	if gerr != nil || p.clock.Since(rec.Checked) > p.staleIfError {
		// None here, or too old: a replica may have written a newer one
		// to the shared tier.
		if shared, ok := p.sharedReferrersRecord(ctx, key); ok {
			rec, gerr = shared, nil
		}
	}
	if gerr != nil {
		return nil, err
	}
	age := max(p.clock.Since(rec.Checked), 0)
	if age > p.staleIfError {
		p.log.Debug("referrers record too old to serve stale", "repository", key.Repo.Name, "subject", key.Subject, "age", age)
		return nil, err
	}
	p.stats.Stale.Add(1)
	p.stats.StaleReferrers.Add(1)
	p.log.Warn("upstream cannot answer: serving stale referrers", "repository", key.Repo.Name, "subject", key.Subject,
		"artifact_type", key.ArtifactType, "age", age.Round(time.Millisecond), "reason", why, "error", err)
	return &registry.ReferrerList{Body: rec.Body, FiltersApplied: rec.FiltersApplied, NextQuery: rec.NextQuery,
		Outcome: OutcomeStale, Warning: staleWarning}, nil
}

// recordedReferrers is the recorded answer for key: its own record, else
// the record made for the main upstream (an import into a stopped
// mirror's directory records there, as it links there); for a first page
// with a filter, else the unfiltered first page's record, filtered here
// (what "ecr-mirror warm --with-referrers" and imports record), unless
// it has more pages.
func (p *Proxy) recordedReferrers(key cache.ReferrersKey) (cache.ReferrersRecord, error) {
	var rec cache.ReferrersRecord
	err := cache.ErrNotFound
	for _, k := range []cache.ReferrersKey{key, {Repo: cache.Repo{Name: key.Repo.Name}, Subject: key.Subject, ArtifactType: key.ArtifactType, Page: key.Page}} {
		if rec, err = p.store.GetReferrers(k); !errors.Is(err, cache.ErrNotFound) {
			return rec, err
		}
	}
	if key.ArtifactType == "" || key.Page != "" {
		return rec, err
	}
	for _, repo := range []cache.Repo{key.Repo, {Name: key.Repo.Name}} {
		rec, err = p.store.GetReferrers(cache.ReferrersKey{Repo: repo, Subject: key.Subject})
		if errors.Is(err, cache.ErrNotFound) {
			continue
		}
		if err != nil || rec.NextQuery != "" {
			return cache.ReferrersRecord{}, cmp.Or(err, cache.ErrNotFound)
		}
		idx, perr := parseReferrersIndex(rec.Body)
		if perr != nil {
			return cache.ReferrersRecord{}, cache.ErrNotFound
		}
		idx.filter(key.ArtifactType)
		rec.Body = idx.encode()
		rec.FiltersApplied = strings.Trim(rec.FiltersApplied+","+filterArtifactType, ", ")
		return rec, nil
	}
	return rec, err
}

// referrersIndex is an OCI image index listing referrers. Its fields and
// descriptors are kept as upstream wrote them, so that filtering loses
// nothing (annotations, platforms, fields of later versions).
type referrersIndex struct {
	fields    map[string]json.RawMessage // nil: a new index
	manifests []referrer
}

// referrer is one descriptor of a referrers index.
type referrer struct {
	raw          json.RawMessage
	dgst         digest.Digest
	artifactType string
}

// parseReferrersIndex parses an index; a missing or null manifests list
// is an empty one.
func parseReferrersIndex(body []byte) (*referrersIndex, error) {
	idx := &referrersIndex{}
	if err := json.Unmarshal(body, &idx.fields); err != nil || idx.fields == nil {
		return nil, errors.Join(errors.New("not a JSON object"), err)
	}
	var raws []json.RawMessage
	if m := idx.fields["manifests"]; m != nil {
		if err := json.Unmarshal(m, &raws); err != nil {
			return nil, err
		}
	}
	for _, raw := range raws {
		var d struct {
			Digest       digest.Digest `json:"digest"`
			ArtifactType string        `json:"artifactType"`
		}
		if err := json.Unmarshal(raw, &d); err != nil {
			return nil, err
		}
		idx.manifests = append(idx.manifests, referrer{raw: raw, dgst: d.Digest, artifactType: d.ArtifactType})
	}
	return idx, nil
}

// filter keeps the referrers of the given artifactType.
func (idx *referrersIndex) filter(artifactType string) {
	idx.manifests = slices.DeleteFunc(idx.manifests, func(r referrer) bool { return r.artifactType != artifactType })
}

// encode writes the index with its manifests: upstream's other fields,
// or, for a new index, the OCI image index type.
func (idx *referrersIndex) encode() []byte {
	fields := map[string]json.RawMessage{}
	for k, v := range idx.fields {
		fields[k] = v
	}
	raws := make([]json.RawMessage, len(idx.manifests))
	for i, r := range idx.manifests {
		raws[i] = r.raw
	}
	fields["manifests"], _ = json.Marshal(raws) // raw messages that parsed
	if fields["schemaVersion"] == nil {
		fields["schemaVersion"] = json.RawMessage("2")
	}
	if fields["mediaType"] == nil {
		fields["mediaType"], _ = json.Marshal(oci.MediaTypeImageIndex)
	}
	b, _ := json.Marshal(fields) // raw messages that parsed
	return b
}
