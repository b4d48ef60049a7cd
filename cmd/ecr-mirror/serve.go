package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"
)

// served is one server and the listener it serves.
type served struct {
	name string // what it serves, for errors: the setting and address
	srv  *http.Server
	ln   net.Listener
	tls  bool // ServeTLS (with the server's TLSConfig) rather than Serve
	// late servers are shut down after the others: the admin socket,
	// whose "cache pin" pulls through the socket's own registry API.
	late bool
}

// serveAll serves every server until ctx is done or one of them fails.
// Then it shuts them all down, the late ones after the others, giving
// in-flight requests grace in all to finish; requests still running
// after it are cut. It returns the first failure to serve, naming the
// server, or nil after a shutdown asked for by ctx.
func serveAll(ctx context.Context, servers []served, grace time.Duration, log *slog.Logger) error {
	errc := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			var err error
			if s.tls {
				err = s.srv.ServeTLS(s.ln, "", "") // HTTP/2 too
			} else {
				err = s.srv.Serve(s.ln)
			}
			if !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("serving %s: %w", s.name, err)
			}
		}()
	}
	var failed error
	select {
	case failed = <-errc:
		log.Error("shutting down: a listener failed", "error", failed, "grace", grace)
	case <-ctx.Done():
		log.Info("shutting down: finishing in-flight requests", "grace", grace)
	}
	sctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, late := range []bool{false, true} {
		var wg sync.WaitGroup
		for _, s := range servers {
			if s.late != late {
				continue
			}
			wg.Go(func() {
				if err := s.srv.Shutdown(sctx); err != nil {
					log.Warn("in-flight requests cut at shutdown", "server", s.name, "error", err)
					s.srv.Close()
				}
			})
		}
		wg.Wait()
	}
	return failed
}
