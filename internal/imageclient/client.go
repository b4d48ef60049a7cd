package imageclient

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

const (
	// maxManifestSize caps a manifest body; ECR's own limit is 4 MiB.
	maxManifestSize = 4 << 20
	// maxIndexDepth bounds indexes of indexes.
	maxIndexDepth = 4
)

// manifestAccept is the Accept of every manifest GET: the manifest media
// types the client understands, indexes first.
var manifestAccept = strings.Join(oci.ManifestTypes(), ", ")

// Client reads images through the registry API at a base URL.
type Client struct {
	base        *url.URL
	http        *http.Client
	concurrency int
	platforms   []string // os/arch[/variant]; empty: all
	namespace   string   // sent as ns=; "": none
	// withReferrers and referrerType are Options.WithReferrers and
	// Options.ReferrerType.
	withReferrers bool
	referrerType  string
	// login is sent with every request once set (Options.Login, or the
	// keychain's, taken by Ping); keychain is Options.Keychain.
	login    atomic.Pointer[Login]
	keychain authn.Keychain
}

// Options configure a [Client].
type Options struct {
	// HTTPClient sends the requests; nil: http.DefaultClient. Its
	// transport should not ask for compression: blobs are hashed byte
	// for byte.
	HTTPClient *http.Client
	// Concurrency is how many blobs Warm reads at once; below 1: 1.
	Concurrency int
	// Platforms narrow an index to its children of these platforms,
	// os/arch or os/arch/variant; empty: every platform.
	Platforms []string
	// Namespace, when set, is the registry a mirror is to read from,
	// sent as containerd sends it: ns=<host> on every request.
	Namespace string
	// WithReferrers makes Resolve, and so Warm, WriteImage and PullWhole,
	// read the image's referrers too (signatures, SBOMs, attestations:
	// the manifests whose subject is the top manifest or a platform's),
	// and the referrers of those, a few levels deep (Image.Referrers).
	WithReferrers bool
	// ReferrerType, when set, keeps only the image's referrers of this
	// artifact type; their own referrers come whatever their type.
	ReferrerType string
	// Login, when set, is sent with every request to the registry's
	// host, as Basic credentials.
	Login *Login
	// Keychain, when set and Login is not, is where Ping looks for the
	// login of the registry's host when the registry asks for one, e.g.
	// authn.DefaultKeychain: the Docker config (DOCKER_CONFIG), its auths,
	// credHelpers and credsStore.
	Keychain authn.Keychain
}

// New returns a client of the registry API at base (scheme and host; the
// API is under /v2/).
func New(base *url.URL, opts Options) *Client {
	c := &Client{base: base, http: opts.HTTPClient, concurrency: max(opts.Concurrency, 1), platforms: opts.Platforms,
		withReferrers: opts.WithReferrers, referrerType: opts.ReferrerType, namespace: opts.Namespace}
	if c.http == nil {
		c.http = http.DefaultClient
	}
	if opts.Login != nil || opts.Keychain != nil {
		c.login.Store(opts.Login)
		c.keychain = opts.Keychain
		c.http = withLogin(c.http, c)
	}
	return c
}

// Host is the host of the registry the client reads from.
func (c *Client) Host() string { return c.base.Host }

// fetchManifest GETs a manifest, asking for the media types accept
// names, and checks its digest: against ref when ref is one, else against
// Docker-Content-Digest when the registry sends it.
func (c *Client) fetchManifest(ctx context.Context, repo, ref, accept string) ([]byte, oci.Descriptor, error) {
	resp, err := c.get(ctx, repo, "manifests", ref, accept)
	if err != nil {
		return nil, oci.Descriptor{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, oci.Descriptor{}, fmt.Errorf("manifest %s: %w", ref, err)
	}
	if len(body) > maxManifestSize {
		return nil, oci.Descriptor{}, fmt.Errorf("manifest %s: larger than %d bytes", ref, maxManifestSize)
	}
	got := digest.FromBytes(body)
	want := digest.Digest(ref)
	if !strings.Contains(ref, ":") {
		want = digest.Digest(resp.Header.Get("Docker-Content-Digest"))
	}
	if want != "" && want != got {
		return nil, oci.Descriptor{}, fmt.Errorf("manifest %s: body hashes to %s, want %s", ref, got, want)
	}
	mediaType, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return body, oci.Descriptor{MediaType: strings.TrimSpace(mediaType), Digest: got, Size: int64(len(body))}, nil
}

// OpenBlob GETs the blob d describes from repo; the caller reads it and
// checks its size and digest.
func (c *Client) OpenBlob(ctx context.Context, repo string, d oci.Descriptor) (io.ReadCloser, error) {
	resp, err := c.get(ctx, repo, "blobs", d.Digest.String(), "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// get GETs /v2/<repo>/<kind>/<ref> and returns a 200 response; any other
// status is a *RegistryError.
func (c *Client) get(ctx context.Context, repo, kind, ref, accept string) (*http.Response, error) {
	resp, err := c.do(ctx, c.base.JoinPath("v2", repo, kind, ref), accept)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, statusError(kind[:len(kind)-1]+" "+ref, resp)
	}
	return resp, nil
}

// do GETs u and returns the response, whatever its status. With a
// namespace, u gets ns= unless it has one (a next page's link).
func (c *Client) do(ctx context.Context, u *url.URL, accept string) (*http.Response, error) {
	if q := u.Query(); c.namespace != "" && !q.Has("ns") {
		q.Set("ns", c.namespace)
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	return c.http.Do(req)
}
