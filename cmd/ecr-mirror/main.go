// Command ecr-mirror is a caching pull-through mirror for AWS ECR.
//
// Run with no arguments (or "serve") it serves the registry API; see
// README.md for its settings.
package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

func main() {
	cfg, err := parseConfig(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "ecr-mirror: invalid configuration:\n%v\n", err)
		os.Exit(2)
	}
	log := newLogger(cfg, os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log, nil); err != nil {
		log.Error("ecr-mirror stopped", "error", err)
		os.Exit(1)
	}
}

// shutdownGrace is how long in-flight requests get to finish on shutdown.
const shutdownGrace = 30 * time.Second

// run serves until ctx is done. ready, when set, is called with the
// listening addresses once requests are accepted: LISTEN_ADDR's first,
// then NAMESPACE_LISTENERS' in order.
func run(ctx context.Context, cfg *config, log *slog.Logger, ready func([]net.Addr)) error {
	store, err := cache.Open(cache.Options{Dir: cfg.CacheDir, MaxSize: cfg.CacheMaxSize, Logger: log.With("component", "cache")})
	if err != nil {
		return fmt.Errorf("opening cache in %s: %w", cfg.CacheDir, err)
	}
	defer store.Close()

	ecrClient, err := auth.NewECRClient(ctx, cfg.Region, cfg.ECREndpoint)
	if err != nil {
		return fmt.Errorf("setting up AWS credentials: %w", err)
	}
	tokens := auth.NewSource(auth.ECRFetcher(ecrClient), auth.Options{Logger: log.With("component", "auth")})
	tokenCtx, stopTokens := context.WithCancel(ctx)
	defer stopTokens()
	go tokens.Run(tokenCtx)

	base := http.DefaultTransport.(*http.Transport).Clone()
	base.DisableCompression = true // blobs must arrive byte for byte
	base.MaxIdleConnsPerHost = 64
	base.ResponseHeaderTimeout = time.Minute
	client := &http.Client{
		Transport:     tokens.Transport(cfg.Upstream.Host, base),
		CheckRedirect: proxy.SafeRedirects,
	}
	px, err := proxy.New(proxy.Options{Upstream: cfg.Upstream, Client: client, Store: store, Logger: log.With("component", "proxy")})
	if err != nil {
		return err
	}
	defer px.Close()

	namespaces, err := registry.NewNamespaces(cfg.PullThroughs, cfg.Upstream.Host)
	if err != nil {
		return fmt.Errorf("PULL_THROUGHS: %w", err)
	}
	// One server per listener: LISTEN_ADDR, then one per namespace
	// listener, each with the registry its clients' requests belong to.
	listeners := append([]namespaceListener{{Addr: cfg.ListenAddr, Namespace: cfg.DefaultNamespace}}, cfg.NamespaceListeners...)
	var servers []*http.Server
	var addrs []net.Addr
	errc := make(chan error, len(listeners))
	for i, l := range listeners {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			for _, srv := range servers {
				srv.Close()
			}
			setting := "LISTEN_ADDR"
			if i > 0 {
				setting = "NAMESPACE_LISTENERS"
			}
			return fmt.Errorf("%s %s: %w", setting, l.Addr, err)
		}
		srv := &http.Server{
			Handler: registry.NewHandler(px, log.With("component", "http"),
				registry.WithPush(cfg.Push),
				registry.WithNamespaces(namespaces, l.Namespace),
				registry.WithTrustedProxies(cfg.TrustedProxies)),
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		servers, addrs = append(servers, srv), append(addrs, ln.Addr())
		go func() { errc <- srv.Serve(ln) }()
		log.Info("listening", "addr", ln.Addr().String(), "namespace", cmp.Or(l.Namespace, "(ECR repositories by name)"))
	}
	log.Info("ecr-mirror serving",
		"upstream", cfg.Upstream.String(), "region", cfg.Region, "pull_throughs", namespaces.Hosts(),
		"push", cfg.Push, "cache_dir", cfg.CacheDir, "cache_max_bytes", cfg.CacheMaxSize, "cache_bytes", store.Size())
	log.Warn("TLS is off: clients must treat this registry as insecure (plain HTTP)")
	if ready != nil {
		ready(addrs)
	}
	select {
	case err := <-errc:
		for _, srv := range servers {
			srv.Close()
		}
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	var wg sync.WaitGroup
	for _, srv := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Shutdown(sctx); err != nil {
				log.Warn("in-flight requests cut at shutdown", "error", err)
			}
		}()
	}
	wg.Wait()
	return nil
}
