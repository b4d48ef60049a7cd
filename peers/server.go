package peers

import (
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/ecr-mirror/ecr-mirror/proxy"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Server answers the peer API on PEER_ADDR: GET and HEAD of
// /peer/v1/REGISTRY/{blobs|manifests}/DIGEST/REPOSITORY, signed with
// PEER_SECRET, through the proxy of that upstream registry.
type Server struct {
	signer   *Signer
	backends map[string]registry.Backend // by registry host
	log      *slog.Logger
}

// NewServer answers for backends, by their registry host (as
// proxy.Proxy.Host names it), the requests signer accepts.
func NewServer(signer *Signer, backends map[string]registry.Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{signer: signer, backends: backends, log: log}
}

// peerRequest is a parsed peer API path.
type peerRequest struct {
	backend  registry.Backend
	manifest bool
	req      *registry.Request
}

// ServeHTTP answers one peer request. An unsigned one gets 401 and
// nothing else; the content is served as the proxy serves a client, its
// download marked as a peer's so that it never asks another peer.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := s.signer.Verify(r); err != nil {
		s.log.Warn("peer request refused", "remote", r.RemoteAddr, "method", r.Method, "path", r.URL.Path, "error", err)
		registry.WriteError(w, r, registry.Errorf(registry.CodeUnauthorized, "peer requests must be signed with PEER_SECRET"))
		return
	}
	if s.signer.fromSelf(r) {
		// This replica took another member for itself: its own download
		// would wait on this request.
		s.log.Warn("a peer request came from this replica itself; is PEER_ADDR's port the one PEERS names?", "path", r.URL.Path)
		registry.WriteError(w, r, registry.Errorf(registry.CodeUnavailable, "asked itself: this replica is not the member it asked").WithStatus(http.StatusLoopDetected))
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		registry.WriteError(w, r, registry.Errorf(registry.CodeUnsupported, "the peer API takes GET and HEAD, not %s", r.Method))
		return
	}
	pr, err := s.parse(r)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	ctx := proxy.WithPeerRequest(r.Context())
	get := pr.backend.Blob
	if pr.manifest {
		get = pr.backend.Manifest
	}
	c, err := get(ctx, pr.req)
	if err != nil {
		registry.WriteError(w, r, err)
		return
	}
	s.write(w, r, c)
}

// parse validates /peer/v1/REGISTRY/KIND/DIGEST/REPOSITORY.
func (s *Server) parse(r *http.Request) (*peerRequest, error) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/peer/v1/")
	parts := strings.SplitN(rest, "/", 4)
	if !ok || len(parts) != 4 {
		return nil, registry.Errorf(registry.CodeNameInvalid, "peer paths are /peer/v1/REGISTRY/{blobs|manifests}/DIGEST/REPOSITORY").WithStatus(http.StatusBadRequest)
	}
	host, err := url.PathUnescape(parts[0])
	if err != nil {
		return nil, registry.Errorf(registry.CodeNameInvalid, "malformed registry in the peer path").WithStatus(http.StatusBadRequest)
	}
	b := s.backends[host]
	if b == nil {
		return nil, registry.Errorf(registry.CodeNameInvalid, "registry %q is not an upstream of this mirror", host).WithStatus(http.StatusBadRequest)
	}
	if parts[1] != "blobs" && parts[1] != "manifests" {
		return nil, registry.Errorf(registry.CodeNameInvalid, "peer paths name blobs or manifests, not %q", parts[1]).WithStatus(http.StatusBadRequest)
	}
	dgst, err := registry.ParseDigest(parts[2])
	if err != nil {
		return nil, err
	}
	if err := registry.ValidateName(parts[3]); err != nil {
		return nil, err
	}
	return &peerRequest{backend: b, manifest: parts[1] == "manifests",
		req: &registry.Request{Name: parts[3], Dgst: dgst, Head: r.Method == http.MethodHead}}, nil
}

// write sends c whole: a peer never asks for a range.
func (s *Server) write(w http.ResponseWriter, r *http.Request, c *registry.Content) {
	h := w.Header()
	h.Set("Docker-Content-Digest", c.Dgst.String())
	if c.MediaType != "" {
		h.Set("Content-Type", c.MediaType)
	}
	if c.Size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(c.Size, 10))
	}
	h.Set("X-Ecr-Mirror-Outcome", c.Outcome)
	if c.Body == nil {
		return
	}
	defer c.Body.Close()
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	// The headers go out now, not with the first 4 KiB: the asking
	// replica waits PEER_TIMEOUT for them, while this download may
	// still wait on ECR for its first bytes.
	_ = http.NewResponseController(w).Flush()
	if n, err := io.Copy(w, c.Body); err != nil {
		// Abort the response: the peer sees a cut body, never a short
		// one that looks whole.
		s.log.Warn("serving a peer cut short", "remote", r.RemoteAddr, "digest", c.Dgst, "bytes", n, "error", err)
		panic(http.ErrAbortHandler)
	}
}
