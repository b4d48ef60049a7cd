package imageclient

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

const (
	// maxReferrerDepth bounds referrers of referrers: 1 is the image's
	// own (a signature, an SBOM), 2 theirs (the SBOM's signature), and so
	// on.
	maxReferrerDepth = 3
	// maxReferrerPages bounds the pages of one referrers list.
	maxReferrerPages = 100
)

// Referrers lists the manifests whose subject is dgst in repo, every page
// of the list, following each page's Link to the next on the client's
// own registry (whatever host the Link names). With artifactType set,
// only those of that artifact type, whether or not the registry applies
// the filter. A registry without the referrers API (404) has none: an
// empty list, no error.
func (c *Client) Referrers(ctx context.Context, repo string, dgst digest.Digest, artifactType string) ([]oci.Descriptor, error) {
	u := c.base.JoinPath("v2", repo, "referrers", dgst.String())
	if artifactType != "" {
		u.RawQuery = url.Values{"artifactType": {artifactType}}.Encode()
	}
	what := "referrers of " + repo + "@" + dgst.String()
	var out []oci.Descriptor
	seen := map[string]bool{}
	for page := 0; u != nil; page++ {
		if page == maxReferrerPages || seen[u.String()] {
			return nil, fmt.Errorf("%s: more than %d pages, or pages that link back", what, maxReferrerPages)
		}
		seen[u.String()] = true
		list, next, err := c.referrersPage(ctx, u, what, page == 0)
		if err != nil {
			return nil, err
		}
		out = append(out, list...)
		u = next
	}
	if artifactType != "" {
		out = slices.DeleteFunc(out, func(d oci.Descriptor) bool { return d.ArtifactType != artifactType })
	}
	return out, nil
}

// referrersPage reads one page of a referrers list (what, for errors) at
// u and returns its descriptors and the URL of the next page, if any. A
// 404 for the first page is an empty list.
func (c *Client) referrersPage(ctx context.Context, u *url.URL, what string, first bool) ([]oci.Descriptor, *url.URL, error) {
	resp, err := c.do(ctx, u, oci.MediaTypeImageIndex)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound && first {
		return nil, nil, nil // no referrers API: no referrers
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, statusError(what, resp)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", what, err)
	}
	if len(body) > maxManifestSize {
		return nil, nil, fmt.Errorf("%s: a page larger than %d bytes", what, maxManifestSize)
	}
	var index struct {
		Manifests []oci.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &index); err != nil {
		return nil, nil, fmt.Errorf("%s: not an image index: %w", what, err)
	}
	for _, d := range index.Manifests {
		if d.Digest.Validate() != nil || d.Digest.Algorithm() != digest.SHA256 {
			return nil, nil, fmt.Errorf("%s: referrer %q: not a sha256 digest", what, d.Digest)
		}
	}
	return index.Manifests, c.nextPage(u, resp.Header.Get("Link")), nil
}

// nextPage is the URL of a Link header's rel="next" target, resolved
// against the page at u, on the client's own registry: its path and query
// only, so that a Link naming another host sends no request there.
func (c *Client) nextPage(u *url.URL, link string) *url.URL {
	for _, l := range strings.Split(link, ",") {
		target, params, ok := strings.Cut(strings.TrimSpace(l), ";")
		if !ok || !strings.Contains(params, `rel="next"`) {
			continue
		}
		t, err := url.Parse(strings.Trim(strings.TrimSpace(target), "<>"))
		if err != nil {
			return nil
		}
		t = u.ResolveReference(t)
		next := *c.base
		next.Path, next.RawPath, next.RawQuery = t.Path, t.RawPath, t.RawQuery
		return &next
	}
	return nil
}

// addReferrers reads, into img, the referrers of img's manifests (the
// top one and each platform's) of artifact type c.referrerType (any when
// empty), then the referrers of those, of any type, down to
// maxReferrerDepth levels: each referrer's manifest and blobs.
func (c *Client) addReferrers(ctx context.Context, img *Image, seen map[digest.Digest]bool) error {
	var subjects []digest.Digest
	for _, m := range img.Manifests {
		subjects = append(subjects, m.Desc.Digest)
	}
	read := map[digest.Digest]bool{}
	for depth := 0; depth < maxReferrerDepth && len(subjects) > 0; depth++ {
		filter := ""
		if depth == 0 {
			filter = c.referrerType
		}
		var next []digest.Digest
		for _, s := range subjects {
			list, err := c.Referrers(ctx, img.Ref.Name, s, filter)
			if err != nil {
				return err
			}
			for _, d := range list {
				if read[d.Digest] {
					continue
				}
				read[d.Digest] = true
				d.Annotations = maps.Clone(d.Annotations)
				if err := c.readArtifact(ctx, img, d, s, 0, seen); err != nil {
					return fmt.Errorf("referrer %s of %s: %w", d.Digest, s, err)
				}
				next = append(next, d.Digest)
			}
		}
		subjects = next
	}
	return nil
}

// readArtifact reads the manifest d describes, a referrer of subject
// ("" for the child of one), into img.Referrers with its blobs, or, for
// an index, its children of every platform; nested is how deep in an
// artifact's indexes d is.
func (c *Client) readArtifact(ctx context.Context, img *Image, d oci.Descriptor, subject digest.Digest, nested int, seen map[digest.Digest]bool) error {
	if nested > maxIndexDepth {
		return fmt.Errorf("manifest %s: indexes nested deeper than %d", d.Digest, maxIndexDepth)
	}
	accept := manifestAccept
	if d.MediaType != "" && !strings.Contains(accept, d.MediaType) && !strings.ContainsAny(d.MediaType, ",\r\n") {
		accept += ", " + d.MediaType // the listed type: an artifact manifest, say
	}
	body, desc, err := c.fetchManifest(ctx, img.Ref.Name, d.Digest.String(), accept)
	if err != nil {
		return err
	}
	var m Doc
	if err := json.Unmarshal(body, &m); err != nil {
		return fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	if desc.MediaType == "" {
		desc.MediaType = cmp.Or(m.MediaType, d.MediaType)
	}
	desc.ArtifactType, desc.Annotations = d.ArtifactType, d.Annotations
	img.Referrers = append(img.Referrers, Manifest{Desc: desc, Body: body, Doc: m, Subject: subject})
	for _, child := range m.Manifests {
		if err := c.readArtifact(ctx, img, child, "", nested+1, seen); err != nil {
			return err
		}
	}
	var blobs []oci.Descriptor
	if m.Config != nil {
		blobs = append(blobs, *m.Config)
	}
	return addBlobs(img, desc.Digest, slices.Concat(blobs, m.Layers, m.Blobs), seen)
}
