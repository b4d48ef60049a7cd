package observe

import (
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/clientconn"
	"github.com/ecr-mirror/ecr-mirror/internal/buildinfo"
	"github.com/ecr-mirror/ecr-mirror/internal/forwardproxy"
	"github.com/ecr-mirror/ecr-mirror/peers"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/registry"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

// Metrics holds the mirror's Prometheus metrics. Counters the packages
// keep themselves (cache, proxy, auth Stats) are read at scrape time; the
// rest are fed by the request and upstream observers.
type Metrics struct {
	reg *prometheus.Registry

	requests        *prometheus.CounterVec
	requestDuration *prometheus.HistogramVec
	servedBytes     *prometheus.CounterVec
	outcomes        *prometheus.CounterVec
	upstream        *prometheus.CounterVec
	upstreamLatency *prometheus.HistogramVec
	upstreamErrors  *prometheus.CounterVec
	sharedStore     *prometheus.CounterVec
	peers           *prometheus.CounterVec
	forwardProxy    *prometheus.CounterVec
}

const namespace = "ecr_mirror"

// NewMetrics registers every metric in a registry of its own: the
// proxies' counters (one proxy per upstream) and the token sources'
// (one per ECR region) are summed.
func NewMetrics(store *cache.Store, pxs []*proxy.Proxy, tokens []*auth.Source, reach *Reachability) *Metrics {
	m := newMetrics()
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.readStats(store, proxies(pxs), sources(tokens), reach)
	return m
}

// newMetrics registers the metrics the observers feed.
func newMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "http_requests_total",
			Help: "Client requests answered, by route, method and status."}, []string{"route", "method", "code"}),
		requestDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "http_request_duration_seconds",
			Help: "Time to answer client requests, body included.", Buckets: prometheus.ExponentialBuckets(0.001, 4, 10)}, []string{"route", "method"}),
		servedBytes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "served_bytes_total",
			Help: "Body bytes sent to clients, by source: cache (hits), shared (local misses streamed from the shared blob tier) peer (local misses streamed from the digest's owner among the replicas) or upstream (misses streamed while downloading, and ranges passed through)."}, []string{"source"}),
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "cache_requests_total",
			Help: "Blob and manifest requests by outcome: hit, miss, coalesced (joined a download under way), revalidated (tag checked upstream, body from cache), joined (tag checked by another request's lookup, body from cache), fresh (tag answered from a record younger than TAG_FRESHNESS), stale (tag answered from cache while ECR was unreachable), upstream, shared (local miss streamed from the shared blob tier), peer (local miss streamed from the digest's owner among the replicas)."}, []string{"outcome"}),
		upstream: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "upstream_requests_total",
			Help: "Requests to upstream registries that got an answer, by upstream host, kind, method and status."}, []string{"upstream", "kind", "method", "code"}),
		upstreamLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Namespace: namespace, Name: "upstream_request_duration_seconds",
			Help: "Time until an upstream's response headers.", Buckets: prometheus.ExponentialBuckets(0.005, 3, 10)}, []string{"upstream", "kind"}),
		upstreamErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "upstream_errors_total",
			Help: "Requests to upstream registries that failed, by upstream host, kind and reason: timeout, unreachable, credentials, canceled, throttled (429), denied (401/403), server (5xx)."}, []string{"upstream", "kind", "reason"}),
		sharedStore: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "shared_store_requests_total",
			Help: "Requests to the shared blob tier (SHARED_STORE), by op (get, head, put, delete on blobs; meta_get, meta_put on links, tag, referrers, use and pin records; list: a page of a sweep's listing) and outcome (ok, not_found, exists: another replica wrote it first, error)."}, []string{"op", "outcome"}),
		peers: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "peer_requests_total",
			Help: "Requests to the owner of a digest among the replicas (PEERS), by outcome: ok, not_found, denied (401/403), error (another status), unreachable (no connection or no answer within PEER_TIMEOUT; the owner is skipped for a while), cut (the body stopped short: the rest came from ECR)."}, []string{"outcome"}),
		forwardProxy: prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: namespace, Name: "forward_proxy_requests_total",
			Help: "Requests to the forward proxy (FORWARD_PROXY_ADDR), by outcome: intercepted (CONNECT to a registry host, served by the mirror), http (http:// request for one), tunnelled or forwarded (another host passed through, FORWARD_PROXY_OTHERS=tunnel), denied (another host, deny), refused (no login, a wrong one, or a network not allowed), invalid (malformed), failed (another host not reached)."}, []string{"outcome"}),
	}
	m.reg.MustRegister(m.requests, m.requestDuration, m.servedBytes, m.outcomes, m.upstream, m.upstreamLatency, m.upstreamErrors, m.sharedStore, m.peers, m.forwardProxy)
	m.initSeries()
	return m
}

// initSeries creates, at 0, the series whose label values are known
// before any request (every source and outcome): a vector has no series
// until its first event, and a rule or dashboard over a series that does
// not exist yet shows nothing (and absent() fires) instead of 0.
func (m *Metrics) initSeries() {
	for _, s := range []string{"cache", "shared", "peer", "upstream"} {
		m.servedBytes.WithLabelValues(s)
	}
	for _, o := range []string{proxy.OutcomeHit, proxy.OutcomeMiss, proxy.OutcomeCoalesced, proxy.OutcomeRevalidated,
		proxy.OutcomeJoined, proxy.OutcomeFresh, proxy.OutcomeStale, proxy.OutcomeUpstream, proxy.OutcomeShared, proxy.OutcomePeer} {
		m.outcomes.WithLabelValues(o)
	}
	for _, op := range []string{sharedstore.OpGet, sharedstore.OpHead, sharedstore.OpPut, sharedstore.OpDelete, sharedstore.OpMetaGet, sharedstore.OpMetaPut, sharedstore.OpList} {
		for _, o := range []string{sharedstore.OutcomeOK, sharedstore.OutcomeNotFound, sharedstore.OutcomeError} {
			m.sharedStore.WithLabelValues(op, o)
		}
	}
	m.sharedStore.WithLabelValues(sharedstore.OpPut, sharedstore.OutcomeExists)
	for _, o := range peers.Outcomes {
		m.peers.WithLabelValues(o)
	}
	for _, o := range forwardproxy.Outcomes {
		m.forwardProxy.WithLabelValues(o)
	}
}

// readStats registers the counters the packages keep themselves, read at
// scrape time.
func (m *Metrics) readStats(store *cache.Store, px proxies, tokens sources, reach *Reachability) {
	counter := func(name, help string, f func() int64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: name, Help: help}, func() float64 { return float64(f()) })
	}
	gauge := func(name, help string, f func() float64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: name, Help: help}, f)
	}
	ps := px.stat
	m.reg.MustRegister(
		counter("upstream_bytes_total", "Body bytes downloaded from upstream into the cache.", ps(func(s *proxy.Stats) int64 { return s.UpstreamBytes.Load() })),
		counter("downloads_total", "Upstream downloads started (one per uncached digest, however many clients asked).", ps(func(s *proxy.Stats) int64 { return s.Downloads.Load() })),
		counter("download_failures_total", "Upstream downloads that failed; nothing of them was kept.", ps(func(s *proxy.Stats) int64 { return s.DownloadFailures.Load() })),
		counter("downloads_refused_total", "Misses refused with 429 because MAX_DOWNLOADS were running.", ps(func(s *proxy.Stats) int64 { return s.Refused.Load() })),
		counter("shared_store_corrupt_total", "Shared-tier objects that did not match their digest when read (each deleted, the digest downloaded from upstream again).", ps(func(s *proxy.Stats) int64 { return s.SharedCorrupt.Load() })),
		counter("shared_store_write_failures_total", "Background writes to the shared tier that failed or were skipped (too many waiting); no pull failed for them.", ps(func(s *proxy.Stats) int64 { return s.SharedWriteFailures.Load() })),
		counter("digest_mismatches_total", "Downloads whose bytes did not match their digest (or declared size).", func() int64 {
			cs := store.Stats()
			return cs.DigestMismatches + cs.SizeMismatches + ps(func(s *proxy.Stats) int64 { return s.DigestMismatches.Load() })()
		}),
		counter("cache_evictions_total", "Entries evicted to stay under CACHE_MAX_SIZE.", func() int64 { return store.Stats().Evictions }),
		counter("cache_evicted_bytes_total", "Bytes evicted to stay under CACHE_MAX_SIZE.", func() int64 { return store.Stats().EvictedBytes }),
		counter("cache_disk_full_total", "Downloads streamed to clients but not stored because the cache filesystem was full (or below the index's reserve).", func() int64 { return store.Stats().DiskFull }),
		counter("token_fetches_total", "ECR authorization tokens fetched (all regions).", tokens.sum(func(s auth.Stats) int64 { return int64(s.Fetches) })),
		counter("token_fetch_failures_total", "Failed GetAuthorizationToken calls (all regions).", tokens.sum(func(s auth.Stats) int64 { return int64(s.FetchFailures) })),
		counter("token_refreshes_total", "Tokens fetched because ECR rejected the one in hand (all regions).", tokens.sum(func(s auth.Stats) int64 { return int64(s.Refreshes) })),
		counter("download_resumes_total", "Downloads cut short and resumed where they stopped (failed attempts included).", ps(func(s *proxy.Stats) int64 { return s.Resumes.Load() })),
		counter("link_confirmations_total", "HEADs sent upstream to learn whether a repository holds content the cache has but has not seen under it.", ps(func(s *proxy.Stats) int64 { return s.Confirmations.Load() })),
		counter("link_confirmations_refused_total", "Of those, the ones upstream refused (404 or another refusal, or no answer): nothing was served.", ps(func(s *proxy.Stats) int64 { return s.Unconfirmed.Load() })),
		counter("stale_answers_total", "Tags answered from the cache because their upstream could not be reached (STALE_IF_ERROR).", ps(func(s *proxy.Stats) int64 { return s.Stale.Load() })),
		counter("tag_lookups_joined_total", "Tag lookups (HEAD or GET by tag) a request joined, under way for another, instead of asking upstream itself.", ps(func(s *proxy.Stats) int64 { return s.TagJoined.Load() })),
		counter("tag_fresh_answers_total", "Tags answered from a record younger than TAG_FRESHNESS, without asking upstream.", ps(func(s *proxy.Stats) int64 { return s.TagFresh.Load() })),
		counter("referrers_lookups_joined_total", "Referrers lists a request joined, under way for another, instead of asking upstream itself.", ps(func(s *proxy.Stats) int64 { return s.ReferrersJoined.Load() })),
		counter("referrers_tag_schema_total", "Referrers lists answered from the tag schema (sha256-<hex> tags) because upstream has no referrers API.", ps(func(s *proxy.Stats) int64 { return s.ReferrersFallbacks.Load() })),
		counter("stale_referrers_total", "Referrers lists answered from the cache because their upstream could not be reached (STALE_IF_ERROR); also counted in stale_answers_total.", ps(func(s *proxy.Stats) int64 { return s.StaleReferrers.Load() })),
		counter("upstream_throttled_bytes_total", "Upstream bytes read under UPSTREAM_MAX_RATE.", ps(func(s *proxy.Stats) int64 { return s.ThrottledBytes.Load() })),
		counter("upstream_throttle_wait_seconds_total", "Time downloads waited for UPSTREAM_MAX_RATE.", func() int64 { return ps(func(s *proxy.Stats) int64 { return s.ThrottledNanos.Load() })() / 1e9 }),
		gauge("upstream_max_rate_bytes", "UPSTREAM_MAX_RATE in bytes per second (0: unlimited).", func() float64 { return float64(px.maxRate()) }),
		gauge("cache_stored_bytes", "Bytes in the cache.", func() float64 { return float64(store.Size()) }),
		gauge("cache_max_bytes", "CACHE_MAX_SIZE.", func() float64 { return float64(store.MaxSize()) }),
		gauge("cache_entries", "Blobs and manifests in the cache.", func() float64 { return float64(store.Stats().Entries) }),
		gauge("downloads_in_flight", "Upstream downloads running now.", func() float64 { return float64(px.inFlight()) }),
		gauge("upstream_reachable", "1 when the last attempt to reach ECR (token fetch or registry request) succeeded, else 0.", func() float64 {
			if reach.Check() != nil {
				return 0
			}
			return 1
		}),
		gauge("token_expiry_timestamp_seconds", "When the first of the ECR tokens in hand (one per region) expires (0: a region has none).", func() float64 {
			if at, ok := tokens.ready(); ok {
				return float64(at.Unix())
			}
			return 0
		}),
	)
}

// RegisterBuildInfo registers ecr_mirror_build_info{version,commit,goversion},
// always 1: which build is running, to join with other series or to
// watch a rollout.
func (m *Metrics) RegisterBuildInfo(info buildinfo.Info) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "build_info",
		Help:        "Always 1; its labels say which build is running: version, commit and the Go release that built it.",
		ConstLabels: prometheus.Labels{"version": info.Version, "commit": info.Commit, "goversion": info.GoVersion}},
		func() float64 { return 1 }))
}

// WatchClients registers the client connection metrics.
func (m *Metrics) WatchClients(b *clientconn.Budget, wd *clientconn.Watchdog) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "client_connections",
			Help: "Client connections open now on the registry listeners."}, func() float64 { return float64(b.Open()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "client_connections_max",
			Help: "MAX_CLIENT_CONNECTIONS, or what the open-file limit allows."}, func() float64 { return float64(b.Max()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: "client_connections_refused_total",
			Help: "Connections answered 503 because MAX_CLIENT_CONNECTIONS were open."}, func() float64 { return float64(b.Refused()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: "client_stalls_total",
			Help: "Responses cut because their client took no bytes for CLIENT_STALL_TIMEOUT."}, func() float64 { return float64(wd.Cuts()) }),
	)
}

// WatchSharedSweeps registers the metrics of the shared tier's sweeps
// (SHARED_STORE_MAX_SIZE), read from stats at scrape time.
func (m *Metrics) WatchSharedSweeps(stats func() sharedstore.SweepStats) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "shared_store_bytes",
			Help: "Bytes of content in the shared tier after this replica's last sweep (0 before its first)."}, func() float64 { return float64(stats().Bytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: "shared_store_swept_bytes_total",
			Help: "Bytes this replica's sweeps deleted from the shared tier to keep it under SHARED_STORE_MAX_SIZE."}, func() float64 { return float64(stats().SweptBytes) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: "shared_store_sweeps_total",
			Help: "Sweeps of the shared tier this replica ran to the end."}, func() float64 { return float64(stats().Sweeps) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: "shared_store_sweep_failures_total",
			Help: "Sweeps of the shared tier that failed (a listing or read failed: nothing deleted; or some deletes failed)."}, func() float64 { return float64(stats().Failures) }),
	)
}

// Label values come only from small fixed sets, never from what a client
// wrote: each distinct value is a series kept for the life of the process,
// so a client choosing them could grow the process and the scrape without
// bound. Routes are registry.Kind names, methods and statuses are folded by
// methodLabel and statusLabel, outcomes, kinds and failures are the proxy's
// constants.

// methodLabel is method when it is one of the HTTP methods a registry
// serves, else "other".
func methodLabel(method string) string {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut,
		http.MethodPatch, http.MethodDelete, http.MethodOptions:
		return method
	}
	return "other"
}

// statusLabel is an HTTP status as a label: its number when it is a valid
// status (100-599), else "other".
func statusLabel(status int) string {
	if status < 100 || status > 599 {
		return "other"
	}
	return strconv.Itoa(status)
}

// ObserveRequest records one client request.
func (m *Metrics) ObserveRequest(ri registry.RequestInfo) {
	method := methodLabel(ri.Method)
	m.requests.WithLabelValues(ri.Route, method, statusLabel(ri.Status)).Inc()
	m.requestDuration.WithLabelValues(ri.Route, method).Observe(ri.Duration.Seconds())
	if ri.Outcome == "" {
		return
	}
	m.outcomes.WithLabelValues(ri.Outcome).Inc()
	source := "upstream"
	switch ri.Outcome {
	case proxy.OutcomeHit, proxy.OutcomeRevalidated, proxy.OutcomeJoined, proxy.OutcomeFresh, proxy.OutcomeStale:
		source = "cache"
	case proxy.OutcomeShared:
		source = "shared"
	case proxy.OutcomePeer:
		source = "peer"
	}
	m.servedBytes.WithLabelValues(source).Add(float64(ri.Bytes))
}

// ObserveSharedStore records one request to the shared blob tier.
func (m *Metrics) ObserveSharedStore(op, outcome string) {
	m.sharedStore.WithLabelValues(op, outcome).Inc()
}

// ObserveForwardProxy records one request to the forward proxy.
func (m *Metrics) ObserveForwardProxy(outcome string) {
	m.forwardProxy.WithLabelValues(outcome).Inc()
}

// ObservePeer records one request to a digest's owner among the peers.
func (m *Metrics) ObservePeer(outcome string) {
	m.peers.WithLabelValues(outcome).Inc()
}

// ObserveUpstream records one request to ECR.
// The upstream label is the host of a configured upstream: a fixed set.
func (m *Metrics) ObserveUpstream(ev proxy.UpstreamEvent) {
	if ev.Failure != "" {
		m.upstreamErrors.WithLabelValues(ev.Upstream, ev.Kind, ev.Failure).Inc()
		return
	}
	m.upstream.WithLabelValues(ev.Upstream, ev.Kind, methodLabel(ev.Method), statusLabel(ev.Status)).Inc()
	m.upstreamLatency.WithLabelValues(ev.Upstream, ev.Kind).Observe(ev.Duration.Seconds())
	switch s := ev.Status; {
	case s == 429:
		m.upstreamErrors.WithLabelValues(ev.Upstream, ev.Kind, "throttled").Inc()
	case s == 401 || s == 403:
		m.upstreamErrors.WithLabelValues(ev.Upstream, ev.Kind, "denied").Inc()
	case s >= 500:
		m.upstreamErrors.WithLabelValues(ev.Upstream, ev.Kind, "server").Inc()
	}
}

// Handler serves the metrics in Prometheus' text format; errors in
// gathering them are logged to log as warnings.
func (m *Metrics) Handler(log *slog.Logger) http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)})
}

// proxies are the mirror's proxies, one per upstream, read together.
type proxies []*proxy.Proxy

// stat returns a function summing f over the proxies' Stats.
func (ps proxies) stat(f func(*proxy.Stats) int64) func() int64 {
	return func() int64 {
		var n int64
		for _, p := range ps {
			n += f(p.Stats())
		}
		return n
	}
}

// inFlight is the downloads running now, all upstreams together.
func (ps proxies) inFlight() int {
	n := 0
	for _, p := range ps {
		n += p.InFlight()
	}
	return n
}

// maxRate is UPSTREAM_MAX_RATE, which every proxy shares.
func (ps proxies) maxRate() int64 {
	if len(ps) == 0 {
		return 0
	}
	return ps[0].Stats().MaxRate.Load()
}

// sources are the ECR token sources, one per region, read together.
type sources []*auth.Source

// sum returns a function summing f over the sources' Stats.
func (ss sources) sum(f func(auth.Stats) int64) func() int64 {
	return func() int64 {
		var n int64
		for _, s := range ss {
			n += f(s.Stats())
		}
		return n
	}
}

// ready returns when the first token in hand expires; ok is false when
// a source has no valid token (or there is no source).
func (ss sources) ready() (first time.Time, ok bool) {
	for _, s := range ss {
		at, ok := s.Ready()
		if !ok {
			return time.Time{}, false
		}
		if first.IsZero() || at.Before(first) {
			first = at
		}
	}
	return first, len(ss) > 0
}
