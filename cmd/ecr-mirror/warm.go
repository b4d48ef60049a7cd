package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Manifest media types warm asks for and understands.
const (
	mtOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

var manifestAccept = strings.Join([]string{mtOCIIndex, mtDockerList, mtOCIManifest, mtDockerManifest}, ", ")

const (
	// maxManifestSize caps a manifest body; ECR's own limit is 4 MiB.
	maxManifestSize = 4 << 20
	// maxIndexDepth bounds indexes of indexes.
	maxIndexDepth = 4
)

const warmUsage = `Usage: ecr-mirror warm [flags] IMAGE... [-f FILE]

Pulls every manifest and blob of each IMAGE through a running mirror, several
blobs at once, verifying every digest, so that the mirror's cache holds the
whole image. IMAGE is repo:tag or repo@sha256:<hex> as the mirror names it
(a repository without a tag means :latest). An index brings every platform's
image unless --platform narrows it. Exits non-zero naming each image that
failed.

Example:
  ecr-mirror warm --mirror http://mirror.internal:5000 team/app:v1.4 base/debian@sha256:0123...
  ecr-mirror warm --platform linux/amd64,linux/arm64 -f images.txt

Flags:
`

// puller reads images through a mirror's registry API, verifying every
// digest: warm, export and pin use it.
type puller struct {
	base        *url.URL
	client      *http.Client
	concurrency int
	platforms   []string // os/arch[/variant]; empty: all
}

// newPuller returns a puller for the mirror at mirrorURL; it checks the
// flags the commands share.
func newPuller(mirrorURL string, concurrency int, insecure bool, platforms []string) (*puller, error) {
	base, err := url.Parse(mirrorURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("--mirror %q is not an http(s) URL", mirrorURL)
	}
	if concurrency < 1 {
		return nil, fmt.Errorf("--concurrency must be at least 1, got %d", concurrency)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true // blobs are hashed byte for byte
	tr.MaxIdleConnsPerHost = concurrency
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
	}
	return &puller{base: base, client: &http.Client{Transport: tr}, concurrency: concurrency, platforms: platforms}, nil
}

// runWarm is "ecr-mirror warm".
func runWarm(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("warm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, warmUsage); fs.PrintDefaults() }
	var pf pullFlags
	pf.register(fs)
	quiet := fs.Bool("quiet", false, "no progress; only failures and the summary")
	refs, code, ok := pf.parse(fs, args, "warm", stderr)
	if !ok {
		return code
	}
	p, err := pf.puller()
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror warm: %v\n", err)
		return exitUsage
	}
	prog := newProgress(ctx, stderr, chooseProgress(stderr, *quiet), "warm")
	var failed []string
	for _, r := range refs {
		if ctx.Err() != nil {
			failed = append(failed, r.String())
			continue
		}
		if _, err := p.warm(ctx, r, prog); err != nil {
			failed = append(failed, r.String())
		}
	}
	prog.wait()
	if len(failed) > 0 {
		fmt.Fprintf(stderr, "ecr-mirror warm: %d of %d images failed: %s\n", len(failed), len(refs), strings.Join(failed, " "))
		return exitFail
	}
	return exitOK
}

// pullFlags are the flags of the commands that read images through a
// running mirror.
type pullFlags struct {
	mirror, platform string
	allPlatforms     bool
	concurrency      int
	insecure         bool
	files            []string
}

func (pf *pullFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&pf.mirror, "mirror", "http://localhost:5000", "URL of the running mirror")
	fs.IntVar(&pf.concurrency, "concurrency", 4, "blobs fetched at once")
	fs.BoolVar(&pf.insecure, "insecure", false, "do not verify the mirror's TLS certificate")
	fs.StringVar(&pf.platform, "platform", "", "only these platforms of an index, os/arch[/variant][,...] (default: all)")
	fs.BoolVar(&pf.allPlatforms, "all-platforms", false, "every platform of an index (the default; exclusive with --platform)")
	fs.Func("f", "file of images, one per line (# starts a comment); repeatable", func(v string) error {
		pf.files = append(pf.files, v)
		return nil
	})
}

// parse parses args and returns the images they and the -f files name.
func (pf *pullFlags) parse(fs *flag.FlagSet, args []string, cmd string, stderr io.Writer) ([]registry.Reference, int, bool) {
	images, code, ok := parseFlags(fs, args)
	if !ok {
		return nil, code, false
	}
	if pf.allPlatforms && pf.platform != "" {
		fmt.Fprintf(stderr, "ecr-mirror %s: --platform and --all-platforms exclude each other\n", cmd)
		return nil, exitUsage, false
	}
	for _, f := range pf.files {
		more, err := readImageList(f)
		if err != nil {
			fmt.Fprintf(stderr, "ecr-mirror %s: %v\n", cmd, err)
			return nil, exitUsage, false
		}
		images = append(images, more...)
	}
	if len(images) == 0 {
		fmt.Fprintf(stderr, "ecr-mirror %s: no image given\n\n", cmd)
		fs.Usage()
		return nil, exitUsage, false
	}
	var refs []registry.Reference
	for _, img := range images {
		r, err := registry.ParseReference(img)
		if err != nil {
			fmt.Fprintf(stderr, "ecr-mirror %s: image %q: %v\n", cmd, img, err)
			return nil, exitUsage, false
		}
		refs = append(refs, r)
	}
	return refs, 0, true
}

func (pf *pullFlags) puller() (*puller, error) {
	return newPuller(pf.mirror, pf.concurrency, pf.insecure, splitList(pf.platform))
}

// readImageList reads images from a file, one a line; blank lines and
// text after # are ignored.
func readImageList(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line != "" {
			out = append(out, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

// descriptor is the part of an OCI descriptor warm needs.
type descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	URLs      []string      `json:"urls,omitempty"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant,omitempty"`
	} `json:"platform,omitempty"`
}

// manifest is an image manifest or an index, whichever it is.
type manifest struct {
	MediaType string       `json:"mediaType"`
	Config    *descriptor  `json:"config"`
	Layers    []descriptor `json:"layers"`
	Manifests []descriptor `json:"manifests"`
}

// image is an image's manifests, read and verified, and the blobs they
// name.
type image struct {
	ref registry.Reference
	top descriptor // the manifest or index ref names
	// manifests holds every manifest read (the top one first) with its
	// body; blobs the distinct blobs of the wanted platforms.
	manifests []fetchedManifest
	blobs     []descriptor
	// images are the image manifests among them, with their config and
	// layers, for Docker's manifest.json.
	images []fetchedManifest
}

type fetchedManifest struct {
	desc descriptor
	body []byte
	doc  manifest
}

// size is the bytes of all the image's manifests and blobs.
func (img *image) size() int64 {
	var n int64
	for _, m := range img.manifests {
		n += m.desc.Size
	}
	for _, b := range img.blobs {
		n += b.Size
	}
	return n
}

// resolve reads r's manifests through the mirror: for an index, those of
// its children of the wanted platforms.
func (p *puller) resolve(ctx context.Context, r registry.Reference) (*image, error) {
	img := &image{ref: r}
	seen := map[digest.Digest]bool{}
	top, err := p.walk(ctx, img, r.Ref(), 0, seen)
	if err != nil {
		return nil, err
	}
	img.top = top
	return img, nil
}

// walk reads the manifest ref into img and, for an index, its children of
// the wanted platforms, and returns the manifest's descriptor.
func (p *puller) walk(ctx context.Context, img *image, ref string, depth int, seen map[digest.Digest]bool) (descriptor, error) {
	if depth > maxIndexDepth {
		return descriptor{}, fmt.Errorf("manifest %s: indexes nested deeper than %d", ref, maxIndexDepth)
	}
	body, desc, err := p.fetchManifest(ctx, img.ref.Name, ref)
	if err != nil {
		return descriptor{}, err
	}
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return descriptor{}, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	fm := fetchedManifest{desc: desc, body: body, doc: m}
	img.manifests = append(img.manifests, fm)
	if m.Manifests != nil || m.MediaType == mtOCIIndex || m.MediaType == mtDockerList {
		for _, child := range m.Manifests {
			if !p.wantPlatform(child) {
				continue
			}
			if _, err := p.walk(ctx, img, child.Digest.String(), depth+1, seen); err != nil {
				return descriptor{}, err
			}
		}
		return desc, nil
	}
	if m.Config == nil {
		return descriptor{}, fmt.Errorf("manifest %s (%s) is neither an image manifest nor an index", desc.Digest, m.MediaType)
	}
	img.images = append(img.images, fm)
	for _, b := range append([]descriptor{*m.Config}, m.Layers...) {
		if !distributable(b) {
			continue // not served by registries: fetched from its URLs by clients
		}
		if b.Digest.Validate() != nil || b.Digest.Algorithm() != digest.SHA256 {
			return descriptor{}, fmt.Errorf("manifest %s: blob %q: not a sha256 digest", desc.Digest, b.Digest)
		}
		if !seen[b.Digest] {
			seen[b.Digest] = true
			img.blobs = append(img.blobs, b)
		}
	}
	return desc, nil
}

// distributable tells whether registries serve a blob: foreign layers
// are fetched by clients from their URLs.
func distributable(b descriptor) bool {
	return len(b.URLs) == 0 && !strings.Contains(b.MediaType, "nondistributable") && !strings.Contains(b.MediaType, "foreign")
}

// wantPlatform tells whether an index child is of a wanted platform.
func (p *puller) wantPlatform(d descriptor) bool {
	if len(p.platforms) == 0 {
		return true
	}
	if d.Platform == nil {
		return false
	}
	pl := d.Platform.OS + "/" + d.Platform.Architecture
	return slices.Contains(p.platforms, pl) || (d.Platform.Variant != "" && slices.Contains(p.platforms, pl+"/"+d.Platform.Variant))
}

// fetchManifest GETs a manifest and checks its digest: against ref when
// ref is one, else against Docker-Content-Digest when the mirror sends it.
func (p *puller) fetchManifest(ctx context.Context, repo, ref string) ([]byte, descriptor, error) {
	resp, err := p.get(ctx, repo, "manifests", ref, manifestAccept)
	if err != nil {
		return nil, descriptor{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, descriptor{}, fmt.Errorf("manifest %s: %w", ref, err)
	}
	if len(body) > maxManifestSize {
		return nil, descriptor{}, fmt.Errorf("manifest %s: larger than %d bytes", ref, maxManifestSize)
	}
	got := digest.FromBytes(body)
	want := digest.Digest(ref)
	if !strings.Contains(ref, ":") {
		want = digest.Digest(resp.Header.Get("Docker-Content-Digest"))
	}
	if want != "" && want != got {
		return nil, descriptor{}, fmt.Errorf("manifest %s: body hashes to %s, want %s", ref, got, want)
	}
	mediaType, _, _ := strings.Cut(resp.Header.Get("Content-Type"), ";")
	return body, descriptor{MediaType: strings.TrimSpace(mediaType), Digest: got, Size: int64(len(body))}, nil
}

// warm reads r whole through the mirror, several blobs at once, so that
// the mirror's cache holds it; it returns the image. Progress goes to
// prog as a task of r's name.
func (p *puller) warm(ctx context.Context, r registry.Reference, prog *progress) (*image, error) {
	t := prog.task(r.String(), 0)
	img, err := p.resolve(ctx, r)
	if err != nil {
		t.finish(err, "")
		return nil, err
	}
	t.addTotal(img.size())
	for _, m := range img.manifests {
		t.add(m.desc.Size, 0)
	}
	err = p.fetchBlobs(ctx, r.Name, img.blobs, t)
	t.finish(err, fmt.Sprintf("%d manifests, %d blobs", len(img.manifests), len(img.blobs)))
	if err != nil {
		return nil, err
	}
	return img, nil
}

// fetchBlobs reads blobs through the mirror, p.concurrency at once,
// counting their bytes against t, and returns the first error (the
// others stop at once).
func (p *puller) fetchBlobs(ctx context.Context, repo string, blobs []descriptor, t *task) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, p.concurrency)
	var wg sync.WaitGroup
	for _, b := range blobs {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := p.fetchBlob(ctx, repo, b, t); err != nil {
				cancel(err)
			}
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// fetchBlob reads a blob to its end and checks its size and digest.
func (p *puller) fetchBlob(ctx context.Context, repo string, b descriptor, t *task) error {
	body, err := p.openBlob(ctx, repo, b)
	if err != nil {
		return err
	}
	defer body.Close()
	h := sha256.New()
	n, err := io.Copy(h, t.reader(body))
	if err != nil {
		return fmt.Errorf("blob %s: after %d bytes: %w", b.Digest, n, err)
	}
	if b.Size > 0 && n != b.Size {
		return fmt.Errorf("blob %s: got %d bytes, manifest says %d", b.Digest, n, b.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.Digest.Encoded() {
		return fmt.Errorf("blob %s: body hashes to sha256:%s", b.Digest, got)
	}
	return nil
}

// openBlob GETs a blob; the caller reads and checks it.
func (p *puller) openBlob(ctx context.Context, repo string, b descriptor) (io.ReadCloser, error) {
	resp, err := p.get(ctx, repo, "blobs", b.Digest.String(), "")
	if err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// get GETs /v2/<repo>/<kind>/<ref> from the mirror and returns a 200
// response; any other status is an error carrying the start of the body.
func (p *puller) get(ctx context.Context, repo, kind, ref, accept string) (*http.Response, error) {
	u := p.base.JoinPath("v2", repo, kind, ref)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return nil, fmt.Errorf("%s %s: %s: %s", kind[:len(kind)-1], ref, resp.Status, strings.TrimSpace(string(msg)))
	}
	return resp, nil
}

// humanBytes formats n in binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// pullWhole reads ref, every platform of it, through the registry API
// client reaches, so that the mirror behind it stores the image whole; it
// returns the digest of its top manifest or index and its bytes.
func pullWhole(ctx context.Context, client *http.Client, ref registry.Reference) (digest.Digest, int64, error) {
	p := &puller{base: &url.URL{Scheme: "http", Host: "ecr-mirror"}, client: client, concurrency: 4}
	img, err := p.warm(ctx, ref, newProgress(ctx, io.Discard, progressQuiet, "pin"))
	if err != nil {
		return "", 0, err
	}
	return img.top.Digest, img.size(), nil
}
