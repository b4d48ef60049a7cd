package clientconn

import (
	"cmp"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Budget caps the client connections open at once over every listener it
// wraps. Past the cap a new connection is answered 503 UNAVAILABLE with
// Retry-After and closed.
type Budget struct {
	max  int
	log  *slog.Logger
	busy []byte // the whole 503 response

	open, refused atomic.Int64
	// refusing holds a token per refusal under way; when it is full a
	// further connection is closed without an answer.
	refusing chan struct{}
	// full is set while connections are refused, so that the warning
	// is logged once per episode.
	full atomic.Bool
}

const (
	// maxRefusing bounds the refusals answered at once.
	maxRefusing = 64
	// refuseTimeout bounds one refusal: TLS handshake, answer, close.
	refuseTimeout = 5 * time.Second
	// Reserve is the descriptors DescriptorBudget keeps for the rest of the
	// process: the index, downloads and their temp files, upstream
	// connections, the operator listeners and refusals under way.
	Reserve = 512
)

// DescriptorBudget is the client connections a process allowed nofile
// open files can serve: Reserve descriptors are kept back, and each
// connection counts twice (its socket, and the file it is sent from).
func DescriptorBudget(nofile uint64) int {
	if nofile >= 2*Reserve {
		return int(min((nofile-Reserve)/2, 1<<30))
	}
	return max(int(nofile/4), 1)
}

// BudgetFor is the cap on open client connections: set (MAX_CLIENT_CONNECTIONS)
// when it is more than 0, else what the open-file limit allows (Go has
// raised the soft limit to the hard one). It warns on log when set is more
// than the limit allows, or the limit cannot be read.
func BudgetFor(set int, log *slog.Logger) int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		log.Warn("cannot read the open-file limit", "error", err)
		return cmp.Or(set, DescriptorBudget(1024))
	}
	allowed := DescriptorBudget(rl.Cur)
	if set == 0 {
		return allowed
	}
	if set > allowed {
		log.Warn("MAX_CLIENT_CONNECTIONS is more than the open-file limit allows: accept may fail before it is reached; raise LimitNOFILE / ulimit -n",
			"max_client_connections", set, "open_file_limit", rl.Cur, "allows", allowed)
	}
	return set
}

// NewBudget returns a Budget of max connections (max >= 1). A nil logger
// discards.
func NewBudget(max int, log *slog.Logger) (*Budget, error) {
	if max < 1 {
		return nil, fmt.Errorf("clientconn: connection budget %d is not positive", max)
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	body, err := json.Marshal(map[string]any{"errors": []map[string]string{{
		"code":    string(registry.CodeUnavailable),
		"message": fmt.Sprintf("the mirror is serving its limit of %d client connections; try again shortly", max),
	}}})
	if err != nil {
		return nil, err
	}
	busy := fmt.Sprintf("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"+
		"Docker-Distribution-API-Version: registry/2.0\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n%s\n",
		len(body)+1, body)
	return &Budget{max: max, log: log, busy: []byte(busy), refusing: make(chan struct{}, maxRefusing)}, nil
}

// Max returns the cap.
func (b *Budget) Max() int { return b.max }

// Open returns the connections open now.
func (b *Budget) Open() int64 { return b.open.Load() }

// Refused returns how many connections were refused.
func (b *Budget) Refused() int64 { return b.refused.Load() }

// Listener returns ln with its connections counted. tlsConfig is the
// configuration the server speaks TLS with on ln (nil: plain HTTP), so
// that a refused client is answered in TLS; wrap the raw listener, below
// TLS.
func (b *Budget) Listener(ln net.Listener, tlsConfig *tls.Config) net.Listener {
	if tlsConfig != nil {
		tlsConfig = tlsConfig.Clone()
		tlsConfig.NextProtos = []string{"http/1.1"} // the answer is HTTP/1.1
	}
	return &listener{Listener: ln, b: b, tls: tlsConfig}
}

type listener struct {
	net.Listener
	b   *Budget
	tls *tls.Config
}

func (l *listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.b.take() {
			return &conn{Conn: c, b: l.b}, nil
		}
		l.b.refuse(c, l.tls)
	}
}

// take counts a new connection, unless the budget is spent.
func (b *Budget) take() bool {
	for {
		n := b.open.Load()
		if n >= int64(b.max) {
			return false
		}
		if b.open.CompareAndSwap(n, n+1) {
			// Well below the limit again: the next refusal warns anew.
			if n+1 < int64(b.max-b.max/10) && b.full.CompareAndSwap(true, false) {
				b.log.Info("client connections well below the limit again", "open", n+1, "limit", b.max)
			}
			return true
		}
	}
}

// refuse answers c with the 503 in the background, or closes it when
// maxRefusing answers are already under way.
func (b *Budget) refuse(c net.Conn, cfg *tls.Config) {
	b.refused.Add(1)
	if b.full.CompareAndSwap(false, true) {
		b.log.Warn("client connection limit reached: refusing new connections with 503", "limit", b.max)
	}
	select {
	case b.refusing <- struct{}{}:
	default:
		c.Close()
		return
	}
	go func() {
		defer func() { <-b.refusing }()
		b.answer(c, cfg)
	}()
}

// answer writes the 503 on c, then reads what the client sent until it
// closes, so that closing does not reset the connection before the client
// has read the answer.
func (b *Budget) answer(c net.Conn, cfg *tls.Config) {
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(refuseTimeout)); err != nil {
		return
	}
	rw := io.ReadWriter(c)
	if cfg != nil {
		tc := tls.Server(c, cfg)
		if err := tc.Handshake(); err != nil {
			return
		}
		rw = tc
	}
	if _, err := rw.Write(b.busy); err != nil {
		return
	}
	if cw, ok := rw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(rw, 64<<10))
}

// conn gives its place in the budget back when closed.
type conn struct {
	net.Conn
	b    *Budget
	once sync.Once
}

func (c *conn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.b.open.Add(-1) })
	return err
}

// ReadFrom keeps the connection's own io.ReaderFrom: sendfile.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(writerOnly{c.Conn}, r)
}

// CloseWrite keeps the connection's half-close, which the HTTP server
// uses to end a connection cleanly.
func (c *conn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
