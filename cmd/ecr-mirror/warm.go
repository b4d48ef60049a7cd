package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/imageclient"
	"github.com/ecr-mirror/ecr-mirror/internal/progress"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/registry"
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

// newClient returns a client of the mirror at mirrorURL; it checks the
// flags the commands share.
func newClient(mirrorURL string, concurrency int, insecure bool, platforms []string) (*imageclient.Client, error) {
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
	return imageclient.New(base, imageclient.Options{HTTPClient: &http.Client{Transport: tr}, Concurrency: concurrency, Platforms: platforms}), nil
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
	c, err := pf.client()
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror warm: %v\n", err)
		return exitUsage
	}
	prog := progress.New(ctx, stderr, progress.Choose(stderr, *quiet), "warm")
	var failed []string
	for _, r := range refs {
		if ctx.Err() != nil {
			failed = append(failed, r.String())
			continue
		}
		if _, err := warm(ctx, c, r, prog); err != nil {
			failed = append(failed, r.String())
		}
	}
	prog.Wait()
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

func (pf *pullFlags) client() (*imageclient.Client, error) {
	return newClient(pf.mirror, pf.concurrency, pf.insecure, settings.SplitList(pf.platform))
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

// warm reads r whole through the mirror with c, so that the mirror's
// cache holds it; progress goes to prog as a task of r's name.
func warm(ctx context.Context, c *imageclient.Client, r registry.Reference, prog *progress.Progress) (*imageclient.Image, error) {
	t := prog.Task(r.String(), 0)
	img, err := c.Warm(ctx, r, t)
	if err != nil {
		t.Finish(err, "")
		return nil, err
	}
	t.Finish(nil, fmt.Sprintf("%d manifests, %d blobs", len(img.Manifests), len(img.Blobs)))
	return img, nil
}

// pullWhole reads ref, every platform of it, through the registry API
// client reaches, so that the mirror behind it stores the image whole; it
// returns the digest of its top manifest or index and its bytes.
func pullWhole(ctx context.Context, client *http.Client, ref registry.Reference) (digest.Digest, int64, error) {
	c := imageclient.New(&url.URL{Scheme: "http", Host: "ecr-mirror"}, imageclient.Options{HTTPClient: client, Concurrency: 4})
	img, err := c.Warm(ctx, ref, nil)
	if err != nil {
		return "", 0, err
	}
	return img.Top.Digest, img.Size(), nil
}
