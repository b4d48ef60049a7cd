package peers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net"
	"net/http"
	"net/url"
	"time"

	"github.com/ecr-mirror/ecr-mirror/proxy"
)

// Outcomes of peer requests, for ecr_mirror_peer_requests_total.
const (
	OutcomeOK          = "ok"          // the owner answered with the content
	OutcomeNotFound    = "not_found"   // 404: the repository does not hold it, or ECR lacks it
	OutcomeDenied      = "denied"      // 401 or 403: another PEER_SECRET, or upstream refused
	OutcomeError       = "error"       // another status
	OutcomeUnreachable = "unreachable" // no connection, or no answer within PEER_TIMEOUT
	OutcomeCut         = "cut"         // the body stopped short (counted besides ok)
)

// Outcomes lists every outcome, for metrics to create at 0.
var Outcomes = []string{OutcomeOK, OutcomeNotFound, OutcomeDenied, OutcomeError, OutcomeUnreachable, OutcomeCut}

// DefaultTimeout is how long a peer gets to connect and answer with
// its response headers.
const DefaultTimeout = 5 * time.Second

// ClientOptions configure a Client.
type ClientOptions struct {
	Members *Members
	Signer  *Signer
	// Timeout bounds connecting and the wait for the response headers;
	// 0: DefaultTimeout. The body is watched by the proxy's stall timeout.
	Timeout time.Duration
	// Observe, when set, is called with each request's outcome.
	Observe func(outcome string)
	Logger  *slog.Logger
}

// Client asks the owner of a digest for it; it implements proxy.Peers.
type Client struct {
	members *Members
	signer  *Signer
	http    *http.Client
	observe func(string)
	log     *slog.Logger
}

var _ proxy.Peers = (*Client)(nil)

// NewClient returns a Client.
func NewClient(opts ClientOptions) *Client {
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	tr := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		ResponseHeaderTimeout: timeout,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		DisableCompression:    true, // bytes arrive as stored, to be verified
	}
	observe := opts.Observe
	if observe == nil {
		observe = func(string) {}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Client{members: opts.Members, signer: opts.Signer, observe: observe, log: log,
		http: &http.Client{Transport: tr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// Path is the peer API's path of req: /peer/v1/REGISTRY/KIND/DIGEST/REPO.
func Path(req proxy.PeerRequest) string {
	kind := "blobs"
	if req.Manifest {
		kind = "manifests"
	}
	return "/peer/v1/" + url.PathEscape(req.Registry) + "/" + kind + "/" + req.Dgst.String() + "/" + req.Repo
}

// Fetch asks req.Dgst's owner for it: proxy.ErrNoPeer when this replica
// owns it, there is no member, or the owner is cooling off after a
// failure.
func (c *Client) Fetch(ctx context.Context, req proxy.PeerRequest) (*proxy.PeerContent, error) {
	owner, self := c.members.Owner(req.Dgst)
	if owner == "" || self || c.members.coolingOff(owner) {
		return nil, proxy.ErrNoPeer
	}
	u := "http://" + owner + Path(req)
	hr, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("peer request %s: %w", u, err)
	}
	c.signer.Sign(hr)
	resp, err := c.http.Do(hr)
	if err != nil {
		if ctx.Err() == nil {
			c.members.failed(owner)
			c.observe(OutcomeUnreachable)
		}
		return nil, fmt.Errorf("asking peer %s for %s: %w", owner, req.Dgst, err)
	}
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
		resp.Body.Close()
		c.observe(statusOutcome(resp.StatusCode))
		return nil, fmt.Errorf("peer %s answered %s for %s: %s", owner, resp.Status, req.Dgst, body)
	}
	c.observe(OutcomeOK)
	size := resp.ContentLength
	mt, _, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil {
		mt = ""
	}
	cut := func() {
		c.observe(OutcomeCut)
		if ctx.Err() != nil {
			// The asking proxy gave up on a body that stalled (or is
			// shutting down): an owner that sends nothing is skipped
			// like one that does not answer. A body the owner cut
			// itself (its own download failed) is no reason to.
			c.members.failed(owner)
		}
	}
	return &proxy.PeerContent{Body: &watchedBody{ReadCloser: resp.Body, size: size, cut: cut}, Size: size, MediaType: mt}, nil
}

func statusOutcome(status int) string {
	switch status {
	case http.StatusNotFound:
		return OutcomeNotFound
	case http.StatusUnauthorized, http.StatusForbidden:
		return OutcomeDenied
	}
	return OutcomeError
}

// watchedBody counts a body that fails before its end as cut, once.
type watchedBody struct {
	io.ReadCloser
	size, read int64
	cut        func()
	done       bool
}

func (b *watchedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.read += int64(n)
	if err != nil && !b.done && (!errors.Is(err, io.EOF) || b.size >= 0 && b.read < b.size) {
		b.cut()
	}
	if err != nil {
		b.done = true
	}
	return n, err
}
