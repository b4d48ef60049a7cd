package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Limits on what is read from upstream into memory.
const (
	// DefaultManifestLimit is ECR's own manifest size limit.
	DefaultManifestLimit = 4 << 20
	// DefaultStallTimeout is how long a download may receive nothing.
	DefaultStallTimeout = 30 * time.Second
	tagListLimit        = 16 << 20
	copyBufferSize      = 256 << 10
)

// Outcomes reported to the request log.
const (
	OutcomeHit         = "hit"
	OutcomeMiss        = "miss"
	OutcomeCoalesced   = "coalesced"
	OutcomeRevalidated = "revalidated"
	OutcomeUpstream    = "upstream"
	// OutcomeShared: a local miss streamed from the shared blob tier
	// (Options.SharedStore) rather than upstream.
	OutcomeShared = "shared"
)

// Options configure a Proxy.
type Options struct {
	// Upstream is the upstream registry's base URL. Its host (as
	// registry.CanonicalRegistry names it) is the registry of the links
	// and tag records the proxy writes.
	Upstream *url.URL
	// MainUpstream says this is the mirror's main (default) upstream:
	// links and tag records written without a registry host (by older
	// versions, or an import into a stopped mirror) are its own too.
	MainUpstream bool
	// Client sends upstream requests. It must add the upstream's
	// credentials for its registry host only (auth.Source.Transport for
	// ECR), never another upstream's, and follow redirects.
	Client *http.Client
	// Store holds the content, links and tag records; a *cache.Store.
	Store  Store
	Logger *slog.Logger // nil: discard
	// ManifestLimit caps manifest bodies; 0: DefaultManifestLimit.
	ManifestLimit int64
	// StallTimeout abandons a download whose upstream sends nothing for
	// this long; 0: DefaultStallTimeout.
	StallTimeout time.Duration
	// StallClock times StallTimeout; nil: the real clock. Tests pass a
	// fake one, so that a stall fires when they say, not when a busy
	// machine happens to pause.
	StallClock clockwork.Clock
	// MaxDownloads caps concurrent upstream downloads; past it a miss
	// gets 429 TOOMANYREQUESTS. 0: no cap. Ignored when Shared is set.
	MaxDownloads int
	// Shared, when set, holds the caps on downloads and upstream bytes
	// per second that this proxy shares with others (one per upstream);
	// MaxDownloads and MaxRate are then taken from it.
	Shared *Shared
	// ObserveUpstream, when set, is called after every upstream request.
	ObserveUpstream func(UpstreamEvent)
	// UploadDir is where pushed blobs are staged until their digest is
	// known; "": the system's temp directory. Put it on the cache's disk.
	UploadDir string
	// StaleIfError serves a tag's last recorded answer, up to this old,
	// when ECR cannot be reached; 0: never.
	StaleIfError time.Duration
	// TagTimeout bounds a tag lookup upstream; 0: DefaultTagTimeout.
	TagTimeout time.Duration
	// TagFreshness answers a tag from its record, without asking ECR,
	// while the record is younger than this and its manifest is stored;
	// 0: every request revalidates (or joins a lookup under way).
	TagFreshness time.Duration
	// SeparateTagLookups sends every tag request's own lookup upstream
	// instead of merging concurrent ones. Not a setting: the baseline of
	// the tag benchmark.
	SeparateTagLookups bool
	// Retries is how often a download cut short is resumed; 0: none.
	Retries int
	// MaxRate caps upstream body bytes per second, all downloads
	// together; 0: unlimited. Ignored when Shared is set.
	MaxRate int64
	// SharedStore, if set, is the blob tier several replicas share: a
	// local miss reads it before upstream, and content downloaded from
	// upstream is written to it after commit (sharedtier.go).
	SharedStore SharedBlobs
	// Peers, if set, are the other replicas: a local miss that the
	// shared tier lacks is asked of the digest's owner before upstream
	// (peertier.go).
	Peers Peers
	// UsedManifest, if set, is told of each manifest answered, by tag or
	// digest (the shared tier's use records, for its least recently used
	// order). It must not block.
	UsedManifest func(digest.Digest)
}

// DefaultTagTimeout is how long a tag lookup waits for ECR.
const DefaultTagTimeout = 10 * time.Second

// Proxy implements registry.Backend over a store and an upstream registry.
type Proxy struct {
	up            upstream
	host          string // the upstream's registry host, for links and tag records
	main          bool   // Options.MainUpstream
	store         Store
	log           *slog.Logger
	manifestLimit int64
	stallTimeout  time.Duration
	stallClock    clockwork.Clock
	maxDownloads  int
	slots         *downloadSlots // maxDownloads, maybe shared with other proxies
	bufs          sync.Pool

	// Tag lookups (taglookup.go, stale.go).
	staleIfError, tagTimeout, tagFreshness time.Duration
	tags                                   *lookups[tagKey, tagAnswer]
	referrers                              *lookups[cache.ReferrersKey, referrersResult]
	// clock dates tag records and tells their age; tests set a fake one.
	clock clockwork.Clock

	// Downloads run on bg, not on a client's context.
	bg       context.Context
	stop     context.CancelFunc
	inflight sync.WaitGroup

	// flights are the downloads in flight by digest, under mu: this
	// proxy's own, or shared with the other upstreams' (Options.Shared).
	mu      *sync.Mutex
	flights map[digest.Digest]*flight
	shared  *sharedTier // nil: no shared blob tier
	peers   Peers       // nil: no peers
	// usedManifest is Options.UsedManifest; nil: not told.
	usedManifest func(digest.Digest)

	uploadTable *uploadTable // push sessions being staged

	stats Stats

	resume resumePolicy // resume.go
	limit  rateLimit    // ratelimit.go: Options.MaxRate
}

// Stats counts what the proxy did. Fields are read with Load.
type Stats struct {
	Hits, Misses, Coalesced     atomic.Int64
	Downloads, DownloadFailures atomic.Int64
	// DigestMismatches counts manifests fetched by tag whose digest was
	// not the one upstream named (the store counts downloads').
	DigestMismatches             atomic.Int64
	TagLookups, UpstreamRangeGet atomic.Int64
	// UpstreamBytes counts body bytes downloaded into the cache.
	UpstreamBytes atomic.Int64
	// Refused counts misses refused because MaxDownloads were running.
	Refused atomic.Int64
	// Stale counts tags answered from their last recorded answer because
	// ECR could not be reached (Options.StaleIfError).
	Stale atomic.Int64
	// TagJoined counts tag lookups (HEAD or GET by tag) a request joined
	// instead of sending its own, as it joins; TagFresh counts tags answered from a
	// record younger than Options.TagFreshness, with no lookup at all.
	TagJoined, TagFresh atomic.Int64
	// ReferrersJoined counts referrers requests that joined a lookup of
	// the same page under way for another request.
	ReferrersJoined atomic.Int64
	// Resumes counts resumptions of downloads whose upstream body stopped
	// short (Options.Retries), failed ones included.
	Resumes atomic.Int64
	// Confirmations counts HEADs sent upstream to learn whether a
	// repository holds content the store has but has not linked to it;
	// Unconfirmed counts those upstream denied (404 or another refusal).
	Confirmations, Unconfirmed atomic.Int64
	// MaxRate is Options.MaxRate, the cap on upstream bytes per second
	// (0: none). ThrottledBytes counts the bytes read under it, and
	// ThrottledNanos the time spent waiting for it, in nanoseconds.
	MaxRate, ThrottledBytes, ThrottledNanos atomic.Int64
	// StaleReferrers counts referrers lists answered from their last
	// recorded answer because ECR could not be reached (also in Stale);
	// ReferrersFallbacks those answered from the tag schema because
	// upstream has no referrers API.
	StaleReferrers, ReferrersFallbacks atomic.Int64
	// SharedHits counts local misses filled from the shared tier;
	// SharedCorrupt those whose object did not match its digest (it was
	// deleted). SharedWrites counts content written to the shared tier
	// after a download, SharedWriteFailures the writes that failed or
	// were skipped because too many were waiting.
	SharedHits, SharedCorrupt, SharedWrites, SharedWriteFailures atomic.Int64
	// SharedMetaWrites counts links, tag and referrers records written
	// to the shared tier (sharedmeta.go); failures count in
	// SharedWriteFailures.
	SharedMetaWrites atomic.Int64
	// PeerHits counts local misses filled from the digest's owner among
	// the peers; PeerFailures the owners asked that did not serve (the
	// digest came from the shared tier or upstream).
	PeerHits, PeerFailures atomic.Int64
}

var _ registry.Backend = (*Proxy)(nil)

// New returns a Proxy. Close it to stop its downloads.
func New(opts Options) (*Proxy, error) {
	if opts.Upstream == nil || opts.Client == nil || opts.Store == nil {
		return nil, errors.New("proxy: Upstream, Client and Store are required")
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	limit := opts.ManifestLimit
	if limit <= 0 {
		limit = DefaultManifestLimit
	}
	stall := opts.StallTimeout
	if stall <= 0 {
		stall = DefaultStallTimeout
	}
	tagTimeout := opts.TagTimeout
	if tagTimeout <= 0 {
		tagTimeout = DefaultTagTimeout
	}
	stallClock := opts.StallClock
	if stallClock == nil {
		stallClock = clockwork.NewRealClock()
	}
	host := registry.CanonicalRegistry(opts.Upstream.Host)
	bg, stop := context.WithCancel(context.Background())
	p := &Proxy{
		up:            upstream{base: opts.Upstream, client: opts.Client, observe: opts.ObserveUpstream, host: host},
		host:          host,
		main:          opts.MainUpstream,
		maxDownloads:  opts.MaxDownloads,
		store:         opts.Store,
		log:           log,
		manifestLimit: limit,
		stallTimeout:  stall,
		stallClock:    stallClock,
		staleIfError:  opts.StaleIfError,
		tagTimeout:    tagTimeout,
		tagFreshness:  opts.TagFreshness,
		clock:         clockwork.NewRealClock(),
		bg:            bg,
		stop:          stop,
		mu:            new(sync.Mutex),
		flights:       make(map[digest.Digest]*flight),
	}
	p.tags = newLookups[tagKey, tagAnswer](bg, tagTimeout, &p.inflight, &p.stats.TagJoined)
	p.referrers = newLookups[cache.ReferrersKey, referrersResult](bg, tagTimeout, &p.inflight, &p.stats.ReferrersJoined)
	p.tags.separate = opts.SeparateTagLookups
	p.bufs.New = func() any { b := make([]byte, copyBufferSize); return &b }
	p.uploadTable = newUploadTable(opts.Store.MaxSize(), log, opts.UploadDir)
	p.resume = newResumePolicy(opts.Retries)
	p.limit = newRateLimit(opts.MaxRate, &p.stats)
	p.slots = &downloadSlots{max: int64(opts.MaxDownloads)}
	if opts.SharedStore != nil {
		p.shared = newSharedTier(opts.SharedStore)
	}
	p.peers = opts.Peers
	p.usedManifest = opts.UsedManifest
	if sh := opts.Shared; sh != nil {
		p.limit, p.slots, p.maxDownloads = sh.rateLimit(&p.stats), sh.downloads, int(sh.downloads.max)
		p.mu, p.flights = &sh.mu, sh.flights
	}
	return p, nil
}

// Close abandons downloads and tag lookups in flight (their temp files
// are removed and nothing is indexed) and waits for them to end.
func (p *Proxy) Close() {
	p.stop()
	p.inflight.Wait()
}

// Wait blocks until no download or tag lookup is in flight (for tests
// and shutdown).
func (p *Proxy) Wait() { p.inflight.Wait() }

// InFlight returns how many of this proxy's downloads are running.
func (p *Proxy) InFlight() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, fl := range p.flights {
		if fl.host == p.host {
			n++
		}
	}
	return n
}

// Host is the upstream's registry host, as CanonicalRegistry names it.
func (p *Proxy) Host() string { return p.host }

// SharedStoreReachable reports false while reads skip the shared tier
// after one failed (sharedCoolOff); true without a shared tier.
func (p *Proxy) SharedStoreReachable() bool {
	return p.shared == nil || p.shared.readable(p.clock.Now())
}

// Stats returns the proxy's counters.
func (p *Proxy) Stats() *Stats { return &p.stats }

// Blob answers a blob GET or HEAD.
func (p *Proxy) Blob(ctx context.Context, req *registry.Request) (*registry.Content, error) {
	if c, ok, err := p.fromStore(ctx, req, kindBlob); ok || err != nil {
		return c, err
	}
	t := blobTarget(req.Name, req.Dgst)
	t.noPeers = isPeerRequest(ctx)
	if req.Head {
		if fl := p.flight(req.Dgst); fl != nil {
			if err := p.mayJoin(ctx, req, fl, kindBlob); err != nil {
				return nil, err
			}
			if err := fl.wait(ctx); err == nil {
				p.stats.Coalesced.Add(1)
				return &registry.Content{Dgst: req.Dgst, MediaType: fl.mediaType, Size: fl.w.Size(), Outcome: OutcomeCoalesced}, nil
			}
		}
		return p.headOrTiers(ctx, req, t)
	}
	if req.Range != nil && p.flight(req.Dgst) == nil {
		return p.rangeFromUpstream(ctx, req, t)
	}
	return p.fromFlight(ctx, req, t)
}

// Manifest answers a manifest GET or HEAD, by digest or by tag, and
// tells Options.UsedManifest of the digest answered.
func (p *Proxy) Manifest(ctx context.Context, req *registry.Request) (*registry.Content, error) {
	c, err := p.manifest(ctx, req)
	if err == nil && c != nil && p.usedManifest != nil {
		p.usedManifest(c.Dgst)
	}
	return c, err
}

// manifest answers a manifest GET or HEAD.
func (p *Proxy) manifest(ctx context.Context, req *registry.Request) (*registry.Content, error) {
	if req.Tag != "" {
		return p.manifestByTag(ctx, req)
	}
	if c, ok, err := p.fromStore(ctx, req, kindManifest); ok || err != nil {
		return c, err
	}
	t := manifestTarget(req.Name, req.Dgst.String(), acceptHeader(req.Accept))
	t.noPeers = isPeerRequest(ctx)
	if req.Head {
		return p.headOrTiers(ctx, req, t)
	}
	return p.fromFlight(ctx, req, t)
}

// fromStore serves a request by digest from the store, if it holds the
// digest: at once when the repository is known to hold it (a link) and,
// for a manifest, the store holds it as a manifest; otherwise once
// upstream has confirmed both (confirm). An error other than absence
// (say, no file descriptors left) is the client's 503: downloading again
// would not help.
func (p *Proxy) fromStore(ctx context.Context, req *registry.Request, k kind) (*registry.Content, bool, error) {
	linked := p.linked(req.Name, req.Dgst)
	if linked && k == kindBlob {
		return p.stored(req.Dgst, req.Head) // the hot path: one store lookup
	}
	info, err := p.store.Stat(req.Dgst)
	if errors.Is(err, cache.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, cacheUnreadable(err)
	}
	var mediaType string
	if !linked || k == kindManifest && !cache.IsManifestType(info.MediaType) {
		if mediaType, err = p.confirm(ctx, req, k); err != nil {
			return nil, false, err
		}
	}
	c, ok, err := p.stored(req.Dgst, req.Head)
	if ok && k == kindManifest && mediaType != "" {
		c.MediaType = mediaType
	}
	return c, ok, err
}

// stored serves dgst from the store, if it holds it, without asking
// whether the repository may have it: the caller knows.
func (p *Proxy) stored(dgst digest.Digest, head bool) (*registry.Content, bool, error) {
	f, info, err := p.store.Get(dgst)
	if errors.Is(err, cache.ErrNotFound) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, cacheUnreadable(err)
	}
	p.stats.Hits.Add(1)
	c := &registry.Content{Dgst: dgst, MediaType: info.MediaType, Size: info.Size, Outcome: OutcomeHit}
	if head {
		f.Close()
	} else {
		c.Body = f
	}
	return c, true, nil
}

func cacheUnreadable(err error) *registry.Error {
	return &registry.Error{Code: registry.CodeUnavailable, Message: "the mirror cannot read its cache", Internal: err.Error()}
}

// head asks upstream for the size and type of t, by digest, without its
// body. An answer links the content to t's repository.
func (p *Proxy) head(ctx context.Context, t target) (*registry.Content, error) {
	dgst := digest.Digest(t.ref)
	resp, err := p.up.do(ctx, http.MethodHead, t.path(), t.accept, t.kind, http.StatusOK)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	if got := resp.Header.Get("Docker-Content-Digest"); got != "" && got != dgst.String() {
		return nil, registry.Errorf(registry.CodeUnavailable, "upstream answered HEAD %s with digest %s", t.path(), got).WithStatus(http.StatusBadGateway)
	}
	p.link(t.repo, dgst)
	return &registry.Content{Dgst: dgst, MediaType: mediaType(resp, t.kind), Size: resp.ContentLength, Outcome: OutcomeUpstream}, nil
}

// rangeFromUpstream answers a Range request on an uncached blob straight
// from upstream, and fills the whole blob into the cache in the
// background. The fill's answer gives the size, so the range is resolved
// here: a bad one gets 416, and one the fill can serve (the whole blob, or
// bytes already downloaded) is served verified from it.
func (p *Proxy) rangeFromUpstream(ctx context.Context, req *registry.Request, t target) (*registry.Content, error) {
	fl, _, err := p.startFlight(ctx, req, t)
	if errors.Is(err, errStored) {
		return p.fromFlight(ctx, req, t)
	}
	if err != nil {
		return nil, err
	}
	if err := fl.wait(ctx); err != nil {
		return nil, clientError(req.Dgst, err)
	}
	size := fl.w.Size()
	if size < 0 {
		return p.fromFlight(ctx, req, t)
	}
	start, n, err := req.Range.Resolve(size)
	if err != nil {
		return nil, err
	}
	if n == size || fl.w.Written() >= start+n {
		return p.fromFlight(ctx, req, t)
	}
	p.stats.UpstreamRangeGet.Add(1)
	hdr := http.Header{"Range": {fmt.Sprintf("bytes=%d-%d", start, start+n-1)}}
	resp, err := p.up.do(ctx, http.MethodGet, t.path(), hdr, t.kind, http.StatusOK, http.StatusPartialContent)
	if err != nil {
		return nil, err
	}
	span, total, cerr := parseContentRange(resp.Header.Get("Content-Range"))
	if resp.StatusCode != http.StatusPartialContent || cerr != nil ||
		span != (registry.Span{Start: start, Length: n}) || resp.ContentLength != n || total != size {
		// Not the range asked for (a 200 ignores it): nothing unverified
		// goes to the client; the fill has the bytes.
		resp.Body.Close()
		return p.fromFlight(ctx, req, t)
	}
	return &registry.Content{Dgst: req.Dgst, MediaType: fl.mediaType, Size: size, Body: p.limit.body(ctx, resp.Body),
		Partial: &span, Outcome: OutcomeUpstream}, nil
}

// fromFlight serves a miss from the download of its digest (t), starting
// one unless it is already under way.
func (p *Proxy) fromFlight(ctx context.Context, req *registry.Request, t target) (*registry.Content, error) {
	for {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		fl, joined, err := p.startFlight(ctx, req, t)
		if errors.Is(err, errStored) {
			if c, ok, err := p.fromStore(ctx, req, t.kind); ok || err != nil {
				return c, err
			}
			continue // evicted in between: download it
		}
		if err != nil {
			return nil, err
		}
		if err := fl.wait(ctx); err != nil {
			return nil, clientError(req.Dgst, err)
		}
		size := fl.w.Size()
		c := &registry.Content{Dgst: req.Dgst, MediaType: fl.mediaType, Size: size, Outcome: OutcomeMiss}
		if joined {
			c.Outcome = OutcomeCoalesced
			p.stats.Coalesced.Add(1)
		} else {
			p.stats.Misses.Add(1)
		}
		if fl.fromShared {
			c.Outcome = OutcomeShared
		} else if fl.fromPeer {
			c.Outcome = OutcomePeer
		}
		var start int64
		length := size
		if req.Range != nil && size >= 0 {
			s, n, err := req.Range.Resolve(size)
			if err != nil {
				return nil, err
			}
			start, length = s, n
			c.Partial = &registry.Span{Start: s, Length: n}
		}
		r, err := fl.w.NewReader(ctx, start)
		if errors.Is(err, cache.ErrWriterDone) || errors.Is(err, cache.ErrNotBuffered) {
			// Committed since we joined: read the store, or, when it
			// was too large to keep, wait for the flight to leave and
			// download again. The same when the disk is full and the
			// download has relayed past what it holds in memory.
			if c, ok, err := p.fromStore(ctx, req, t.kind); ok || err != nil {
				return c, err
			}
			select {
			case <-fl.done:
				continue
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if err != nil {
			return nil, clientError(req.Dgst, err)
		}
		if c.Partial != nil {
			c.Body = limitedBody{Reader: io.LimitReader(r, length), Closer: r}
		} else {
			c.Body = r
		}
		return c, nil
	}
}

func (p *Proxy) readManifest(resp *http.Response, path string) ([]byte, error) {
	if resp.ContentLength > p.manifestLimit {
		return nil, manifestTooLarge(path, resp.ContentLength, p.manifestLimit)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, p.manifestLimit+1))
	if err != nil {
		return nil, transportError(http.MethodGet, path, err)
	}
	if int64(len(body)) > p.manifestLimit {
		return nil, manifestTooLarge(path, int64(len(body)), p.manifestLimit)
	}
	return body, nil
}

func manifestTooLarge(path string, size, limit int64) *registry.Error {
	return registry.Errorf(registry.CodeManifestInvalid, "upstream manifest %s is %d bytes, over the %d byte limit", path, size, limit).WithStatus(http.StatusBadGateway)
}

// Tags passes tags/list through, its query as the client sent it, and
// keeps the next page's query.
func (p *Proxy) Tags(ctx context.Context, name string, rawQuery string) (*registry.TagList, error) {
	path := name + "/tags/list"
	if rawQuery != "" {
		path += "?" + rawQuery
	}
	resp, err := p.up.do(ctx, http.MethodGet, path, nil, kindTags, http.StatusOK)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, tagListLimit+1))
	if err != nil {
		return nil, transportError(http.MethodGet, path, err)
	}
	if len(body) > tagListLimit {
		return nil, registry.Errorf(registry.CodeUnavailable, "upstream tag list of %s is over %d bytes", name, tagListLimit).WithStatus(http.StatusBadGateway)
	}
	return &registry.TagList{Body: body, NextQuery: nextQuery(resp.Header.Get("Link"))}, nil
}

// nextQuery returns the query of a Link header's rel="next" URL.
func nextQuery(link string) string {
	for _, l := range strings.Split(link, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(l), ";")
		if !ok || !strings.Contains(params, `rel="next"`) {
			continue
		}
		target = strings.Trim(strings.TrimSpace(target), "<>")
		if u, err := url.Parse(target); err == nil {
			return u.RawQuery
		}
	}
	return ""
}

// acceptHeader is the Accept sent upstream: the client's, or every
// manifest type the mirror knows.
func acceptHeader(accept []string) http.Header {
	if len(accept) == 0 {
		accept = oci.ManifestTypes()
	}
	return http.Header{"Accept": {strings.Join(accept, ", ")}}
}

// mediaType is the media type of an upstream answer.
func mediaType(resp *http.Response, k kind) string {
	ct := resp.Header.Get("Content-Type")
	if mt, _, err := mime.ParseMediaType(ct); err == nil && ct != "" {
		return mt
	}
	if k == kindManifest {
		return ""
	}
	return "application/octet-stream"
}

// parseContentRange parses "bytes first-last/size".
func parseContentRange(v string) (registry.Span, int64, error) {
	spec, ok := strings.CutPrefix(v, "bytes ")
	if !ok {
		return registry.Span{}, 0, fmt.Errorf("not a bytes Content-Range: %q", v)
	}
	rng, total, ok := strings.Cut(spec, "/")
	first, last, ok2 := strings.Cut(rng, "-")
	if !ok || !ok2 {
		return registry.Span{}, 0, fmt.Errorf("malformed Content-Range %q", v)
	}
	a, err1 := strconv.ParseInt(first, 10, 64)
	b, err2 := strconv.ParseInt(last, 10, 64)
	size, err3 := strconv.ParseInt(total, 10, 64)
	if err1 != nil || err2 != nil || b < a || a < 0 {
		return registry.Span{}, 0, fmt.Errorf("malformed Content-Range %q", v)
	}
	if err3 != nil {
		size = -1
	}
	return registry.Span{Start: a, Length: b - a + 1}, size, nil
}

// bytesBody is an in-memory body the handler can seek in.
type bytesBody struct{ *bytes.Reader }

func (bytesBody) Close() error { return nil }

type limitedBody struct {
	io.Reader
	io.Closer
}

// clientError turns the failure of a download a client was following into
// what the client sees: upstream's answer as it was mapped, or a 502 that
// names the digest. Details (paths, sizes) stay in the logs.
func clientError(dgst digest.Digest, err error) error {
	var rerr *registry.Error
	if errors.As(err, &rerr) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return &registry.Error{Status: http.StatusBadGateway, Code: registry.CodeUnavailable,
		Message: fmt.Sprintf("the download of %s from upstream failed; try again", dgst), Internal: err.Error()}
}
