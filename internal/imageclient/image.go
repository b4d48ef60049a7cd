package imageclient

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Doc is an image manifest or an index, whichever it is: the parts the
// client reads.
type Doc struct {
	MediaType string           `json:"mediaType"`
	Config    *oci.Descriptor  `json:"config"`
	Layers    []oci.Descriptor `json:"layers"`
	Manifests []oci.Descriptor `json:"manifests"`
	// Blobs are those of an OCI artifact manifest (a draft of OCI 1.1
	// some referrers were written with), in place of config and layers.
	Blobs []oci.Descriptor `json:"blobs"`
}

// Manifest is a manifest as read: its descriptor, body and document.
type Manifest struct {
	Desc oci.Descriptor
	Body []byte
	Doc  Doc
	// Subject is, for a referrer, the manifest it was listed as a
	// referrer of; "" for any other manifest (a child of a referrer that
	// is an index, too).
	Subject digest.Digest
}

// Image is an image's manifests, read and verified, and the blobs they
// name.
type Image struct {
	Ref registry.Reference
	Top oci.Descriptor // the manifest or index Ref names
	// Manifests holds every manifest read, the top one first, with its
	// body; Blobs the distinct blobs of the wanted platforms, and of the
	// referrers.
	Manifests []Manifest
	Blobs     []oci.Descriptor
	// Referrers are, with Options.WithReferrers, the manifests of the
	// image's referrers and of theirs, each after its subject (their
	// children after a referrer that is an index), with the artifact
	// type and annotations the referrers list gave.
	Referrers []Manifest
	// Images are the image manifests among them, with their config and
	// layers, for Docker's manifest.json.
	Images []Manifest
}

// Size is the bytes of all the image's manifests and blobs.
func (img *Image) Size() int64 {
	var n int64
	for _, m := range slices.Concat(img.Manifests, img.Referrers) {
		n += m.Desc.Size
	}
	for _, b := range img.Blobs {
		n += b.Size
	}
	return n
}

// Resolve reads r's manifests: for an index, those of its children of the
// wanted platforms; with Options.WithReferrers, its referrers too.
func (c *Client) Resolve(ctx context.Context, r registry.Reference) (*Image, error) {
	img := &Image{Ref: r}
	seen := map[digest.Digest]bool{}
	top, err := c.walk(ctx, img, r.Ref(), 0, seen)
	if err != nil {
		return nil, err
	}
	img.Top = top
	if c.withReferrers {
		if err := c.addReferrers(ctx, img, seen); err != nil {
			return nil, err
		}
	}
	return img, nil
}

// ReferrerRoots are the digests of the image's referrers (Referrers
// less the children of those that are indexes): what nothing in the
// image references, so what a pin must name besides the image.
func (img *Image) ReferrerRoots() []digest.Digest {
	var out []digest.Digest
	for _, m := range img.Referrers {
		if m.Subject != "" {
			out = append(out, m.Desc.Digest)
		}
	}
	return out
}

// walk reads the manifest ref into img and, for an index, its children of
// the wanted platforms, and returns the manifest's descriptor.
func (c *Client) walk(ctx context.Context, img *Image, ref string, depth int, seen map[digest.Digest]bool) (oci.Descriptor, error) {
	if depth > maxIndexDepth {
		return oci.Descriptor{}, fmt.Errorf("manifest %s: indexes nested deeper than %d", ref, maxIndexDepth)
	}
	body, desc, err := c.fetchManifest(ctx, img.Ref.Name, ref, manifestAccept)
	if err != nil {
		return oci.Descriptor{}, err
	}
	var m Doc
	if err := json.Unmarshal(body, &m); err != nil {
		return oci.Descriptor{}, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	fm := Manifest{Desc: desc, Body: body, Doc: m}
	img.Manifests = append(img.Manifests, fm)
	if m.Manifests != nil || m.MediaType == oci.MediaTypeImageIndex || m.MediaType == oci.MediaTypeDockerManifestList {
		for _, child := range m.Manifests {
			if !c.wantPlatform(child) {
				continue
			}
			if _, err := c.walk(ctx, img, child.Digest.String(), depth+1, seen); err != nil {
				return oci.Descriptor{}, err
			}
		}
		return desc, nil
	}
	if m.Config == nil {
		return oci.Descriptor{}, fmt.Errorf("manifest %s (%s) is neither an image manifest nor an index", desc.Digest, m.MediaType)
	}
	img.Images = append(img.Images, fm)
	return desc, addBlobs(img, desc.Digest, append([]oci.Descriptor{*m.Config}, m.Layers...), seen)
}

// addBlobs adds to img.Blobs those of blobs, named by the manifest
// dgst, that registries serve and img does not list yet.
func addBlobs(img *Image, dgst digest.Digest, blobs []oci.Descriptor, seen map[digest.Digest]bool) error {
	for _, b := range blobs {
		if !oci.Distributable(b) {
			continue // not served by registries: fetched from its URLs by clients
		}
		if b.Digest.Validate() != nil || b.Digest.Algorithm() != digest.SHA256 {
			return fmt.Errorf("manifest %s: blob %q: not a sha256 digest", dgst, b.Digest)
		}
		if !seen[b.Digest] {
			seen[b.Digest] = true
			img.Blobs = append(img.Blobs, b)
		}
	}
	return nil
}

// wantPlatform tells whether an index child is of a wanted platform.
func (c *Client) wantPlatform(d oci.Descriptor) bool {
	if len(c.platforms) == 0 {
		return true
	}
	if d.Platform == nil {
		return false
	}
	pl := d.Platform.OS + "/" + d.Platform.Architecture
	return slices.Contains(c.platforms, pl) || (d.Platform.Variant != "" && slices.Contains(c.platforms, pl+"/"+d.Platform.Variant))
}
