package imageclient

import (
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// testRegistry is an in-memory registry API over httptest: GETs of
// manifests (by tag or digest) and blobs, with per-path overrides for
// faults and a count of GETs per path.
type testRegistry struct {
	t   *testing.T
	srv *httptest.Server

	mu      sync.Mutex
	content map[string]entry // by URL path
	gets    map[string]int
	accept  map[string]string // the last Accept asked for at a path
	// encodings are the Accept-Encoding headers of every request.
	encodings []string
}

// entry is what the registry answers at one path.
type entry struct {
	mediaType string
	body      []byte
	// contentDigest, when set, is sent as Docker-Content-Digest.
	contentDigest string
	status        int // 0: 200
}

func newRegistry(t *testing.T) *testRegistry {
	t.Helper()
	r := &testRegistry{t: t, content: map[string]entry{}, gets: map[string]int{}, accept: map[string]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *testRegistry) serve(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	e, ok := r.content[req.URL.Path]
	r.gets[req.URL.Path]++
	r.accept[req.URL.Path] = req.Header.Get("Accept")
	r.encodings = append(r.encodings, req.Header.Get("Accept-Encoding"))
	r.mu.Unlock()
	if !ok || req.Method != http.MethodGet {
		http.Error(w, `{"errors":[{"code":"NOT_FOUND"}]}`, http.StatusNotFound)
		return
	}
	if e.mediaType != "" {
		w.Header().Set("Content-Type", e.mediaType)
	}
	if e.contentDigest != "" {
		w.Header().Set("Docker-Content-Digest", e.contentDigest)
	}
	w.WriteHeader(max(e.status, http.StatusOK))
	w.Write(e.body)
}

// set answers path with e.
func (r *testRegistry) set(path string, e entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.content[path] = e
}

// getsOf is how many GETs path had.
func (r *testRegistry) getsOf(path string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.gets[path]
}

// acceptAt is the Accept of the last GET of path.
func (r *testRegistry) acceptAt(path string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.accept[path]
}

// blob stores n random bytes in repo and returns their descriptor.
func (r *testRegistry) blob(repo, mediaType string, n int) oci.Descriptor {
	b := make([]byte, n)
	rand.Read(b)
	d := oci.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(n)}
	r.set(blobPath(repo, d.Digest), entry{body: b})
	return d
}

// manifest stores doc in repo by digest and, when tag is set, by tag.
func (r *testRegistry) manifest(repo, tag, mediaType string, doc any) oci.Descriptor {
	body, err := json.Marshal(doc)
	if err != nil {
		r.t.Fatal(err)
	}
	d := oci.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(body), Size: int64(len(body))}
	e := entry{mediaType: mediaType, body: body, contentDigest: d.Digest.String()}
	r.set(manifestPath(repo, d.Digest.String()), e)
	if tag != "" {
		r.set(manifestPath(repo, tag), e)
	}
	return d
}

// image stores an image manifest of mediaType with a config and layers
// of the given sizes, with matching Docker or OCI blob types.
func (r *testRegistry) image(repo, tag, mediaType string, layers ...int) oci.Descriptor {
	configType, layerType := "application/vnd.oci.image.config.v1+json", "application/vnd.oci.image.layer.v1.tar+gzip"
	if mediaType == oci.MediaTypeDockerManifest {
		configType, layerType = "application/vnd.docker.container.image.v1+json", "application/vnd.docker.image.rootfs.diff.tar.gzip"
	}
	cfg := r.blob(repo, configType, 64)
	doc := manifestDoc{SchemaVersion: 2, MediaType: mediaType, Config: &cfg}
	for _, n := range layers {
		doc.Layers = append(doc.Layers, r.blob(repo, layerType, n))
	}
	return r.manifest(repo, tag, mediaType, doc)
}

// index stores an index of mediaType naming children.
func (r *testRegistry) index(repo, tag, mediaType string, children ...oci.Descriptor) oci.Descriptor {
	return r.manifest(repo, tag, mediaType, manifestDoc{SchemaVersion: 2, MediaType: mediaType, Manifests: children})
}

// client is a client of the registry.
func (r *testRegistry) client(opts Options) *Client {
	u, err := url.Parse(r.srv.URL)
	if err != nil {
		r.t.Fatal(err)
	}
	return New(u, opts)
}

// manifestDoc is a manifest or an index as the tests write them.
type manifestDoc struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType,omitempty"`
	Config        *oci.Descriptor  `json:"config,omitempty"`
	Layers        []oci.Descriptor `json:"layers,omitempty"`
	Manifests     []oci.Descriptor `json:"manifests,omitempty"`
}

func blobPath(repo string, dgst digest.Digest) string {
	return "/v2/" + repo + "/blobs/" + dgst.String()
}

func manifestPath(repo, ref string) string { return "/v2/" + repo + "/manifests/" + ref }

// onPlatform is d as an index child of platform os/arch[/variant].
func onPlatform(d oci.Descriptor, platform string) oci.Descriptor {
	parts := strings.SplitN(platform, "/", 3)
	d.Platform = &oci.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		d.Platform.Variant = parts[2]
	}
	return d
}

func mustParse(t *testing.T, s string) registry.Reference {
	t.Helper()
	r, err := registry.ParseReference(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// countingProgress records what it is told.
type countingProgress struct {
	mu          sync.Mutex
	total, done int64
}

func (p *countingProgress) AddTotal(n int64) { p.mu.Lock(); p.total += n; p.mu.Unlock() }

func (p *countingProgress) Add(n int64, _ time.Duration) { p.mu.Lock(); p.done += n; p.mu.Unlock() }

func (p *countingProgress) Reader(r io.Reader) io.Reader { return &countingReader{p: p, r: r} }

type countingReader struct {
	p *countingProgress
	r io.Reader
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.Add(int64(n), 0)
	return n, err
}
