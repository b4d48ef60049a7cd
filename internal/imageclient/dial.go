package imageclient

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Dial returns a client of the registry at rawURL (http or https, a host
// and no more) over a transport of its own: no compression asked for,
// opts.Concurrency idle connections kept, and with insecure, a TLS
// certificate taken unverified. opts.HTTPClient is ignored.
func Dial(rawURL string, insecure bool, opts Options) (*Client, error) {
	base, err := url.Parse(rawURL)
	if err != nil || (base.Scheme != "http" && base.Scheme != "https") || base.Host == "" {
		return nil, fmt.Errorf("%q is not an http(s) URL", rawURL)
	}
	if opts.Concurrency < 1 {
		return nil, fmt.Errorf("concurrency must be at least 1, got %d", opts.Concurrency)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableCompression = true // blobs are hashed byte for byte
	tr.MaxIdleConnsPerHost = opts.Concurrency
	if insecure {
		tr.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // asked for by the caller
	}
	opts.HTTPClient = &http.Client{Transport: tr}
	return New(base, opts), nil
}

// PullWhole reads ref, every platform of it (with withReferrers, its
// referrers too), through the registry API that client reaches (whatever
// host it dials), so that a mirror behind it stores the image whole; it
// returns the image read.
func PullWhole(ctx context.Context, client *http.Client, ref registry.Reference, withReferrers bool) (*Image, error) {
	c := New(&url.URL{Scheme: "http", Host: "ecr-mirror"}, Options{HTTPClient: client, Concurrency: 4, WithReferrers: withReferrers})
	return c.Warm(ctx, ref, nil)
}

// ParseImages parses the images named on a command line, then those
// the files list (ReadImageList), in order; the error names the image or
// file at fault.
func ParseImages(images, files []string) ([]registry.Reference, error) {
	var refs []registry.Reference
	for _, img := range images {
		r, err := registry.ParseReference(img)
		if err != nil {
			return nil, fmt.Errorf("image %q: %w", img, err)
		}
		refs = append(refs, r)
	}
	for _, f := range files {
		more, err := ReadImageList(f)
		if err != nil {
			return nil, err
		}
		refs = append(refs, more...)
	}
	return refs, nil
}

// ReadImageList reads images from a file, one a line; blank lines and
// text after # are ignored. Each must parse as a reference; the error of
// one that does not names it.
func ReadImageList(path string) ([]registry.Reference, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []registry.Reference
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		if line = strings.TrimSpace(line); line == "" {
			continue
		}
		r, err := registry.ParseReference(line)
		if err != nil {
			return nil, fmt.Errorf("%s: image %q: %w", path, line, err)
		}
		out = append(out, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}
