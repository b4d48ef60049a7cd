// Package upstreams builds the mirror's side towards its upstream
// registries from its settings: the credentials of each kind (an ECR
// token source per region, ECR Public's token, the logins of
// UPSTREAM_DOCKER_CONFIG for oci registries), one proxy per upstream over
// the one store with its own transport and redirect policy, the backend
// the registry handler routes each to, the shared blob tier of
// SHARED_STORE that every proxy reads before its upstream, kept under
// SHARED_STORE_MAX_SIZE by the uses the proxies record and a sweep
// (sharedstore.go: one replica sweeps, by the peers' rendezvous when
// there are peers), the peers of PEERS that every proxy asks next (peers.go),
// and the metrics and reachability that watch them. Every request upstream, the AWS SDK's token calls
// included, names the mirror's build in its User-Agent
// (ecr-mirror/<version>, from internal/buildinfo).
package upstreams

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/buildinfo"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/observe"
	"github.com/ecr-mirror/ecr-mirror/peers"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/registry"
	"github.com/ecr-mirror/ecr-mirror/sharedstore"
)

// Side is the mirror's side towards its upstreams: ECR tokens (one
// source per region), one proxy per upstream over the one store, and
// what watches them.
type Side struct {
	Tokens []*auth.Source // one per ECR region
	Reach  *observe.Reachability
	// Default is the default upstream's backend: its proxy, without the
	// Pusher side unless the upstream is ECR.
	Default registry.Backend
	// Others are the backends of the upstreams after the first, by host
	// (registry.WithUpstreams); Hosts are their hosts, in UPSTREAM's
	// order.
	Others  map[string]registry.Backend
	Hosts   []string
	Proxies []*proxy.Proxy // every upstream's, the default first
	Metrics *observe.Metrics
	// shared holds MAX_DOWNLOADS and UPSTREAM_MAX_RATE for all upstreams together.
	shared *proxy.Shared
	// sharedBlobs is SHARED_STORE's tier, given to every proxy; nil: off.
	sharedBlobs *sharedstore.Store
	// Members are PEERS' replicas (peers.go); nil: no peers.
	Members    *peers.Members
	peerClient *peers.Client
	peerSigner *peers.Signer
	stopTokens context.CancelFunc
	build      buildinfo.Info // for the User-Agent sent upstream

	// bound keeps sharedBlobs under SHARED_STORE_MAX_SIZE; nil: unbounded.
	bound *sharedBound
}

// Start starts refreshing the ECR tokens of every region an ecr
// upstream is in, and builds one proxy per upstream over store.
func Start(ctx context.Context, cfg *settings.Config, store *cache.Store, log *slog.Logger) (*Side, error) {
	up := &Side{Reach: observe.NewReachability(time.Now), Others: map[string]registry.Backend{},
		shared: proxy.NewShared(cfg.MaxRate, cfg.MaxDownloads), build: buildinfo.Read()}
	tokenCtx, stopTokens := context.WithCancel(ctx)
	up.stopTokens = stopTokens
	logins, err := auth.LoadDockerConfig(cfg.UpstreamDockerConfig, log.With("component", "auth"))
	if err != nil {
		stopTokens()
		return nil, err // it names UPSTREAM_DOCKER_CONFIG and the file
	}
	creds := &upstreamCredentials{regions: map[string]*auth.Source{}, logins: logins}
	if up.sharedBlobs, err = up.sharedStore(ctx, cfg); err != nil {
		stopTokens()
		return nil, err
	}
	if up.bound, err = newSharedBound(up.sharedBlobs, cfg, log.With("component", "sharedstore")); err != nil {
		stopTokens()
		return nil, err
	}
	if err := up.startPeers(tokenCtx, cfg, log); err != nil {
		up.bound.close()
		stopTokens()
		return nil, err
	}
	for i, u := range cfg.Upstreams {
		wrap, err := up.credentials(tokenCtx, cfg, u, creds, log)
		if err == nil {
			err = up.addProxy(cfg, u, i == 0, store, wrap, log)
		}
		if err != nil {
			up.Close()
			return nil, err
		}
	}
	up.Metrics = observe.NewMetrics(store, up.Proxies, up.Tokens, up.Reach) // before anything is served
	up.Metrics.RegisterBuildInfo(up.build)
	up.startSharedUpkeep(cfg, store, log.With("component", "sharedstore"))
	return up, nil
}

// upstreamCredentials are what the upstreams log in with: an ECR token
// source per region, ECR Public's source, and the logins of
// UPSTREAM_DOCKER_CONFIG.
type upstreamCredentials struct {
	regions   map[string]*auth.Source
	ecrPublic *auth.Source // made on first use
	logins    *auth.DockerConfig
}

// credentials returns what adds u's credentials to a request, for u's
// host only: the ECR token of u's region for an ecr upstream (one token
// source per region, started on first use: GetAuthorizationToken's token
// is good for every registry of its region the principal may read); for
// ecr-public, the registry's token flow with an ECR Public token when the
// AWS credentials give one (higher rate limits), else anonymously; for
// oci, the registry's own challenge answered with UPSTREAM_DOCKER_CONFIG's
// login for that registry, if any.
func (up *Side) credentials(ctx context.Context, cfg *settings.Config, u settings.Upstream, creds *upstreamCredentials, log *slog.Logger) (func(http.RoundTripper) http.RoundTripper, error) {
	alog := log.With("component", "auth", "upstream", u.Host)
	switch u.Kind {
	case settings.KindOCI:
		return func(rt http.RoundTripper) http.RoundTripper { return creds.logins.Transport(u.Host, rt) }, nil
	case settings.KindECRPublic:
		if creds.ecrPublic == nil {
			api, err := auth.NewECRPublicClient(ctx, cfg.ECRPublicEndpoint, up.awsUserAgent())
			if err != nil {
				return nil, fmt.Errorf("setting up AWS credentials for ECR Public (UPSTREAM %s): %w", u.URL, err)
			}
			creds.ecrPublic = auth.NewSource(auth.ECRPublicFetcher(api), auth.Options{}) // the transport logs
		}
		opts := auth.RegistryOptions{Login: auth.SourceLogin(creds.ecrPublic), AnonymousFallback: true, Logger: alog}
		return func(rt http.RoundTripper) http.RoundTripper { return auth.NewRegistryTransport(u.Host, rt, opts) }, nil
	}
	src := creds.regions[u.Region]
	if src == nil {
		ecrClient, err := auth.NewECRClient(ctx, u.Region, cfg.ECREndpoint, up.awsUserAgent())
		if err != nil {
			return nil, fmt.Errorf("setting up AWS credentials for region %s (UPSTREAM %s): %w", u.Region, u.URL, err)
		}
		src = auth.NewSource(auth.ECRFetcher(ecrClient), auth.Options{Logger: alog.With("region", u.Region), OnFetch: up.Reach.TokenFetchedIn(u.Region)})
		go src.Run(ctx)
		creds.regions[u.Region] = src
		up.Tokens = append(up.Tokens, src)
	}
	return func(rt http.RoundTripper) http.RoundTripper { return src.Transport(u.URL.Host, rt) }, nil
}

// addProxy builds u's proxy, with a transport, client and redirect
// policy of its own, credentials added by wrap.
func (up *Side) addProxy(cfg *settings.Config, u settings.Upstream, main bool, store *cache.Store, wrap func(http.RoundTripper) http.RoundTripper, log *slog.Logger) error {
	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DisableCompression = true // blobs must arrive byte for byte
	base.MaxIdleConnsPerHost = 64
	base.ResponseHeaderTimeout = time.Minute
	if cfg.UpstreamDial != nil { // tests only
		base.DialContext = cfg.UpstreamDial
	}
	if cfg.UpstreamRootCAs != nil { // tests only
		base.TLSClientConfig = &tls.Config{RootCAs: cfg.UpstreamRootCAs, MinVersion: tls.VersionTLS12}
	}
	// Redirects (ECR's to S3) are followed only to where this upstream's
	// policy allows, checked again on the address dialled; no Referer.
	// Every request, token realms' and redirects' included, carries the
	// mirror's User-Agent, set under the credentials.
	ua := up.build.UserAgent()
	client := proxy.NewRedirectPolicy(u.URL).Client(base, func(rt http.RoundTripper) http.RoundTripper {
		return wrap(proxy.UserAgent(ua, rt))
	})
	px, err := proxy.New(proxy.Options{
		Upstream: u.URL, MainUpstream: main, Client: client, Store: store,
		Logger:       log.With("component", "proxy", "upstream", u.Host),
		Shared:       up.shared,
		TagFreshness: cfg.TagFreshness, SeparateTagLookups: cfg.SeparateTagLookups,
		UploadDir:       filepath.Join(cfg.CacheDir, "tmp"),
		StaleIfError:    cfg.StaleIfError,
		TagTimeout:      cfg.TagTimeout,
		StallTimeout:    cfg.StallTimeout,
		StallClock:      cfg.StallClock,
		Retries:         cfg.Retries,
		ObserveUpstream: func(ev proxy.UpstreamEvent) { up.Reach.ObserveUpstream(ev); up.Metrics.ObserveUpstream(ev) },
		SharedStore:     up.sharedTier(),
		UsedManifest:    up.bound.recorder(),
		Peers:           up.peersOption(),
	})
	if err != nil {
		return fmt.Errorf("UPSTREAM %s: %w", u.URL, err)
	}
	up.Proxies = append(up.Proxies, px)
	var b registry.Backend = px
	if u.Kind != settings.KindECR {
		b = pullOnly{px}
	}
	if main {
		up.Default = b
	} else {
		up.Others[u.Host], up.Hosts = b, append(up.Hosts, u.Host)
	}
	return nil
}

// awsUserAgent adds ecr-mirror/<version> to the AWS SDK's User-Agent.
func (up *Side) awsUserAgent() auth.ClientOption {
	return auth.WithUserAgent("ecr-mirror", up.build.Version)
}

// Close abandons the downloads still running, then stops the tokens.
func (up *Side) Close() {
	for _, px := range up.Proxies {
		px.Close()
	}
	up.bound.close()
	up.stopTokens()
}

// pullOnly is the backend of an upstream that takes no pushes through
// the mirror (not ECR): the proxy without its Pusher side, so the
// registry handler refuses them naming the upstream.
type pullOnly struct{ px *proxy.Proxy }

var (
	_ registry.Backend         = pullOnly{}
	_ registry.ReferrersLister = pullOnly{}
)

func (b pullOnly) Blob(ctx context.Context, req *registry.Request) (*registry.Content, error) {
	return b.px.Blob(ctx, req)
}

func (b pullOnly) Manifest(ctx context.Context, req *registry.Request) (*registry.Content, error) {
	return b.px.Manifest(ctx, req)
}

func (b pullOnly) Tags(ctx context.Context, name, rawQuery string) (*registry.TagList, error) {
	return b.px.Tags(ctx, name, rawQuery)
}

func (b pullOnly) Referrers(ctx context.Context, name string, dgst digest.Digest, rawQuery string) (*registry.ReferrerList, error) {
	return b.px.Referrers(ctx, name, dgst, rawQuery)
}

// Names names the upstreams for the log: kind:URL each.
func Names(ups []settings.Upstream) []string {
	names := make([]string, len(ups))
	for i, u := range ups {
		names[i] = u.Kind + ":" + u.URL.String()
	}
	return names
}
