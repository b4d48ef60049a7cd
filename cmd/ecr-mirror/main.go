// Command ecr-mirror is a caching pull-through mirror for AWS ECR.
//
// Run with no arguments (or "serve") it serves the registry API; see
// README.md for its settings. "ecr-mirror help" lists the other commands
// (cli.go): warm, export, import and cache (ls, verify, pin, unpin, purge).
// Warm, export and cache pin read images with internal/imageclient; this
// package keeps their flags and output (warm.go, export.go).
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
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ecr-mirror/ecr-mirror/access"
	"github.com/ecr-mirror/ecr-mirror/admin"
	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/clientconn"
	"github.com/ecr-mirror/ecr-mirror/proxy"
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
	cfg, err := parseConfig(args, os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ecr-mirror: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	log := newLogger(cfg, os.Stderr)
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

// listener is one address the mirror serves and what it serves there.
type listener struct {
	setting string // the setting that asked for it, for errors
	addr    string
	handler http.Handler
	what    string      // for the log
	tls     *tls.Config // nil: plain HTTP
}

// run serves until ctx is done. ready, when set, is called with the
// registry listeners' addresses once requests are accepted: LISTEN_ADDR's
// first, then NAMESPACE_LISTENERS' in order.
func run(ctx context.Context, cfg *config, log *slog.Logger, ready func([]net.Addr)) error {
	policy, err := access.New(cfg.Access, log.With("component", "access"))
	if err != nil {
		return fmt.Errorf("client access control: %w", err)
	}
	var tlsConfig *tls.Config
	if cfg.TLSCertificate != "" {
		certs, err := tlsreload.New(cfg.TLSCertificate, cfg.TLSPrivateKey, log.With("component", "tls"))
		if err != nil {
			return fmt.Errorf("TLS_CERTIFICATE/TLS_PRIVATE_KEY: %w", err)
		}
		tlsConfig = certs.TLSConfig()
	}
	store, err := cache.Open(cache.Options{Dir: cfg.CacheDir, MaxSize: cfg.CacheMaxSize, Logger: log.With("component", "cache")})
	if err != nil {
		return fmt.Errorf("opening cache in %s: %w", cfg.CacheDir, err)
	}
	defer store.Close()

	ecrClient, err := auth.NewECRClient(ctx, cfg.Region, cfg.ECREndpoint)
	if err != nil {
		return fmt.Errorf("setting up AWS credentials: %w", err)
	}
	reach := newReachability(time.Now)
	tokens := auth.NewSource(auth.ECRFetcher(ecrClient), auth.Options{Logger: log.With("component", "auth"), OnFetch: reach.tokenFetched})
	tokenCtx, stopTokens := context.WithCancel(ctx)
	defer stopTokens()
	go tokens.Run(tokenCtx)

	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DisableCompression = true // blobs must arrive byte for byte
	base.MaxIdleConnsPerHost = 64
	base.ResponseHeaderTimeout = time.Minute
	// Redirects (ECR's to S3) are followed only to where the policy
	// allows, checked again on the address dialled; no Referer is sent.
	client := proxy.NewRedirectPolicy(cfg.Upstream).Client(base, func(rt http.RoundTripper) http.RoundTripper {
		return tokens.Transport(cfg.Upstream.Host, rt)
	})
	var mtr *mirrorMetrics // set below, before anything is served
	px, err := proxy.New(proxy.Options{
		Upstream: cfg.Upstream, Client: client, Store: store, Logger: log.With("component", "proxy"),
		MaxDownloads:    cfg.MaxDownloads,
		UploadDir:       filepath.Join(cfg.CacheDir, "tmp"),
		StaleIfError:    cfg.StaleIfError,
		TagTimeout:      cfg.TagTimeout,
		StallTimeout:    cfg.StallTimeout,
		StallClock:      cfg.stallClock,
		Retries:         cfg.Retries,
		MaxRate:         cfg.MaxRate,
		ObserveUpstream: func(ev proxy.UpstreamEvent) { reach.observeUpstream(ev); mtr.observeUpstream(ev) },
	})
	if err != nil {
		return err
	}
	defer px.Close()
	mtr = newMetrics(store, px, tokens, reach)
	namespaces, err := registry.NewNamespaces(cfg.PullThroughs, cfg.Upstream.Host)
	if err != nil {
		return fmt.Errorf("PULL_THROUGHS: %w", err)
	}

	// The registry API on LISTEN_ADDR and on each namespace listener,
	// each with the registry its clients' requests belong to; probes (and
	// metrics, unless they have an address of their own) beside it. The
	// policy covers every path there: ALLOW_NETWORKS holds for probes and
	// metrics too, while login and rules are for the API only.
	probe := &probes{cacheDir: cfg.CacheDir, store: store, tokens: tokens, reach: reach, staleIfError: cfg.StaleIfError > 0}
	metricsHandler := promhttp.HandlerFor(mtr.reg, promhttp.HandlerOpts{ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)})
	front := func(defaultNS string) http.Handler {
		api := registry.NewHandler(px, log.With("component", "http"),
			registry.WithPush(cfg.Push),
			registry.WithNamespaces(namespaces, defaultNS),
			registry.WithTrustedProxies(cfg.TrustedProxies),
			registry.WithObserver(mtr.observeRequest))
		return policy.Wrap(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch {
			case r.URL.Path == "/healthz" || r.URL.Path == "/readyz":
				probe.ServeHTTP(w, r)
			case r.URL.Path == "/metrics" && cfg.MetricsAddr == "":
				metricsHandler.ServeHTTP(w, r)
			default:
				api.ServeHTTP(w, r)
			}
		}))
	}
	// METRICS_ADDR is the operator's port, for Prometheus and the
	// orchestrator: metrics and probes, no registry API, not held to
	// ALLOW_NETWORKS (a kubelet probes from the node's address).
	opsHandler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz", "/readyz":
			probe.ServeHTTP(w, r)
		case "/metrics":
			metricsHandler.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	})
	// The admin socket: the cache commands on this running mirror, and
	// the registry API for the pulls of "cache pin".
	adminLn, err := admin.Listen(cfg.CacheDir)
	if err != nil {
		return err
	}
	adminSocket := filepath.Join(cfg.CacheDir, admin.SocketName)
	adminAPI := registry.NewHandler(px, log.With("component", "admin"),
		registry.WithNamespaces(namespaces, ""), registry.WithObserver(mtr.observeRequest))
	adminSvc := admin.NewService(store, func(ctx context.Context, ref registry.Reference) (digest.Digest, int64, error) {
		c := admin.RegistryClient(cfg.CacheDir)
		defer c.CloseIdleConnections()
		return pullWhole(ctx, c, ref)
	}, cfg.Upstream.Host)
	adminSrv := &http.Server{Handler: admin.NewHandler(adminSvc, adminAPI, log.With("component", "admin")),
		ReadHeaderTimeout: 30 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	defer adminLn.Close() // closed by serveAll once it runs
	servers := []served{{name: "admin socket " + adminSocket, srv: adminSrv, ln: adminLn, late: true}}

	listeners := []listener{{setting: "LISTEN_ADDR", addr: cfg.ListenAddr, handler: front(cfg.DefaultNamespace), tls: tlsConfig,
		what: "registry API: " + cmp.Or(cfg.DefaultNamespace, "ECR repositories by name")}}
	for _, nl := range cfg.NamespaceListeners {
		listeners = append(listeners, listener{setting: "NAMESPACE_LISTENERS", addr: nl.Addr, handler: front(nl.Namespace), tls: tlsConfig,
			what: "registry API: " + nl.Namespace})
	}
	apiListeners := len(listeners)
	if cfg.MetricsAddr != "" {
		listeners = append(listeners, listener{setting: "METRICS_ADDR", addr: cfg.MetricsAddr, handler: opsHandler, what: "metrics and probes"})
	}
	if cfg.PprofAddr != "" {
		listeners = append(listeners, listener{setting: "PPROF_ADDR", addr: cfg.PprofAddr, handler: pprofHandler(), what: "pprof"})
	}

	// Clients that stop reading are cut after CLIENT_STALL_TIMEOUT; the
	// registry listeners' connections are counted against the budget.
	// The watchdog runs until the servers are shut down.
	watchdog, err := clientconn.NewWatchdog(cfg.ClientStallTimeout, nil, log.With("component", "clients"))
	if err != nil {
		return fmt.Errorf("CLIENT_STALL_TIMEOUT: %w", err)
	}
	watchCtx, stopWatch := context.WithCancel(context.Background())
	defer stopWatch()
	go watchdog.Run(watchCtx)
	budget, err := clientconn.NewBudget(clientBudget(cfg.MaxClientConnections, log), log.With("component", "clients"))
	if err != nil {
		return fmt.Errorf("MAX_CLIENT_CONNECTIONS: %w", err)
	}
	mtr.watchClients(budget, watchdog)

	var addrs []net.Addr
	for i, l := range listeners {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			for _, s := range servers[1:] { // the admin socket's is deferred
				s.ln.Close()
			}
			return fmt.Errorf("%s %s: %w", l.setting, l.addr, err)
		}
		if i < apiListeners {
			ln = budget.Listener(ln, l.tls)
		}
		srv := &http.Server{
			Handler:           watchdog.Wrap(l.handler),
			TLSConfig:         l.tls,
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		servers = append(servers, served{name: l.setting + " " + ln.Addr().String(), srv: srv, ln: ln, tls: l.tls != nil})
		if i < apiListeners {
			addrs = append(addrs, ln.Addr())
		}
	}
	log.Info("listening", "addr", adminSocket, "serves", "admin socket: cache commands")
	for i, l := range listeners {
		log.Info("listening", "addr", servers[i+1].ln.Addr().String(), "serves", l.what, "tls", l.tls != nil)
	}
	log.Info("ecr-mirror serving",
		"upstream", cfg.Upstream.String(), "region", cfg.Region, "pull_throughs", namespaces.Hosts(),
		"push", cfg.Push, "cache_dir", cfg.CacheDir, "cache_max_bytes", cfg.CacheMaxSize, "cache_bytes", store.Size(),
		"max_downloads", cfg.MaxDownloads, "max_client_connections", budget.Max(), "client_stall_timeout", cfg.ClientStallTimeout,
		"tls", tlsConfig != nil, "access", policy.Summary())
	if tlsConfig == nil {
		log.Warn("TLS is off: clients must treat this registry as insecure (plain HTTP); set TLS_CERTIFICATE and TLS_PRIVATE_KEY")
	}
	if !policy.Enabled() {
		log.Warn("client access control is off: anyone who can reach the mirror pulls with its ECR credentials; set HTPASSWD_FILE, ALLOW_NETWORKS or ACCESS_RULES")
	}
	if ready != nil {
		ready(addrs)
	}
	// On shutdown: stop accepting, let client streams finish within the
	// grace period, then (deferred) abandon downloads still running,
	// whose temp files are removed and never indexed, and close the index.
	return serveAll(ctx, servers, cfg.ShutdownGrace, log)
}

// clientBudget is the cap on open client connections: MAX_CLIENT_CONNECTIONS
// when set (0: unset), else what the open-file limit allows (Go has
// raised the soft limit to the hard one).
func clientBudget(set int, log *slog.Logger) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("cannot read the open-file limit", "error", err)
		return cmp.Or(set, clientconn.DescriptorBudget(1024))
	}
	allowed := clientconn.DescriptorBudget(rl.Cur)
	if set == 0 {
		return allowed
	}
	if set > allowed {
		log.Warn("MAX_CLIENT_CONNECTIONS is more than the open-file limit allows: accept may fail before it is reached; raise LimitNOFILE / ulimit -n",
			"max_client_connections", set, "open_file_limit", rl.Cur, "allows", allowed)
	}
	return set
}

// pprofHandler serves Go's profiles, on a listener of their own.
func pprofHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
