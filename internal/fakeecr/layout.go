package fakeecr

import (
	_ "crypto/sha256" // go-digest needs the hashes linked in to verify digests
	_ "crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// annotationRefName names an index.json entry in an OCI layout.
const annotationRefName = "org.opencontainers.image.ref.name"

// maxIndexDepth bounds how deeply indexes may nest in a layout.
const maxIndexDepth = 8

// manifestDoc is the part of a manifest or an index the loader reads.
type manifestDoc struct {
	MediaType string           `json:"mediaType"`
	Config    *oci.Descriptor  `json:"config"`
	Layers    []oci.Descriptor `json:"layers"`
	Manifests []oci.Descriptor `json:"manifests"`
}

func (m *manifestDoc) isIndex(mediaType string) bool {
	switch mediaType {
	case oci.MediaTypeImageIndex, oci.MediaTypeDockerManifestList:
		return true
	case oci.MediaTypeImageManifest, oci.MediaTypeDockerManifest:
		return false
	}
	return m.Manifests != nil && m.Config == nil
}

// LoadOCILayout loads the OCI image layout in dir (oci-layout, index.json,
// blobs/<alg>/<hex>) into repository repo: every manifest reachable from
// index.json as a manifest, every other blob as a blob. It tags the layout's
// top-level manifest as tag (none when tag is empty): the only entry of
// index.json, or the entry annotated org.opencontainers.image.ref.name=tag.
// It checks every digest and size and loads nothing when the layout is
// inconsistent.
func (s *Server) LoadOCILayout(dir, repo, tag string) error {
	if !ValidRepository(repo) {
		return fmt.Errorf("fakeecr: invalid repository name %q", repo)
	}
	if tag != "" && !ValidTag(tag) {
		return fmt.Errorf("fakeecr: invalid tag %q", tag)
	}
	var layout struct {
		Version string `json:"imageLayoutVersion"`
	}
	if err := readJSON(filepath.Join(dir, "oci-layout"), &layout); err != nil {
		return err
	}
	if layout.Version != "1.0.0" {
		return fmt.Errorf("fakeecr: %s: unsupported imageLayoutVersion %q", dir, layout.Version)
	}
	var index manifestDoc
	if err := readJSON(filepath.Join(dir, "index.json"), &index); err != nil {
		return err
	}
	if len(index.Manifests) == 0 {
		return fmt.Errorf("fakeecr: %s: index.json lists no manifests", dir)
	}
	var top oci.Descriptor
	if tag != "" {
		var err error
		if top, err = topManifest(index.Manifests, tag); err != nil {
			return fmt.Errorf("fakeecr: %s: %w", dir, err)
		}
	}

	blobs, err := readBlobs(dir)
	if err != nil {
		return err
	}
	l := layoutLoader{blobs: blobs, manifests: make(map[digest.Digest]string)}
	for _, d := range index.Manifests {
		if err := l.walk(d, 0); err != nil {
			return fmt.Errorf("fakeecr: %s: %w", dir, err)
		}
	}

	for dgst, data := range blobs {
		if mediaType, ok := l.manifests[dgst]; ok {
			t := ""
			if dgst == top.Digest {
				t = tag
			}
			s.store.putManifest(repo, t, newManifest(dgst, mediaType, data))
		} else {
			s.store.putBlob(repo, dgst, data)
		}
	}
	return nil
}

// topManifest picks the index.json entry to tag.
func topManifest(entries []oci.Descriptor, tag string) (oci.Descriptor, error) {
	if len(entries) == 1 {
		return entries[0], nil
	}
	for _, d := range entries {
		if d.Annotations[annotationRefName] == tag {
			return d, nil
		}
	}
	return oci.Descriptor{}, fmt.Errorf("index.json lists %d manifests, none annotated %s=%q",
		len(entries), annotationRefName, tag)
}

// layoutLoader walks a layout's manifests, noting which blobs are manifests.
type layoutLoader struct {
	blobs     map[digest.Digest][]byte
	manifests map[digest.Digest]string // digest → media type
}

// walk checks the manifest d points at and everything it references.
func (l *layoutLoader) walk(d oci.Descriptor, depth int) error {
	if depth > maxIndexDepth {
		return fmt.Errorf("indexes nest deeper than %d", maxIndexDepth)
	}
	if _, seen := l.manifests[d.Digest]; seen {
		return nil
	}
	data, err := l.blob(d)
	if err != nil {
		return err
	}
	var m manifestDoc
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("manifest %s: %w", d.Digest, err)
	}
	mediaType := d.MediaType
	if mediaType == "" {
		mediaType = m.MediaType
	}
	if mediaType == "" {
		mediaType = sniffMediaType(data)
	}
	l.manifests[d.Digest] = mediaType
	if m.isIndex(mediaType) {
		for _, child := range m.Manifests {
			if err := l.walk(child, depth+1); err != nil {
				return err
			}
		}
		return nil
	}
	if m.Config == nil {
		return fmt.Errorf("manifest %s has no config", d.Digest)
	}
	for _, ref := range append([]oci.Descriptor{*m.Config}, m.Layers...) {
		if _, err := l.blob(ref); err != nil {
			return fmt.Errorf("manifest %s: %w", d.Digest, err)
		}
	}
	return nil
}

// blob returns the blob d points at, checking that it exists and has d's size.
func (l *layoutLoader) blob(d oci.Descriptor) ([]byte, error) {
	data, ok := l.blobs[d.Digest]
	if !ok {
		return nil, fmt.Errorf("blob %s is missing", d.Digest)
	}
	if int64(len(data)) != d.Size {
		return nil, fmt.Errorf("blob %s has %d bytes, its descriptor says %d", d.Digest, len(data), d.Size)
	}
	return data, nil
}

// readBlobs reads every blob under dir/blobs and checks it against its name.
func readBlobs(dir string) (map[digest.Digest][]byte, error) {
	root := filepath.Join(dir, "blobs")
	blobs := make(map[digest.Digest][]byte)
	algs, err := os.ReadDir(root)
	if err != nil {
		return nil, fmt.Errorf("fakeecr: %w", err)
	}
	for _, alg := range algs {
		if !alg.IsDir() {
			continue
		}
		files, err := os.ReadDir(filepath.Join(root, alg.Name()))
		if err != nil {
			return nil, fmt.Errorf("fakeecr: %w", err)
		}
		for _, f := range files {
			if !f.Type().IsRegular() {
				continue
			}
			dgst := digest.NewDigestFromEncoded(digest.Algorithm(alg.Name()), f.Name())
			if err := dgst.Validate(); err != nil {
				return nil, fmt.Errorf("fakeecr: %s: not a blob: %w", filepath.Join(root, alg.Name(), f.Name()), err)
			}
			data, err := os.ReadFile(filepath.Join(root, alg.Name(), f.Name()))
			if err != nil {
				return nil, fmt.Errorf("fakeecr: %w", err)
			}
			if got := dgst.Algorithm().FromBytes(data); got != dgst {
				return nil, fmt.Errorf("fakeecr: blob %s has digest %s", dgst, got)
			}
			blobs[dgst] = data
		}
	}
	return blobs, nil
}

// readJSON decodes the JSON file at path into v.
func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("fakeecr: %s is missing: not an OCI image layout?", path)
	}
	if err != nil {
		return fmt.Errorf("fakeecr: %w", err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("fakeecr: %s: %w", path, err)
	}
	return nil
}
