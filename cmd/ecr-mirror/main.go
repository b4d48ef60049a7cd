// Command ecr-mirror is a caching pull-through mirror for AWS ECR.
//
// Run with no arguments (or "serve") it serves the registry API; see
// README.md for its settings.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
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
// listening address once requests are accepted.
func run(ctx context.Context, cfg *config, log *slog.Logger, ready func(net.Addr)) error {
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

	ln, err := net.Listen("tcp", cfg.ListenAddr)
	if err != nil {
		return fmt.Errorf("LISTEN_ADDR %s: %w", cfg.ListenAddr, err)
	}
	srv := &http.Server{
		Handler:           registry.NewHandler(px, log.With("component", "http"), registry.WithPush(cfg.Push)),
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	log.Info("ecr-mirror serving",
		"addr", ln.Addr().String(), "upstream", cfg.Upstream.String(), "region", cfg.Region,
		"cache_dir", cfg.CacheDir, "cache_max_bytes", cfg.CacheMaxSize, "cache_bytes", store.Size())
	log.Warn("TLS is off: clients must treat this registry as insecure (plain HTTP)")
	if ready != nil {
		ready(ln.Addr())
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serving: %w", err)
	case <-ctx.Done():
	}
	log.Info("shutting down", "grace", shutdownGrace)
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		log.Warn("in-flight requests cut at shutdown", "error", err)
	}
	return nil
}
