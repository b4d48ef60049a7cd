package imageclient

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/ocilayout"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Written is what WriteImage added to an archive for one image.
type Written struct {
	// Image is the image read: with Platforms narrowing an index to one
	// platform, that platform's manifest alone.
	Image *Image
	// Top is the manifest index.json names: Image.Top, or its rewrite
	// in OCI media types when they differ.
	Top oci.Descriptor
}

// WriteImage reads r and adds it to the archive: its manifests, its
// blobs (those the archive lacks), its OCI form (OCIForm) named in
// index.json as the registry names it, and an entry in Docker's
// manifest.json. With Options.WithReferrers, its referrers' manifests
// and blobs too, each referrer with an index.json entry of its own that
// names no image (ocilayout.Writer.AddReferrer). An index narrowed by Platforms to one platform is
// written as that platform's manifest: the index would name content the
// archive lacks.
func (c *Client) WriteImage(ctx context.Context, aw *ocilayout.Writer, r registry.Reference, prog Progress) (*Written, error) {
	prog = orDiscard(prog)
	img, err := c.Resolve(ctx, r)
	if err != nil {
		return nil, err
	}
	if len(c.platforms) > 0 && len(img.Manifests) > 1 {
		if len(img.Images) != 1 {
			return nil, fmt.Errorf("--platform selects %d of its platforms: export keeps an index whole, or one platform of it", len(img.Images))
		}
		img.Top, img.Manifests = img.Images[0].Desc, img.Images
		img.Referrers = referrersOf(img.Referrers, img.Manifests)
		img.Blobs = blobsOf(img.Blobs, slices.Concat(img.Manifests, img.Referrers))
	}
	prog.AddTotal(img.Size())
	if err := c.addContent(ctx, aw, img, prog); err != nil {
		return nil, err
	}
	top, rewritten, err := OCIForm(img)
	if err != nil {
		return nil, err
	}
	// ECR's own manifests stay in the archive, unreferenced by
	// index.json, so that an import serves them by their digests.
	for _, a := range rewritten {
		if err := aw.AddBlob(a.Desc.Digest, a.Desc.Size, bytes.NewReader(a.Body)); err != nil {
			return nil, err
		}
	}
	name := r.String()
	full := c.Host() + "/" + name
	annotations := map[string]string{ocilayout.AnnotationRefName: name, ocilayout.AnnotationImageName: full}
	if top.Desc.Digest != img.Top.Digest {
		annotations[ocilayout.AnnotationSourceDigest] = img.Top.Digest.String()
		annotations[ocilayout.AnnotationSourceMediaType] = img.Top.MediaType
	}
	aw.AddImage(oci.Descriptor{MediaType: top.Desc.MediaType, Digest: top.Desc.Digest, Size: top.Desc.Size}, annotations)
	addDockerManifest(aw, img, full)
	for _, m := range img.Referrers {
		if m.Subject != "" {
			aw.AddReferrer(m.Desc)
		}
	}
	return &Written{Image: img, Top: top.Desc}, nil
}

// blobsOf keeps, of blobs, those manifests name.
func blobsOf(blobs []oci.Descriptor, manifests []Manifest) []oci.Descriptor {
	named := map[digest.Digest]bool{}
	for _, m := range manifests {
		if m.Doc.Config != nil {
			named[m.Doc.Config.Digest] = true
		}
		for _, b := range slices.Concat(m.Doc.Layers, m.Doc.Blobs) {
			named[b.Digest] = true
		}
	}
	return slices.DeleteFunc(slices.Clone(blobs), func(b oci.Descriptor) bool { return !named[b.Digest] })
}

// referrersOf keeps, of referrers (each after its subject, as Resolve
// lists them), those that refer to one of manifests, directly or through
// other referrers, with the children of those that are indexes.
func referrersOf(referrers, manifests []Manifest) []Manifest {
	kept := map[digest.Digest]bool{}
	for _, m := range manifests {
		kept[m.Desc.Digest] = true
	}
	var out []Manifest
	keep := false // whether the children of the last referrer are kept
	for _, r := range referrers {
		if r.Subject != "" {
			keep = kept[r.Subject]
		}
		if keep {
			kept[r.Desc.Digest] = true
			out = append(out, r)
		}
	}
	return out
}

// addContent adds img's manifests, its referrers' and the blobs the
// archive lacks.
func (c *Client) addContent(ctx context.Context, aw *ocilayout.Writer, img *Image, prog Progress) error {
	for _, m := range slices.Concat(img.Manifests, img.Referrers) {
		if err := aw.AddBlob(m.Desc.Digest, m.Desc.Size, bytes.NewReader(m.Body)); err != nil {
			return err
		}
		prog.Add(m.Desc.Size)
	}
	for _, b := range img.Blobs {
		if aw.Has(b.Digest) {
			prog.Add(b.Size) // shared with an image written before
			continue
		}
		if err := c.copyBlob(ctx, aw, img.Ref.Name, b, prog); err != nil {
			return err
		}
	}
	return nil
}

// copyBlob streams a blob into the archive, which checks its size and
// digest.
func (c *Client) copyBlob(ctx context.Context, aw *ocilayout.Writer, repo string, b oci.Descriptor, prog Progress) error {
	if b.Size <= 0 {
		return fmt.Errorf("blob %s: its manifest gives no size", b.Digest)
	}
	body, err := c.OpenBlob(ctx, repo, b)
	if err != nil {
		return err
	}
	defer body.Close()
	start := time.Now()
	if err := aw.AddBlob(b.Digest, b.Size, prog.Reader(body)); err != nil {
		return fmt.Errorf("blob %s after %s: %w", b.Digest, time.Since(start).Round(time.Millisecond), err)
	}
	return nil
}

// addDockerManifest names img in Docker's manifest.json, which holds one
// image per entry: the only one, or linux/amd64 (else the first) of an
// index; tagged as full when the reference has a tag.
func addDockerManifest(aw *ocilayout.Writer, img *Image, full string) {
	dm := dockerImage(img)
	if dm == nil || !allDistributable(dm.Doc) {
		return
	}
	var layers []digest.Digest
	for _, l := range dm.Doc.Layers {
		layers = append(layers, l.Digest)
	}
	var tags []string
	if img.Ref.Tag != "" {
		tags = []string{full}
	}
	aw.AddDockerManifest(dm.Doc.Config.Digest, layers, tags)
}

// dockerImage picks the image manifest Docker's manifest.json names.
func dockerImage(img *Image) *Manifest {
	if len(img.Images) == 0 {
		return nil
	}
	top := img.Manifests[0]
	for _, child := range top.Doc.Manifests {
		if child.Platform != nil && child.Platform.OS == "linux" && child.Platform.Architecture == "amd64" {
			for i := range img.Images {
				if img.Images[i].Desc.Digest == child.Digest {
					return &img.Images[i]
				}
			}
		}
	}
	return &img.Images[0]
}

func allDistributable(m Doc) bool {
	for _, l := range m.Layers {
		if !oci.Distributable(l) {
			return false
		}
	}
	return m.Config != nil
}

// ociTypes are the OCI equivalents of Docker schema2 media types.
var ociTypes = map[string]string{
	oci.MediaTypeDockerManifest:         oci.MediaTypeImageManifest,
	oci.MediaTypeDockerManifestList:     oci.MediaTypeImageIndex,
	oci.MediaTypeDockerConfig:           oci.MediaTypeImageConfig,
	oci.MediaTypeDockerLayerGzip:        oci.MediaTypeImageLayerGzip,
	oci.MediaTypeDockerForeignLayerGzip: oci.MediaTypeImageLayerNondistributableGzip,
	oci.MediaTypeDockerLayer:            oci.MediaTypeImageLayer,
}

// Archived is a manifest as an archive holds it.
type Archived struct {
	Desc oci.Descriptor
	Body []byte
}

// OCIForm returns img's top manifest in OCI types, with every manifest
// it rewrote to get there. OCI layouts hold OCI manifests (skopeo reads
// nothing else), while ECR serves many Docker schema2 ones: these are
// rewritten as skopeo does when it writes an OCI layout. Config and
// layers are the same bytes, so their digests stay; the rewritten
// manifests get digests of their own.
func OCIForm(img *Image) (top Archived, rewritten []Archived, err error) {
	conv := map[digest.Digest]Archived{}
	for _, m := range img.Images {
		if m.Desc.MediaType != oci.MediaTypeDockerManifest && m.Doc.MediaType != oci.MediaTypeDockerManifest {
			continue
		}
		doc := ociManifestDoc{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, Config: retype(written(*m.Doc.Config))}
		for _, l := range m.Doc.Layers {
			doc.Layers = append(doc.Layers, retype(written(l)))
		}
		a, err := archive(doc, oci.MediaTypeImageManifest)
		if err != nil {
			return Archived{}, nil, err
		}
		conv[m.Desc.Digest] = a
		rewritten = append(rewritten, a)
	}
	first := img.Manifests[0]
	if first.Desc.Digest != img.Top.Digest { // narrowed to one platform
		first = img.Images[0]
	}
	if len(first.Doc.Manifests) == 0 {
		if a, ok := conv[first.Desc.Digest]; ok {
			return a, rewritten, nil
		}
		return Archived{Desc: first.Desc, Body: first.Body}, rewritten, nil
	}
	if len(conv) == 0 && first.Desc.MediaType != oci.MediaTypeDockerManifestList && first.Doc.MediaType != oci.MediaTypeDockerManifestList {
		return Archived{Desc: first.Desc, Body: first.Body}, nil, nil
	}
	idx := ociIndexDoc{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex}
	for _, child := range first.Doc.Manifests {
		child = written(child)
		if a, ok := conv[child.Digest]; ok {
			child.MediaType, child.Digest, child.Size = a.Desc.MediaType, a.Desc.Digest, a.Desc.Size
		}
		idx.Manifests = append(idx.Manifests, child)
	}
	a, err := archive(idx, oci.MediaTypeImageIndex)
	if err != nil {
		return Archived{}, nil, err
	}
	return a, append(rewritten, a), nil
}

// ociManifestDoc and ociIndexDoc are the OCI documents OCIForm writes.
type ociManifestDoc struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Config        oci.Descriptor   `json:"config"`
	Layers        []oci.Descriptor `json:"layers"`
}

type ociIndexDoc struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Manifests     []oci.Descriptor `json:"manifests"`
}

// retype gives d the OCI media type of its Docker one.
func retype(d oci.Descriptor) oci.Descriptor {
	if t, ok := ociTypes[d.MediaType]; ok {
		d.MediaType = t
	}
	return d
}

// written is d with only the fields a rewritten manifest has always
// carried: media type, digest, size, URLs and os/architecture/variant.
// Others (an artifactType naming a Docker config, which skopeo refuses
// in an OCI index) are dropped, so that an export's bytes stay as they
// were.
func written(d oci.Descriptor) oci.Descriptor {
	out := oci.Descriptor{MediaType: d.MediaType, Digest: d.Digest, Size: d.Size, URLs: d.URLs}
	if d.Platform != nil {
		out.Platform = &oci.Platform{OS: d.Platform.OS, Architecture: d.Platform.Architecture, Variant: d.Platform.Variant}
	}
	return out
}

// archive encodes doc as a manifest of mediaType.
func archive(doc any, mediaType string) (Archived, error) {
	body, err := json.Marshal(doc)
	if err != nil {
		return Archived{}, err
	}
	return Archived{Desc: oci.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(body), Size: int64(len(body))}, Body: body}, nil
}
