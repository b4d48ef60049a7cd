package fakeecr

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Endpoint names one of the fake's three APIs. It labels recorded requests and
// restricts where a Fault applies.
type Endpoint string

// The fake's endpoints.
const (
	EndpointToken    Endpoint = "token"
	EndpointRegistry Endpoint = "registry"
	EndpointS3       Endpoint = "s3"
)

// Limits on Options.
const (
	maxTokenPasswordLen = 512 << 10
	maxPresignTTL       = 7 * 24 * time.Hour // S3's limit on X-Amz-Expires
	maxTagsPage         = 1000
)

// Options configures a Server. The zero value is ready to use: each zero field
// means the default its comment names.
type Options struct {
	// RegistryAddr is where the registry and the token API listen.
	// Default "127.0.0.1:0", a random free port.
	RegistryAddr string
	// S3Addr is where the fake S3 listens. Default "127.0.0.1:0".
	S3Addr string
	// TokenTTL is how long an issued token stays valid. Default 12h, as ECR.
	TokenTTL time.Duration
	// TokenPasswordLen is the length of the random password inside each token
	// (the token is base64 of "AWS:<password>"). Default 1024; at most 512 KiB.
	// Tokens for EC2 roles exceed 4 KiB, so tests should try that too.
	TokenPasswordLen int
	// PresignTTL is the lifetime of the presigned S3 URLs (X-Amz-Expires),
	// whole seconds from 1s to 7 days. Default 15m.
	PresignTTL time.Duration
	// BlobHeadRedirect makes blob HEAD answer 307 to S3, like blob GET.
	// Default false: 200 with Content-Length and Docker-Content-Digest.
	BlobHeadRedirect bool
	// TagsPageSize is the page size of tags/list when the request has no n.
	// Default 1000, also the most a page ever holds.
	TagsPageSize int
	// RequestLogSize is how many recent requests Counters().Requests keeps.
	// Default 1024; negative keeps none.
	RequestLogSize int
	// Logger gets one debug record per request and the HTTP servers' errors.
	// Nil discards them.
	Logger *slog.Logger
	// Anonymous serves the registry without credentials, as an open
	// registry (an oci upstream) does: Authorization is not checked, only
	// recorded (Request.Authorization).
	Anonymous bool
	// Bearer makes the registry demand the token flow of registries other
	// than ECR (an "oci" or "ecr-public" upstream) instead of ECR's Basic
	// token: a 401 says `Bearer realm="<URL>/token",service="<Host>",
	// scope="repository:<name>:pull"` (pull,push for writes), and GET
	// /token hands out tokens for the scope parameters asked, valid for
	// TokenTTL (expires_in), counted in TokenRequests and TokensIssued.
	// An expired or insufficient token gets 401.
	Bearer bool
	// BearerLogin, "user:password", is the Basic login the Bearer token
	// endpoint demands; "" gives tokens to anonymous requests.
	BearerLogin string
	// TLS, when set, opens a third listener (TLSAddr) that serves the
	// registry over TLS with it, so that a test can give the fake a
	// registry's real name and certificate. The token API stays on URL.
	TLS *tls.Config
	// DirectBlobs answers blob GETs with the blob itself (as registries
	// other than ECR do) instead of redirecting to S3: for a mirror
	// that reaches the fake by a public name, whose redirect policy
	// would refuse a loopback S3.
	DirectBlobs bool
	// Now is the clock that decides token and presigned URL expiry; it must be
	// safe for concurrent use. Nil means time.Now. Tests move it forward to
	// expire things without sleeping.
	Now func() time.Time
}

// withDefaults validates o and fills in its defaults.
func (o Options) withDefaults() (Options, error) {
	if o.RegistryAddr == "" {
		o.RegistryAddr = "127.0.0.1:0"
	}
	if o.S3Addr == "" {
		o.S3Addr = "127.0.0.1:0"
	}
	switch {
	case o.TokenTTL < 0:
		return o, fmt.Errorf("fakeecr: TokenTTL %v is negative", o.TokenTTL)
	case o.TokenTTL == 0:
		o.TokenTTL = 12 * time.Hour
	}
	switch {
	case o.TokenPasswordLen < 0 || o.TokenPasswordLen > maxTokenPasswordLen:
		return o, fmt.Errorf("fakeecr: TokenPasswordLen %d is outside 1..%d", o.TokenPasswordLen, maxTokenPasswordLen)
	case o.TokenPasswordLen == 0:
		o.TokenPasswordLen = 1024
	}
	switch {
	case o.PresignTTL == 0:
		o.PresignTTL = 15 * time.Minute
	case o.PresignTTL < time.Second || o.PresignTTL > maxPresignTTL || o.PresignTTL%time.Second != 0:
		return o, fmt.Errorf("fakeecr: PresignTTL %v is not whole seconds between 1s and %v", o.PresignTTL, maxPresignTTL)
	}
	switch {
	case o.TagsPageSize < 0 || o.TagsPageSize > maxTagsPage:
		return o, fmt.Errorf("fakeecr: TagsPageSize %d is outside 1..%d", o.TagsPageSize, maxTagsPage)
	case o.TagsPageSize == 0:
		o.TagsPageSize = maxTagsPage
	}
	if o.BearerLogin != "" && (!o.Bearer || !strings.Contains(o.BearerLogin, ":")) {
		return o, errors.New(`fakeecr: BearerLogin needs Bearer and the form "user:password"`)
	}
	if o.RequestLogSize == 0 {
		o.RequestLogSize = 1024
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// Server is a running fake: a registry (with the token API) and an S3 server.
// Its methods are safe for concurrent use.
type Server struct {
	opts Options

	regURL, s3URL string
	wwwAuth       string // WWW-Authenticate value of 401 answers

	regSrv, s3Srv *http.Server
	tlsSrv        *http.Server // Options.TLS's; nil without
	tlsAddr       string
	wg            sync.WaitGroup
	closeOnce     sync.Once

	// macs holds HMAC-SHA256 hashes keyed to sign presigned S3 URLs.
	macs sync.Pool
	// sessionToken is the URLs' X-Amz-Security-Token, sessionTokenQuery
	// the same query-escaped.
	sessionToken, sessionTokenQuery string

	store  store
	tokens tokenStore
	bearer bearerStore // bearer.go
	faults faultTable
	down   atomic.Bool
	ctr    counters
	reqLog requestLog
	push   pushState      // push.go
	refs   referrersState // attach.go
}

// New starts a fake on the addresses in opts (random loopback ports by
// default). Call Close when done.
func New(opts Options) (*Server, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	regLn, err := net.Listen("tcp", o.RegistryAddr)
	if err != nil {
		return nil, fmt.Errorf("fakeecr: registry listener: %w", err)
	}
	s3Ln, err := net.Listen("tcp", o.S3Addr)
	if err != nil {
		_ = regLn.Close()
		return nil, fmt.Errorf("fakeecr: S3 listener: %w", err)
	}

	s := &Server{
		opts:   o,
		regURL: "http://" + regLn.Addr().String(),
		s3URL:  "http://" + s3Ln.Addr().String(),
		store:  newStore(),
		tokens: tokenStore{expiry: make(map[string]time.Time)},
		faults: faultTable{m: make(map[faultKey]*faultEntry)},
	}
	s.wwwAuth = `Basic realm="` + s.regURL + `/",service="ecr.amazonaws.com"`
	signKey := make([]byte, 32)
	_, _ = rand.Read(signKey) // never fails (crypto/rand documents it)
	s.macs.New = func() any { return hmac.New(sha256.New, signKey) }
	tok := make([]byte, 256)
	_, _ = rand.Read(tok)
	s.sessionToken = base64.StdEncoding.EncodeToString(tok)
	s.sessionTokenQuery = url.QueryEscape(s.sessionToken)
	if o.RequestLogSize > 0 {
		s.reqLog.buf = make([]Request, o.RequestLogSize)
	}

	errLog := slog.NewLogLogger(o.Logger.Handler(), slog.LevelWarn)
	s.regSrv = &http.Server{
		Handler:           http.HandlerFunc(s.handleRegistry),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          errLog,
	}
	s.s3Srv = &http.Server{
		Handler:           http.HandlerFunc(s.handleS3),
		ReadHeaderTimeout: 30 * time.Second,
		ErrorLog:          errLog,
	}
	s.wg.Go(func() { serve(s.regSrv, regLn, o.Logger) })
	s.wg.Go(func() { serve(s.s3Srv, s3Ln, o.Logger) })
	if o.TLS != nil {
		tlsLn, err := tls.Listen("tcp", "127.0.0.1:0", o.TLS)
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("fakeecr: TLS listener: %w", err)
		}
		s.tlsAddr = tlsLn.Addr().String()
		s.tlsSrv = &http.Server{Handler: http.HandlerFunc(s.handleRegistry), ReadHeaderTimeout: 30 * time.Second, ErrorLog: errLog}
		s.wg.Go(func() { serve(s.tlsSrv, tlsLn, o.Logger) })
	}
	return s, nil
}

// TLSAddr is the host:port of the registry's TLS listener (Options.TLS);
// "" without one.
func (s *Server) TLSAddr() string { return s.tlsAddr }

func serve(srv *http.Server, ln net.Listener, log *slog.Logger) {
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		log.Error("fakeecr: serve", "addr", ln.Addr().String(), "err", err)
	}
}

// Close stops both servers and drops every open connection. It is safe to
// call more than once.
func (s *Server) Close() {
	s.closeOnce.Do(func() {
		_ = s.regSrv.Close()
		_ = s.s3Srv.Close()
		if s.tlsSrv != nil {
			_ = s.tlsSrv.Close()
		}
		s.wg.Wait()
	})
}

// URL is the registry's base URL, e.g. http://127.0.0.1:40123: the mirror's
// upstream.
func (s *Server) URL() string { return s.regURL }

// TokenURL is the token API's endpoint, for ecr.Options.BaseEndpoint or
// AWS_ENDPOINT_URL_ECR. The registry's listener serves it, so it equals URL.
func (s *Server) TokenURL() string { return s.regURL }

// S3URL is the fake S3's base URL, which blob redirects point at.
func (s *Server) S3URL() string { return s.s3URL }

// Host is the registry's host:port, as the mirror's upstream host.
func (s *Server) Host() string { return strings.TrimPrefix(s.regURL, "http://") }

// SetDown makes both servers (registry, token API and S3) drop every new
// request at the connection level, as if the network were down, until
// SetDown(false).
func (s *Server) SetDown(down bool) { s.down.Store(down) }

// handleRegistry serves the registry listener: the token API at POST / and
// the registry under /v2/.
func (s *Server) handleRegistry(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, endpoint: EndpointRegistry, start: time.Now()}
	defer s.record(rec, r)
	if s.down.Load() {
		s.ctr.dropped.Add(1)
		dropConnection(rec)
		return
	}
	if r.URL.Path == "/" && r.Method == http.MethodPost {
		rec.endpoint = EndpointToken
		s.serveToken(rec, r)
		return
	}
	if s.opts.Bearer && r.URL.Path == "/token" && r.Method == http.MethodGet {
		rec.endpoint = EndpointToken
		s.serveBearerToken(rec, r)
		return
	}
	s.serveRegistry(rec, r)
}

// handleS3 serves the S3 listener.
func (s *Server) handleS3(w http.ResponseWriter, r *http.Request) {
	rec := &recorder{ResponseWriter: w, endpoint: EndpointS3, start: time.Now()}
	defer s.record(rec, r)
	if s.down.Load() {
		s.ctr.dropped.Add(1)
		dropConnection(rec)
		return
	}
	s.serveS3(rec, r)
}

// record logs a finished request and adds it to the request log. It runs
// deferred, so aborted responses are recorded too.
func (s *Server) record(rec *recorder, r *http.Request) {
	if rec.endpoint == EndpointS3 {
		s.ctr.s3BytesSent.Add(rec.bytes)
	}
	accept := r.Header.Get("Accept")
	if vs := r.Header.Values("Accept"); len(vs) > 1 {
		accept = strings.Join(vs, ", ")
	}
	req := Request{
		Time:          rec.start,
		Endpoint:      rec.endpoint,
		Method:        r.Method,
		Path:          r.URL.Path,
		Query:         r.URL.RawQuery,
		Accept:        accept,
		Range:         r.Header.Get("Range"),
		Authorization: len(r.Header.Values("Authorization")) > 0,
		Referer:       r.Header.Get("Referer"),
		UserAgent:     r.Header.Get("User-Agent"),
		Status:        rec.status,
		Bytes:         rec.bytes,
	}
	s.reqLog.add(req)
	ctx := r.Context()
	if s.opts.Logger.Enabled(ctx, slog.LevelDebug) {
		s.opts.Logger.LogAttrs(ctx, slog.LevelDebug, "fakeecr request",
			slog.String("endpoint", string(req.Endpoint)), slog.String("method", req.Method),
			slog.String("path", req.Path), slog.String("query", req.Query),
			slog.Int("status", req.Status), slog.Int64("bytes", req.Bytes),
			slog.Duration("took", time.Since(rec.start)))
	}
}

// recorder remembers a response's status and body size. Unwrap lets
// http.ResponseController reach Flush and Hijack underneath.
type recorder struct {
	http.ResponseWriter
	endpoint Endpoint
	start    time.Time
	status   int // 0 until written; stays 0 when the connection is dropped
	bytes    int64
}

func (r *recorder) WriteHeader(code int) {
	if r.status == 0 && code >= 200 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// dropConnection closes the client's connection without an answer. SO_LINGER
// 0 makes the close a reset, as when a host goes away.
func dropConnection(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable: aborting the handler also closes the connection
		// without a response, since nothing has been written yet.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// sleepCtx waits d, or less when ctx ends first; it reports whether it waited
// the whole time.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
