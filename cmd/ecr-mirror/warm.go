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
	"time"

	"github.com/opencontainers/go-digest"
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

// warmer pulls images through the mirror.
type warmer struct {
	base        *url.URL
	client      *http.Client
	concurrency int
	platforms   []string // os/arch[/variant]; empty: all
	out         io.Writer
	outMu       sync.Mutex
}

// runWarm is "ecr-mirror warm".
func runWarm(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("warm", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, warmUsage); fs.PrintDefaults() }
	mirrorURL := fs.String("mirror", "http://localhost:5000", "URL of the running mirror")
	concurrency := fs.Int("concurrency", 4, "blobs fetched at once")
	insecure := fs.Bool("insecure", false, "do not verify the mirror's TLS certificate")
	platform := fs.String("platform", "", "only these platforms of an index, os/arch[/variant][,...] (default: all)")
	var files []string
	fs.Func("f", "file of images, one per line (# starts a comment); repeatable", func(v string) error {
		files = append(files, v)
		return nil
	})
	images, code, ok := parseFlags(fs, args)
	if !ok {
		return code
	}
	for _, f := range files {
		more, err := readImageList(f)
		if err != nil {
			fmt.Fprintf(stderr, "ecr-mirror warm: %v\n", err)
			return exitUsage
		}
		images = append(images, more...)
	}
	if len(images) == 0 {
		fmt.Fprint(stderr, "ecr-mirror warm: no image given\n\n")
		fs.Usage()
		return exitUsage
	}
	base, err := url.Parse(*mirrorURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		fmt.Fprintf(stderr, "ecr-mirror warm: --mirror %q is not an http(s) URL\n", *mirrorURL)
		return exitUsage
	}
	if *concurrency < 1 {
		fmt.Fprintf(stderr, "ecr-mirror warm: --concurrency must be at least 1, got %d\n", *concurrency)
		return exitUsage
	}
	var refs []imageRef
	for _, img := range images {
		r, err := parseImageRef(img)
		if err != nil {
			fmt.Fprintf(stderr, "ecr-mirror warm: %v\n", err)
			return exitUsage
		}
		refs = append(refs, r)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true // blobs are hashed byte for byte
	tr.MaxIdleConnsPerHost = *concurrency
	if *insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for with --insecure
	}
	w := &warmer{
		base:        base,
		client:      &http.Client{Transport: tr},
		concurrency: *concurrency,
		platforms:   splitList(*platform),
		out:         stderr,
	}
	var failed []string
	for _, r := range refs {
		if ctx.Err() != nil {
			failed = append(failed, r.String())
			continue
		}
		if err := w.warm(ctx, r); err != nil {
			w.logf("FAILED %s: %v", r, err)
			failed = append(failed, r.String())
		}
	}
	if len(failed) > 0 {
		fmt.Fprintf(stderr, "ecr-mirror warm: %d of %d images failed: %s\n", len(failed), len(refs), strings.Join(failed, " "))
		return exitFail
	}
	return exitOK
}

func (w *warmer) logf(format string, args ...any) {
	w.outMu.Lock()
	defer w.outMu.Unlock()
	fmt.Fprintf(w.out, "%s warm: %s\n", time.Now().Format(time.DateTime), fmt.Sprintf(format, args...))
}

// imageRef is a parsed IMAGE argument.
type imageRef struct {
	repo, ref string // ref: a tag or a digest
}

func (r imageRef) String() string {
	if strings.Contains(r.ref, ":") {
		return r.repo + "@" + r.ref
	}
	return r.repo + ":" + r.ref
}

// parseImageRef reads repo:tag, repo@sha256:<hex> or repo (:latest).
func parseImageRef(s string) (imageRef, error) {
	s = strings.TrimSpace(s)
	if repo, dgst, ok := strings.Cut(s, "@"); ok {
		d, err := digest.Parse(dgst)
		if err != nil || d.Algorithm() != digest.SHA256 {
			return imageRef{}, fmt.Errorf("image %q: %q is not a sha256 digest", s, dgst)
		}
		if err := checkRepo(repo); err != nil {
			return imageRef{}, fmt.Errorf("image %q: %w", s, err)
		}
		return imageRef{repo: repo, ref: d.String()}, nil
	}
	repo, tag := s, "latest"
	if i := strings.LastIndex(s, ":"); i > strings.LastIndex(s, "/") {
		repo, tag = s[:i], s[i+1:]
	}
	if tag == "" || len(tag) > 128 || strings.ContainsAny(tag, "/ ") {
		return imageRef{}, fmt.Errorf("image %q: bad tag %q", s, tag)
	}
	if err := checkRepo(repo); err != nil {
		return imageRef{}, fmt.Errorf("image %q: %w", s, err)
	}
	return imageRef{repo: repo, ref: tag}, nil
}

func checkRepo(repo string) error {
	if repo == "" || strings.HasPrefix(repo, "/") || strings.HasSuffix(repo, "/") || strings.Contains(repo, "//") ||
		strings.ContainsAny(repo, " ?#\\") || strings.Contains(repo, "..") {
		return fmt.Errorf("bad repository name %q", repo)
	}
	return nil
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

// warmStats is what warming one image fetched.
type warmStats struct {
	mu        sync.Mutex
	manifests int
	blobs     int
	bytes     int64
	seen      map[digest.Digest]bool
}

// warm fetches r's manifests, then its blobs, through the mirror.
func (w *warmer) warm(ctx context.Context, r imageRef) error {
	start := time.Now()
	st := &warmStats{seen: map[digest.Digest]bool{}}
	var blobs []descriptor
	top, err := w.walk(ctx, r.repo, r.ref, 0, st, &blobs)
	if err != nil {
		return err
	}
	if err := w.fetchBlobs(ctx, r.repo, blobs, st); err != nil {
		return err
	}
	d := time.Since(start)
	name := r.String()
	if r.ref != top.String() {
		name += " (" + top.String() + ")"
	}
	w.logf("%s: %d manifests, %d blobs, %s in %s (%s/s)", name, st.manifests, st.blobs,
		humanBytes(st.bytes), d.Round(time.Millisecond), humanBytes(int64(float64(st.bytes)/max(d.Seconds(), 1e-3))))
	return nil
}

// walk fetches the manifest ref and, for an index, its children (those of
// the wanted platforms), adding the blobs to fetch to blobs. It returns
// the manifest's digest.
func (w *warmer) walk(ctx context.Context, repo, ref string, depth int, st *warmStats, blobs *[]descriptor) (digest.Digest, error) {
	if depth > maxIndexDepth {
		return "", fmt.Errorf("manifest %s: indexes nested deeper than %d", ref, maxIndexDepth)
	}
	body, dgst, err := w.fetchManifest(ctx, repo, ref)
	if err != nil {
		return "", err
	}
	st.manifests++
	st.bytes += int64(len(body))
	var m manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return "", fmt.Errorf("manifest %s: %w", dgst, err)
	}
	if m.Manifests != nil || m.MediaType == mtOCIIndex || m.MediaType == mtDockerList {
		for _, child := range m.Manifests {
			if !w.wantPlatform(child) {
				continue
			}
			if _, err := w.walk(ctx, repo, child.Digest.String(), depth+1, st, blobs); err != nil {
				return "", err
			}
		}
		return dgst, nil
	}
	if m.Config == nil {
		return "", fmt.Errorf("manifest %s (%s) is neither an image manifest nor an index", dgst, m.MediaType)
	}
	for _, b := range append([]descriptor{*m.Config}, m.Layers...) {
		if len(b.URLs) > 0 || strings.Contains(b.MediaType, "nondistributable") || strings.Contains(b.MediaType, "foreign") {
			continue // not served by registries: fetched from its URLs by clients
		}
		if !st.seen[b.Digest] {
			st.seen[b.Digest] = true
			*blobs = append(*blobs, b)
		}
	}
	return dgst, nil
}

// wantPlatform tells whether an index child is of a wanted platform.
func (w *warmer) wantPlatform(d descriptor) bool {
	if len(w.platforms) == 0 {
		return true
	}
	if d.Platform == nil {
		return false
	}
	p := d.Platform.OS + "/" + d.Platform.Architecture
	return slices.Contains(w.platforms, p) || (d.Platform.Variant != "" && slices.Contains(w.platforms, p+"/"+d.Platform.Variant))
}

// fetchManifest GETs a manifest and checks its digest: against ref when
// ref is one, else against Docker-Content-Digest when the mirror sends it.
func (w *warmer) fetchManifest(ctx context.Context, repo, ref string) ([]byte, digest.Digest, error) {
	resp, err := w.get(ctx, repo, "manifests", ref, manifestAccept)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, "", fmt.Errorf("manifest %s: %w", ref, err)
	}
	if len(body) > maxManifestSize {
		return nil, "", fmt.Errorf("manifest %s: larger than %d bytes", ref, maxManifestSize)
	}
	got := digest.FromBytes(body)
	want := digest.Digest(ref)
	if !strings.Contains(ref, ":") {
		want = digest.Digest(resp.Header.Get("Docker-Content-Digest"))
	}
	if want != "" && want != got {
		return nil, "", fmt.Errorf("manifest %s: body hashes to %s, want %s", ref, got, want)
	}
	return body, got, nil
}

// fetchBlobs fetches blobs through the mirror, w.concurrency at once,
// and returns the first error (the others stop at once).
func (w *warmer) fetchBlobs(ctx context.Context, repo string, blobs []descriptor, st *warmStats) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	sem := make(chan struct{}, w.concurrency)
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
			n, err := w.fetchBlob(ctx, repo, b)
			if err != nil {
				cancel(err)
				return
			}
			st.mu.Lock()
			st.blobs++
			st.bytes += n
			st.mu.Unlock()
		}()
	}
	wg.Wait()
	return context.Cause(ctx)
}

// fetchBlob reads a blob to its end and checks its size and digest.
func (w *warmer) fetchBlob(ctx context.Context, repo string, b descriptor) (int64, error) {
	if b.Digest.Validate() != nil || b.Digest.Algorithm() != digest.SHA256 {
		return 0, fmt.Errorf("blob %q: not a sha256 digest", b.Digest)
	}
	resp, err := w.get(ctx, repo, "blobs", b.Digest.String(), "")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	if err != nil {
		return n, fmt.Errorf("blob %s: after %d bytes: %w", b.Digest, n, err)
	}
	if b.Size > 0 && n != b.Size {
		return n, fmt.Errorf("blob %s: got %d bytes, manifest says %d", b.Digest, n, b.Size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != b.Digest.Encoded() {
		return n, fmt.Errorf("blob %s: body hashes to sha256:%s", b.Digest, got)
	}
	return n, nil
}

// get GETs /v2/<repo>/<kind>/<ref> from the mirror and returns a 200
// response; any other status is an error carrying the start of the body.
func (w *warmer) get(ctx context.Context, repo, kind, ref, accept string) (*http.Response, error) {
	u := w.base.JoinPath("v2", repo, kind, ref)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if accept != "" {
		req.Header.Set("Accept", accept)
	}
	resp, err := w.client.Do(req)
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
