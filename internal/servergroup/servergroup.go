// Package servergroup serves several HTTP servers as one: [Listen] opens
// their TCP listeners (the registry API's counted against the client
// limits), and [Serve] serves each in a goroutine of an errgroup, all
// shut down together when the context is done or one of them fails,
// those marked late after the others.
package servergroup

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"golang.org/x/sync/errgroup"
)

// Server is one server and the listener it serves.
type Server struct {
	Name     string // what it serves, for errors: the setting and address
	HTTP     *http.Server
	Listener net.Listener
	TLS      bool // ServeTLS (with the server's TLSConfig) rather than Serve
	// Late servers are shut down after the others: the mirror's admin
	// socket, whose "cache pin" pulls through the socket's own registry
	// API.
	Late bool
}

// Serve serves every server until ctx is done or one of them fails, in
// an errgroup: one goroutine per server and one that shuts them all down,
// the late ones after the others, giving in-flight requests grace in all
// to finish; requests still running after it are cut. It returns the
// first failure to serve, naming the server, or nil after a shutdown
// asked for by ctx.
func Serve(ctx context.Context, servers []Server, grace time.Duration, log *slog.Logger) error {
	g, gctx := errgroup.WithContext(ctx)
	for _, s := range servers {
		g.Go(s.serve)
	}
	g.Go(func() error {
		<-gctx.Done()
		if failed := context.Cause(gctx); ctx.Err() == nil {
			log.Error("shutting down: a listener failed", "error", failed, "grace", grace)
		} else {
			log.Info("shutting down: finishing in-flight requests", "grace", grace)
		}
		shutdownAll(servers, grace, log)
		return nil
	})
	return g.Wait()
}

// serve serves s until it is shut down, which is no failure.
func (s Server) serve() error {
	var err error
	if s.TLS {
		err = s.HTTP.ServeTLS(s.Listener, "", "") // HTTP/2 too, unless the Listener was HTTP1Only
	} else {
		err = s.HTTP.Serve(s.Listener)
	}
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("serving %s: %w", s.Name, err)
}

// shutdownAll shuts the servers down, the late ones after the others,
// within grace in all; those still busy then are closed.
func shutdownAll(servers []Server, grace time.Duration, log *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	for _, late := range []bool{false, true} {
		var phase errgroup.Group
		for _, s := range servers {
			if s.Late != late {
				continue
			}
			phase.Go(func() error {
				if err := s.HTTP.Shutdown(ctx); err != nil {
					log.Warn("in-flight requests cut at shutdown", "server", s.Name, "error", err)
					s.HTTP.Close()
				}
				return nil
			})
		}
		phase.Wait()
	}
}
