package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
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
// (importing again tags it).
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
	now := s.now()
	for _, desc := range layout.Index {
		img := ImportedImage{Digest: desc.Digest, MediaType: desc.MediaType}
		// The tag names what ECR served, when the archive holds it.
		if src, err := digest.Parse(desc.Annotations[ocilayout.AnnotationSourceDigest]); err == nil {
			if info, err := s.store.Stat(src); err == nil {
				img.Digest, img.MediaType, desc.Size = src, desc.Annotations[ocilayout.AnnotationSourceMediaType], info.Size
			}
		}
		if ref, ok := imageName(desc.Annotations); ok {
			img.Name = ref.String()
			rec := cache.TagRecord{Digest: img.Digest, MediaType: img.MediaType, Size: desc.Size, Checked: now}
			if err := s.store.PutTag(cache.Repo{Registry: s.registry, Name: ref.Name}, ref.Tag, cache.AnyAccept, rec); err != nil {
				return nil, fmt.Errorf("import: recording tag %s: %w", ref, err)
			}
			// The archive says the repository holds the image: served
			// under that name, offline too, and under no other.
			for _, d := range []digest.Digest{img.Digest, desc.Digest} {
				if err := s.store.Link(cache.Repo{Registry: s.registry, Name: ref.Name}, d); err != nil {
					return nil, fmt.Errorf("import: linking %s to %s: %w", d, ref.Name, err)
				}
			}
			img.Tagged = true
		}
		rep.Images = append(rep.Images, img)
	}
	return rep, nil
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
