package fakeecr

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"
)

// Link is a TCP relay that stands for the network between the mirror and
// a server (the fake's registry, say): point the mirror at Link.URL. While
// it is black-holed, as when a route silently drops packets, it relays
// nothing: new connections are accepted but get no byte, and connections
// already open stop mid-stream, so requests hang until their client gives
// up. Nothing is lost: traffic resumes when the black hole is lifted.
type Link struct {
	ln     net.Listener
	target string // host:port

	mu     sync.Mutex
	open   chan struct{} // closed while traffic flows
	closed chan struct{} // closed by Close
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// NewLink starts a relay on a random loopback port to target, a host:port
// or an http:// URL such as Server.URL.
func NewLink(target string) (*Link, error) {
	target = strings.TrimSuffix(strings.TrimPrefix(target, "http://"), "/")
	if _, _, err := net.SplitHostPort(target); err != nil {
		return nil, fmt.Errorf("fakeecr: link target %q: %w", target, err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("fakeecr: link listener: %w", err)
	}
	l := &Link{ln: ln, target: target, open: make(chan struct{}), closed: make(chan struct{}),
		conns: make(map[net.Conn]struct{})}
	close(l.open)
	l.wg.Go(l.accept)
	return l, nil
}

// URL is the relay's base URL, http://127.0.0.1:port.
func (l *Link) URL() string { return "http://" + l.ln.Addr().String() }

// SetBlackHole stops (true) or resumes (false) all traffic through the link.
func (l *Link) SetBlackHole(on bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.open:
		if on {
			l.open = make(chan struct{})
		}
	default:
		if !on {
			close(l.open)
		}
	}
}

// Close stops the relay and drops every connection through it. It is safe
// to call more than once.
func (l *Link) Close() {
	l.mu.Lock()
	select {
	case <-l.closed:
		l.mu.Unlock()
		return
	default:
	}
	close(l.closed)
	for c := range l.conns {
		_ = c.Close()
	}
	l.mu.Unlock()
	_ = l.ln.Close()
	l.wg.Wait()
}

// pass waits until traffic may flow; false means the link was closed.
func (l *Link) pass() bool {
	l.mu.Lock()
	open := l.open
	l.mu.Unlock()
	select {
	case <-open:
		return true
	case <-l.closed:
		return false
	}
}

// track registers a connection for Close; false means the link is closed.
func (l *Link) track(c net.Conn) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	select {
	case <-l.closed:
		_ = c.Close()
		return false
	default:
	}
	l.conns[c] = struct{}{}
	return true
}

func (l *Link) untrack(c net.Conn) {
	l.mu.Lock()
	delete(l.conns, c)
	l.mu.Unlock()
	_ = c.Close()
}

func (l *Link) accept() {
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond) // a transient error (EMFILE, ...)
			continue
		}
		if !l.track(c) {
			return
		}
		l.wg.Go(func() { l.relay(c) })
	}
}

// relay connects a client to the target once traffic flows, then copies
// both ways until either side closes.
func (l *Link) relay(client net.Conn) {
	defer l.untrack(client)
	if !l.pass() {
		return
	}
	server, err := net.Dial("tcp", l.target)
	if err != nil {
		return // the client sees its connection closed, as if refused
	}
	if !l.track(server) {
		return
	}
	defer l.untrack(server)
	done := make(chan struct{}, 2)
	go func() { l.copy(server, client); done <- struct{}{} }()
	go func() { l.copy(client, server); done <- struct{}{} }()
	<-done
	// One side is finished: close both so the other copy ends too.
	_ = client.Close()
	_ = server.Close()
	<-done
}

// copy relays src to dst, holding each chunk while the link is black-holed.
func (l *Link) copy(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			if !l.pass() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
