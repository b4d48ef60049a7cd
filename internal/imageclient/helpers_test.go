package imageclient

import (
	"cmp"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

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
	// referrers is how the referrers API answers; referrerGets the raw
	// queries of its GETs.
	referrers    referrersAPI
	referrerGets []string
	// user and password, when user is set, are the only login the
	// registry lets in, as a mirror with HTPASSWD_FILE; authorizations
	// are the Authorization headers of every request.
	user, password string
	authorizations []string
}

// requireLogin makes the registry answer 401 to any request without
// Basic credentials of user and password.
func (r *testRegistry) requireLogin(user, password string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.user, r.password = user, password
}

// loginRefused answers 401 when the registry wants a login req lacks.
func (r *testRegistry) loginRefused(w http.ResponseWriter, req *http.Request) bool {
	r.mu.Lock()
	r.authorizations = append(r.authorizations, req.Header.Get("Authorization"))
	user, password := r.user, r.password
	r.mu.Unlock()
	if u, p, ok := req.BasicAuth(); user == "" || (ok && u == user && p == password) {
		return false
	}
	w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusUnauthorized)
	io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
	return true
}

// referrersAPI says how the test registry serves the referrers API.
type referrersAPI struct {
	absent   bool   // answer 404, as a registry without the API
	pageSize int    // referrers a page; 0: all on one
	linkHost string // the host the next page's Link names; "": the registry's; "-": none (a relative Link)
	noFilter bool   // ignore artifactType, as registries may
	linkSelf bool   // a Link to the page itself
	status   int    // answer this status instead (and its body)
	body     string // the body of that status, or of a 200 instead of the list
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
	if r.loginRefused(w, req) {
		return
	}
	if req.URL.Path == "/v2/" {
		return // the API's root: 200
	}
	r.mu.Lock()
	e, ok := r.content[req.URL.Path]
	r.gets[req.URL.Path]++
	r.accept[req.URL.Path] = req.Header.Get("Accept")
	r.encodings = append(r.encodings, req.Header.Get("Accept-Encoding"))
	r.mu.Unlock()
	if strings.Contains(req.URL.Path, "/referrers/") && req.Method == http.MethodGet {
		r.serveReferrers(w, req)
		return
	}
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

func (p *countingProgress) Add(n int64) { p.mu.Lock(); p.done += n; p.mu.Unlock() }

func (p *countingProgress) Reader(r io.Reader) io.Reader { return &countingReader{p: p, r: r} }

type countingReader struct {
	p *countingProgress
	r io.Reader
}

func (c *countingReader) Read(b []byte) (int, error) {
	n, err := c.r.Read(b)
	c.p.Add(int64(n))
	return n, err
}

// serveReferrers serves GET /v2/<repo>/referrers/<digest> as
// r.referrers says: the manifests of repo whose subject is the digest,
// sorted by digest, a page at a time with a Link to the next.
func (r *testRegistry) serveReferrers(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	api := r.referrers
	r.referrerGets = append(r.referrerGets, req.URL.RawQuery)
	r.mu.Unlock()
	switch {
	case api.absent:
		http.Error(w, `{"errors":[{"code":"NAME_UNKNOWN"}]}`, http.StatusNotFound)
		return
	case api.status != 0 || api.body != "":
		w.WriteHeader(max(api.status, http.StatusOK))
		w.Write([]byte(api.body))
		return
	}
	repo, subject, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/v2/"), "/referrers/")
	list := r.referrersOf(repo, digest.Digest(subject))
	if at := req.URL.Query().Get("artifactType"); at != "" && !api.noFilter {
		list = slices.DeleteFunc(list, func(d oci.Descriptor) bool { return d.ArtifactType != at })
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	if api.linkSelf {
		w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next"`, req.URL.RequestURI()))
	}
	if api.pageSize > 0 {
		page, _ := strconv.Atoi(req.URL.Query().Get("page"))
		start := min(page*api.pageSize, len(list))
		end := min(start+api.pageSize, len(list))
		if end < len(list) {
			q := req.URL.Query()
			q.Set("page", strconv.Itoa(page+1))
			link := fmt.Sprintf("http://%s%s?%s", cmp.Or(api.linkHost, req.Host), req.URL.Path, q.Encode())
			if api.linkHost == "-" {
				link = "?" + q.Encode()
			}
			w.Header().Set("Link", fmt.Sprintf(`<%s>; rel="next"`, link))
		}
		list = list[start:end]
	}
	body, _ := json.Marshal(manifestDoc{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex, Manifests: append([]oci.Descriptor{}, list...)})
	w.Header().Set("Content-Type", oci.MediaTypeImageIndex)
	w.Write(body)
}

// referrersOf lists the manifests of repo whose subject is dgst, as a
// referrers list describes them, sorted by digest.
func (r *testRegistry) referrersOf(repo string, dgst digest.Digest) []oci.Descriptor {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []oci.Descriptor
	for path, e := range r.content {
		ref, ok := strings.CutPrefix(path, manifestPath(repo, ""))
		if !ok || !strings.HasPrefix(ref, "sha256:") {
			continue
		}
		var m artifactDoc
		if json.Unmarshal(e.body, &m) != nil || m.Subject == nil || m.Subject.Digest != dgst {
			continue
		}
		d := oci.Descriptor{MediaType: e.mediaType, Digest: digest.Digest(ref), Size: int64(len(e.body)),
			ArtifactType: m.ArtifactType, Annotations: m.Annotations}
		if d.ArtifactType == "" && m.Config != nil {
			d.ArtifactType = m.Config.MediaType
		}
		out = append(out, d)
	}
	slices.SortFunc(out, func(a, b oci.Descriptor) int { return cmp.Compare(a.Digest, b.Digest) })
	return out
}

// artifactDoc is a referrer's manifest as the tests write them.
type artifactDoc struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *oci.Descriptor   `json:"config,omitempty"`
	Layers        []oci.Descriptor  `json:"layers,omitempty"`
	Manifests     []oci.Descriptor  `json:"manifests,omitempty"`
	Subject       *oci.Descriptor   `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// The artifact types of the tests' referrers.
const (
	signatureType = "application/vnd.dev.cosign.artifact.sig.v1+json"
	sbomType      = "application/spdx+json"
)

// artifact stores in repo an OCI 1.1 artifact of artifactType whose
// subject is subject: an empty config and a layer of n random bytes per
// size given, annotated with its type.
func (r *testRegistry) artifact(repo string, subject oci.Descriptor, artifactType string, layers ...int) oci.Descriptor {
	empty := oci.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digest.FromString("{}"), Size: 2}
	r.set(blobPath(repo, empty.Digest), entry{body: []byte("{}")})
	doc := artifactDoc{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, ArtifactType: artifactType, Config: &empty,
		Subject:     &oci.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size},
		Annotations: map[string]string{"org.example.kind": artifactType}}
	for _, n := range layers {
		doc.Layers = append(doc.Layers, r.blob(repo, "application/octet-stream", n))
	}
	d := r.manifest(repo, "", oci.MediaTypeImageManifest, doc)
	d.ArtifactType = artifactType
	return d
}

// referrerQueries are the raw queries of the referrers GETs so far.
func (r *testRegistry) referrerQueries() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.referrerGets)
}

// setReferrers sets how the referrers API answers.
func (r *testRegistry) setReferrers(api referrersAPI) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.referrers = api
}
