package servergroup

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Listener is one TCP address to serve and what is served there.
type Listener struct {
	Setting string // the setting that asked for it, for errors and names
	Addr    string
	Handler http.Handler
	What    string      // what it serves, for the log
	TLS     *tls.Config // nil: plain HTTP
	// HTTP1Only never negotiates HTTP/2 over TLS: a forward proxy's
	// CONNECT is another thing over HTTP/2, which its clients do not
	// speak to a proxy.
	HTTP1Only bool
	// Limited counts the listener's connections against the client
	// limits (the registry API's listeners).
	Limited bool
}

// Limits are the client limits every server's handler is watched by,
// and Limited listeners' connections counted against
// (clientconn.Limits).
type Limits interface {
	Listener(ln net.Listener, tlsConfig *tls.Config) net.Listener
	Handler(h http.Handler) http.Handler
}

// Listen opens every listener and builds its server, with the timeouts
// and header cap every client gets; addrs are the Limited listeners'
// addresses, in order. On an error, naming the setting and address, it
// closes what it opened.
func Listen(listeners []Listener, limits Limits, log *slog.Logger) (servers []Server, addrs []net.Addr, err error) {
	for _, l := range listeners {
		ln, err := net.Listen("tcp", l.Addr)
		if err != nil {
			for _, s := range servers {
				s.Listener.Close()
			}
			return nil, nil, fmt.Errorf("%s %s: %w", l.Setting, l.Addr, err)
		}
		if l.Limited {
			ln = limits.Listener(ln, l.TLS)
			addrs = append(addrs, ln.Addr())
		}
		srv := &http.Server{
			Handler:           limits.Handler(l.Handler),
			TLSConfig:         l.TLS,
			ReadHeaderTimeout: 30 * time.Second,
			IdleTimeout:       2 * time.Minute,
			MaxHeaderBytes:    64 << 10,
			ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		}
		if l.HTTP1Only {
			var p http.Protocols
			p.SetHTTP1(true)
			srv.Protocols = &p
		}
		servers = append(servers, Server{Name: l.Setting + " " + ln.Addr().String(), HTTP: srv, Listener: ln, TLS: l.TLS != nil})
	}
	return servers, addrs, nil
}
