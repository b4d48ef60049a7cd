package main

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/ecr-mirror/ecr-mirror/access"
	"github.com/ecr-mirror/ecr-mirror/admin"
	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/clientconn"
	"github.com/ecr-mirror/ecr-mirror/internal/buildinfo"
	"github.com/ecr-mirror/ecr-mirror/internal/configreload"
	"github.com/ecr-mirror/ecr-mirror/internal/forwardproxy"
	"github.com/ecr-mirror/ecr-mirror/internal/servergroup"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/internal/upstreams"
	"github.com/ecr-mirror/ecr-mirror/observe"
	"github.com/ecr-mirror/ecr-mirror/registry"
	"github.com/ecr-mirror/ecr-mirror/tlsreload"
)

func main() {
	// Everything the mirror and its cache commands create is its user's
	// only: the cache creates its own files with explicit modes, but
	// Badger creates its index files with 0666 less the umask.
	syscall.Umask(0o077)
	args, serve := serverArgs(os.Args[1:])
	if !serve {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := runCLI(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
		stop()
		os.Exit(code)
	}
	cfg, err := settings.Parse(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ecr-mirror: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	log := cfg.Logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal, the default action is back: a second
		// one ends the process at once.
		<-ctx.Done()
		stop()
	}()
	if err := run(ctx, cfg, log, nil); err != nil {
		log.Error("ecr-mirror stopped", "error", err)
		os.Exit(1)
	}
}

// run serves until ctx is done. ready, when set, is called with the
// registry listeners' addresses once requests are accepted: LISTEN_ADDR's
// first, then NAMESPACE_LISTENERS' in order, then PULL_THROUGHS' prefix:port
// ones, then FORWARD_PROXY_ADDR's.
func run(ctx context.Context, cfg *settings.Config, log *slog.Logger, ready func([]net.Addr)) error {
	cfg.LogAliases(log)
	policy, err := access.New(cfg.Access, log.With("component", "access"))
	if err != nil {
		return fmt.Errorf("client access control: %w", err)
	}
	certs, tlsConfig, err := loadTLS(cfg, log)
	if err != nil {
		return err
	}
	// Before anything listens: a SIGHUP must never find the default
	// action, which ends the process.
	defer configreload.Watch(ctx, cfg, policy, certs, log)()
	store, err := cache.Open(cache.Options{Dir: cfg.CacheDir, MaxSize: cfg.CacheMaxSize, Logger: log.With("component", "cache")})
	if err != nil {
		return fmt.Errorf("opening cache in %s: %w", cfg.CacheDir, err)
	}
	defer store.Close()
	up, err := upstreams.Start(ctx, cfg, store, log)
	if err != nil {
		return err
	}
	defer up.Close()
	namespaces, err := registry.NewNamespaces(cfg.PullThroughs, cfg.Upstreams[0].Host, up.Hosts...)
	if err != nil {
		return fmt.Errorf("PULL_THROUGHS: %w", err)
	}
	adminSrv, err := newAdminServer(cfg, store, up, namespaces, log)
	if err != nil {
		return err
	}
	defer adminSrv.Listener.Close() // closed by servergroup.Serve once it runs
	clients, err := clientconn.StartLimits(cfg.ClientStallTimeout, cfg.MaxClientConnections, log.With("component", "clients"))
	if err != nil {
		return fmt.Errorf("CLIENT_STALL_TIMEOUT/MAX_CLIENT_CONNECTIONS: %w", err)
	}
	defer clients.Stop()
	up.Metrics.WatchClients(clients.Budget, clients.Watchdog)
	h := &handlers{cfg: cfg, store: store, up: up, policy: policy, namespaces: namespaces, clients: clients, log: log}
	if err := h.loadForwardProxyCA(); err != nil {
		return err
	}
	listeners, err := h.listeners(tlsConfig)
	if err != nil {
		return err
	}
	servers, addrs, err := servergroup.Listen(listeners, clients, log)
	if err != nil {
		return err
	}
	defer h.shutdownForwardProxy(listeners, servers)()
	log.Info("listening", "addr", adminSrv.Listener.Addr().String(), "serves", "admin socket: cache commands")
	for i, l := range listeners {
		log.Info("listening", "addr", servers[i].Listener.Addr().String(), "serves", l.What, "tls", l.TLS != nil)
	}
	logServing(cfg, log, store, namespaces, clients.Budget, tlsConfig != nil, policy)
	if ready != nil {
		ready(addrs)
	}
	// On shutdown: stop accepting, let client streams finish within the
	// grace period, then (deferred) abandon downloads still running,
	// whose temp files are removed and never indexed, and close the index.
	return servergroup.Serve(ctx, append([]servergroup.Server{adminSrv}, servers...), cfg.ShutdownGrace, log)
}

// loadTLS is the registry listeners' certificates, reloaded as the
// files are renewed, and their TLS configuration; nil: plain HTTP.
func loadTLS(cfg *settings.Config, log *slog.Logger) (*tlsreload.Reloader, *tls.Config, error) {
	if cfg.TLSCertificate == "" {
		return nil, nil, nil
	}
	certs, err := tlsreload.New(cfg.TLSCertificate, cfg.TLSPrivateKey, log.With("component", "tls"))
	if err != nil {
		return nil, nil, fmt.Errorf("TLS_CERTIFICATE/TLS_PRIVATE_KEY: %w", err)
	}
	return certs, certs.TLSConfig(), nil
}

// newAdminServer builds the admin socket's server: the cache commands
// on this running mirror, and the registry API for the pulls of "cache
// pin". It is shut down after the registry listeners.
func newAdminServer(cfg *settings.Config, store *cache.Store, up *upstreams.Side, namespaces *registry.Namespaces, log *slog.Logger) (servergroup.Server, error) {
	api := registry.NewHandler(up.Default, log.With("component", "admin"),
		registry.WithNamespaces(namespaces, ""), registry.WithUpstreams(up.Others), registry.WithObserver(up.Metrics.ObserveRequest))
	srv, ln, err := admin.NewServer(cfg.CacheDir, store, cfg.Upstreams[0].Host, api, up.SharedPins(), log.With("component", "admin"))
	if err != nil {
		return servergroup.Server{}, err
	}
	return servergroup.Server{Name: "admin socket " + filepath.Join(cfg.CacheDir, admin.SocketName), HTTP: srv, Listener: ln, Late: true}, nil
}

// handlers builds what the mirror serves on its TCP listeners.
type handlers struct {
	cfg        *settings.Config
	store      *cache.Store
	up         *upstreams.Side
	policy     *access.Policy
	namespaces *registry.Namespaces
	clients    *clientconn.Limits
	ca         *forwardproxy.CA    // FORWARD_PROXY_CA_DIR's; nil: no forward proxy
	fwd        *forwardproxy.Proxy // FORWARD_PROXY_ADDR's (forwardproxy.go)
	log        *slog.Logger
}

// listeners are the TCP listeners cfg asks for, the registry API's
// first (Limited): LISTEN_ADDR, then NAMESPACE_LISTENERS, then PULL_THROUGHS'
// prefix:port listeners, then FORWARD_PROXY_ADDR.
func (h *handlers) listeners(tlsConfig *tls.Config) ([]servergroup.Listener, error) {
	cfg := h.cfg
	probe := observe.NewProbes(cfg.CacheDir, h.store, h.up.Tokens, h.up.Reach, cfg.StaleIfError > 0)
	h.watchTiers(probe)
	metrics := h.up.Metrics.Handler(h.log)
	all := []servergroup.Listener{{Setting: "LISTEN_ADDR", Addr: cfg.ListenAddr, Handler: h.front(cfg.DefaultNamespace, probe, metrics), TLS: tlsConfig,
		What: "registry API: " + cmp.Or(cfg.DefaultNamespace, "ECR repositories by name"), Limited: true}}
	for _, nl := range cfg.NamespaceListeners {
		all = append(all, servergroup.Listener{Setting: "NAMESPACE_LISTENERS", Addr: nl.Addr, Handler: h.front(nl.Namespace, probe, metrics), TLS: tlsConfig,
			What: "registry API: " + nl.Namespace, Limited: true})
	}
	for _, pl := range cfg.PrefixListeners {
		all = append(all, servergroup.Listener{Setting: "PULL_THROUGHS", Addr: pl.Addr, Handler: h.front("", probe, metrics, registry.WithRepositoryPrefix(pl.Prefix, pl.LibraryPrefix)), TLS: tlsConfig,
			What: "registry API: ECR repositories under " + pl.Prefix + "/", Limited: true})
	}
	if cfg.ForwardProxy.Addr != "" {
		l, err := h.forwardProxyListener(probe, tlsConfig)
		if err != nil {
			return nil, err
		}
		all = append(all, l)
	}
	if cfg.MetricsAddr != "" {
		all = append(all, servergroup.Listener{Setting: "METRICS_ADDR", Addr: cfg.MetricsAddr, Handler: observe.OpsHandler(probe, metrics), What: "metrics and probes"})
	}
	if srv := h.up.PeerServer(h.log); srv != nil {
		// Outside the client access policy: only replicas hold
		// PEER_SECRET, and the proxy still checks the repository.
		all = append(all, servergroup.Listener{Setting: "PEER_ADDR", Addr: cfg.PeerAddr, Handler: srv, What: "peer API (PEERS)"})
	}
	if cfg.PprofAddr != "" {
		all = append(all, servergroup.Listener{Setting: "PPROF_ADDR", Addr: cfg.PprofAddr, Handler: observe.PprofHandler(), What: "pprof"})
	}
	return all, nil
}

// watchTiers adds the shared tier and the peers to the probes.
func (h *handlers) watchTiers(probe *observe.Probes) {
	if h.cfg.SharedStore != "" {
		probe.WatchSharedStore(func() bool {
			for _, px := range h.up.Proxies {
				if !px.SharedStoreReachable() {
					return false
				}
			}
			return true
		})
	}
	if h.up.Members != nil {
		probe.WatchPeers(h.up.Members.Status)
	}
}

// front is the registry API of one listener, whose requests that name
// no registry belong to defaultNS, with the probes (and metrics, unless
// they have an address of their own) beside it. The policy covers every
// path there: ALLOW_NETWORKS holds for probes and metrics too, while
// login and rules are for the API only.
func (h *handlers) front(defaultNS string, probe, metrics http.Handler, more ...registry.HandlerOption) http.Handler {
	api := registry.NewHandler(h.up.Default, h.log.With("component", "http"), append([]registry.HandlerOption{
		registry.WithPush(h.cfg.Push),
		registry.WithNamespaces(h.namespaces, defaultNS),
		registry.WithUpstreams(h.up.Others),
		registry.WithTrustedProxies(h.cfg.TrustedProxies),
		registry.WithObserver(h.up.Metrics.ObserveRequest)}, more...)...)
	if h.cfg.MetricsAddr != "" {
		metrics = nil // served on METRICS_ADDR only
	}
	return h.policy.Wrap(h.withCACert(observe.BesideAPI(api, probe, metrics)))
}

// logServing logs what the mirror serves with, and warns of what is off.
func logServing(cfg *settings.Config, log *slog.Logger, store *cache.Store, namespaces *registry.Namespaces, budget *clientconn.Budget, tlsOn bool, policy *access.Policy) {
	build := buildinfo.Read()
	log.Info("ecr-mirror serving", "version", build.Version, "commit", build.Commit,
		"upstreams", upstreams.Names(cfg.Upstreams), "region", cfg.Region, "pull_throughs", namespaces.Hosts(),
		"push", cfg.Push, "cache_dir", cfg.CacheDir, "cache_max_bytes", cfg.CacheMaxSize, "cache_bytes", store.Size(),
		"max_downloads", cfg.MaxDownloads, "max_client_connections", budget.Max(), "client_stall_timeout", cfg.ClientStallTimeout,
		"tls", tlsOn, "access", policy.Summary())
	if !tlsOn {
		log.Warn("TLS is off: clients must treat this registry as insecure (plain HTTP); set TLS_CERTIFICATE and TLS_PRIVATE_KEY")
	}
	if !policy.Enabled() {
		log.Warn("client access control is off: anyone who can reach the mirror pulls with its ECR credentials; set HTPASSWD_FILE, ALLOW_NETWORKS or ACCESS_RULES")
	}
}
