package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/ocilayout"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// ImportReport is the answer of Import.
type ImportReport struct {
	Images []ImportedImage `json:"images"`
	// Blobs and Bytes count the archive's content; New of them were not
	// in the store before.
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	New   int   `json:"new"`
	// Referrers counts the referrers (signatures, SBOMs...) of the named
	// images the archive holds, linked to their images' repositories.
	Referrers int `json:"referrers,omitempty"`
}

// ImportedImage is an image of the archive's index.json.
type ImportedImage struct {
	Name      string        `json:"name"` // repo:tag as the mirror names it; empty if the archive gives none
	Digest    digest.Digest `json:"digest"`
	MediaType string        `json:"mediaType"`
	// Tagged says a tag record now maps Name to Digest, as if ECR had
	// just answered: a mirror with STALE_IF_ERROR serves it while ECR
	// cannot be reached.
	Tagged bool `json:"tagged"`
}

// Import implements Cache. Every blob is verified against its digest as
// it is read and staged apart from the store (cache.Stage), and every
// image must be whole (in the archive or already stored). Only then is
// the archive's content admitted, in one step: a bad archive, a failure
// or a crash at any point admits nothing. The tag records and links
// follow; a crash between the two leaves the content stored but untagged
// (importing again tags it). Every manifest of the archive is admitted,
// whether index.json names it or not; the referrers of a named image
// (found by the subject their manifests name) are linked to its
// repository with it, their referrers lists recorded (recordReferrers),
// and an index.json entry that names no image and is a referrer is not
// reported as an image.
func (s *Service) Import(ctx context.Context, r io.Reader) (*ImportReport, error) {
	rep := &ImportReport{Images: []ImportedImage{}}
	st, err := s.store.NewStage()
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	defer st.Discard()
	layout, err := ocilayout.Read(ctxReader{ctx, r}, func(b ocilayout.Blob) error {
		rep.Blobs++
		rep.Bytes += b.Size
		if _, err := s.store.Stat(b.Digest); err == nil {
			st.Need(b.Digest)
			return nil // the reader still reads and verifies it
		}
		return st.Add(b.Digest, b.Size, b.MediaType, b.Body)
	})
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	var missing []string
	for _, d := range layout.Missing() {
		if _, err := s.store.Stat(d); err != nil {
			missing = append(missing, d.String())
		} else {
			st.Need(d)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("import: the archive lacks %d blobs its images need, and the cache does not hold them: %s",
			len(missing), strings.Join(firstN(missing, 5), ", "))
	}
	added, err := st.Admit()
	if errors.Is(err, cache.ErrStageTooLarge) {
		return nil, fmt.Errorf("import: the archive's %d bytes do not fit in the cache (CACHE_MAX_SIZE %d bytes): %w", rep.Bytes, s.store.MaxSize(), err)
	}
	if err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	rep.New = len(added)
	if err := s.nameImages(layout, rep); err != nil {
		return nil, err
	}
	return rep, nil
}

// nameImages records the tags of the archive's named images, links each
// image to its repository, and its referrers with it; index.json entries
// of referrers are no images of the report.
func (s *Service) nameImages(layout *ocilayout.Layout, rep *ImportReport) error {
	now := s.now()
	linked := map[digest.Digest]bool{}
	for _, desc := range layout.Index {
		img := ImportedImage{Digest: desc.Digest, MediaType: desc.MediaType}
		// The tag names what ECR served, when the archive holds it.
		if src, err := digest.Parse(desc.Annotations[ocilayout.AnnotationSourceDigest]); err == nil {
			if info, err := s.store.Stat(src); err == nil {
				img.Digest, img.MediaType, desc.Size = src, desc.Annotations[ocilayout.AnnotationSourceMediaType], info.Size
			}
		}
		ref, ok := imageName(desc.Annotations)
		if !ok && layout.Subject(desc.Digest) != "" {
			continue // a referrer, linked with its subject's image below
		}
		if ok {
			img.Name = ref.String()
			rec := cache.TagRecord{Digest: img.Digest, MediaType: img.MediaType, Size: desc.Size, Checked: now}
			if err := s.store.PutTag(cache.Repo{Registry: s.registry, Name: ref.Name}, ref.Tag, cache.AnyAccept, rec); err != nil {
				return fmt.Errorf("import: recording tag %s: %w", ref, err)
			}
			// The archive says the repository holds the image: served
			// under that name, offline too, and under no other.
			repo := cache.Repo{Registry: s.registry, Name: ref.Name}
			for _, d := range []digest.Digest{img.Digest, desc.Digest} {
				if err := s.store.Link(repo, d); err != nil {
					return fmt.Errorf("import: linking %s to %s: %w", d, ref.Name, err)
				}
			}
			if err := s.linkReferrers(layout, repo, linked, img.Digest, desc.Digest); err != nil {
				return err
			}
			img.Tagged = true
		}
		rep.Images = append(rep.Images, img)
	}
	rep.Referrers = len(linked)
	return nil
}

// linkReferrers links to repo the archive's referrers of the images
// rooted at roots (of any manifest or index they reference), and their
// referrers in turn, adding each to linked. A referrer names its subject;
// the subject does not reference it, so linking the image does not link
// it.
func (s *Service) linkReferrers(layout *ocilayout.Layout, repo cache.Repo, linked map[digest.Digest]bool, roots ...digest.Digest) error {
	seen := map[digest.Digest]bool{}
	stack := slices.Clone(roots)
	for len(stack) > 0 {
		d := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		if seen[d] {
			continue
		}
		seen[d] = true
		for _, r := range layout.Refs(d) {
			stack = append(stack, r.Digest)
		}
		if err := s.recordReferrers(repo, d, layout.Referrers(d)); err != nil {
			return err
		}
		for _, r := range layout.Referrers(d) {
			if err := s.store.Link(repo, r.Digest); err != nil {
				return fmt.Errorf("import: linking referrer %s of %s to %s: %w", r.Digest, d, repo.Name, err)
			}
			linked[r.Digest] = true
			stack = append(stack, r.Digest)
		}
	}
	return nil
}

// recordReferrers records list, the archive's referrers of subject, as
// if upstream had just answered the referrers API for repo with it: the
// whole list, and the list of each artifactType in it, so that a mirror
// with STALE_IF_ERROR serves them while ECR cannot be reached. A list
// too large to record is served from ECR only.
func (s *Service) recordReferrers(repo cache.Repo, subject digest.Digest, list []oci.Descriptor) error {
	if len(list) == 0 {
		return nil
	}
	types := []string{""}
	for _, d := range list {
		if d.ArtifactType != "" && !slices.Contains(types, d.ArtifactType) {
			types = append(types, d.ArtifactType)
		}
	}
	for _, t := range types {
		rec := cache.ReferrersRecord{Checked: s.now()}
		kept := slices.DeleteFunc(slices.Clone(list), func(d oci.Descriptor) bool { return t != "" && d.ArtifactType != t })
		if t != "" {
			rec.FiltersApplied = "artifactType"
		}
		body, err := json.Marshal(referrersIndex{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex, Manifests: kept})
		if err != nil {
			return fmt.Errorf("import: the referrers of %s: %w", subject, err)
		}
		rec.Body = body
		err = s.store.PutReferrers(cache.ReferrersKey{Repo: repo, Subject: subject, ArtifactType: t}, rec)
		if err != nil && !errors.Is(err, cache.ErrTooLarge) {
			return fmt.Errorf("import: recording the referrers of %s in %s: %w", subject, repo.Name, err)
		}
	}
	return nil
}

// referrersIndex is the answer of the referrers API an import records.
type referrersIndex struct {
	SchemaVersion int              `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Manifests     []oci.Descriptor `json:"manifests"`
}

// imageName reads the repo:tag an index.json entry is named by, as the
// mirror names it: io.containerd.image.name (a full reference whose
// registry host is dropped), else org.opencontainers.image.ref.name when
// it is a whole repo:tag rather than a bare tag.
func imageName(annotations map[string]string) (registry.Reference, bool) {
	if name := annotations[ocilayout.AnnotationImageName]; name != "" {
		if i := strings.Index(name, "/"); i > 0 {
			if host := name[:i]; strings.ContainsAny(host, ".:") || host == "localhost" {
				name = name[i+1:]
			}
		}
		if ref, err := registry.ParseReference(name); err == nil && ref.Tag != "" && strings.Contains(name, ":") {
			return ref, true
		}
	}
	name := annotations[ocilayout.AnnotationRefName]
	if !strings.Contains(name, ":") || strings.Contains(name, "@") {
		return registry.Reference{}, false
	}
	ref, err := registry.ParseReference(name)
	return ref, err == nil
}

func firstN(s []string, n int) []string {
	if len(s) > n {
		return append(s[:n:n], fmt.Sprintf("and %d more", len(s)-n))
	}
	return s
}

// ctxReader stops reading once ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
