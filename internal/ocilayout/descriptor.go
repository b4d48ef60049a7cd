package ocilayout

import (
	"bytes"
	_ "crypto/sha512" // so that digest.Validate accepts sha384/sha512 digests wherever this package is linked
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// Annotation keys of the index.json entries that name an image.
const (
	// AnnotationRefName is the OCI reference name: skopeo selects an image
	// of an oci-archive by it (oci-archive:FILE.tar:REF).
	AnnotationRefName = "org.opencontainers.image.ref.name"
	// AnnotationImageName is the full image name (registry/repo:tag) that
	// containerd, and so docker load, tags the image with.
	AnnotationImageName = "io.containerd.image.name"
	// AnnotationSourceDigest and AnnotationSourceMediaType mark an image
	// whose manifests "ecr-mirror export" rewrote from Docker to OCI
	// media types (OCI layouts hold OCI manifests): the digest and media
	// type of the manifest ECR serves under the image's name, which the
	// archive holds beside the rewritten one.
	AnnotationSourceDigest    = "io.ecr-mirror.source.digest"
	AnnotationSourceMediaType = "io.ecr-mirror.source.mediaType"
)

// mediaTypeOctetStream is the media type of a blob that is not a manifest.
const mediaTypeOctetStream = "application/octet-stream"

// maxManifestSize is the largest blob Read buffers and inspects: ECR's
// manifest limit. Larger blobs are streamed and never manifests.
const maxManifestSize = 4 << 20

// ErrDigestMismatch is matched (errors.Is) by every [*DigestError].
var ErrDigestMismatch = errors.New("digest mismatch")

// ErrInvalidArchive is matched (errors.Is) by the errors Read returns for
// an archive that is malformed, unsafe or truncated, as opposed to errors
// of the underlying reader or of the caller's function.
var ErrInvalidArchive = errors.New("invalid OCI layout archive")

// DigestError reports a blob whose content does not hash to its digest.
type DigestError struct {
	Digest digest.Digest // the digest the blob is named by
	Got    digest.Digest // the digest of its content
}

// Error names the expected digest and the one the content hashes to.
func (e *DigestError) Error() string {
	return fmt.Sprintf("blob %s: content hashes to %s", e.Digest, e.Got)
}

// Is makes errors.Is(err, ErrDigestMismatch) true.
func (e *DigestError) Is(target error) bool {
	return target == ErrDigestMismatch
}

// manifestDoc is the part of a manifest or an index sniff reads.
type manifestDoc struct {
	SchemaVersion *int             `json:"schemaVersion"`
	MediaType     string           `json:"mediaType"`
	Config        *oci.Descriptor  `json:"config"`
	Layers        []oci.Descriptor `json:"layers"`
	Manifests     []oci.Descriptor `json:"manifests"`
}

// referrerOf returns the subject manifest b (of media type mt) names,
// or "" when it names none that is valid, and b's descriptor in a
// referrers list less its digest and size: mt, its artifact type (else
// its config's media type) and its annotations.
func referrerOf(b []byte, mt string) (digest.Digest, oci.Descriptor) {
	var m struct {
		ArtifactType string            `json:"artifactType"`
		Config       *oci.Descriptor   `json:"config"`
		Subject      *oci.Descriptor   `json:"subject"`
		Annotations  map[string]string `json:"annotations"`
	}
	if json.Unmarshal(b, &m) != nil || m.Subject == nil || m.Subject.Digest.Validate() != nil {
		return "", oci.Descriptor{}
	}
	d := oci.Descriptor{MediaType: mt, ArtifactType: m.ArtifactType, Annotations: m.Annotations}
	if d.ArtifactType == "" && m.Config != nil {
		d.ArtifactType = m.Config.MediaType
	}
	return m.Subject.Digest, d
}

// sniff returns the manifest media type of b and the descriptors it
// references (config and layers, or manifests; non-nil, possibly empty),
// or "application/octet-stream" and nil when b is not a schemaVersion 2
// OCI or Docker manifest or index.
func sniff(b []byte) (string, []oci.Descriptor) {
	if t := bytes.TrimLeft(b, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return mediaTypeOctetStream, nil
	}
	var m manifestDoc
	if err := json.Unmarshal(b, &m); err != nil || m.SchemaVersion == nil || *m.SchemaVersion != 2 {
		return mediaTypeOctetStream, nil
	}
	mt := m.MediaType
	if mt == "" {
		switch {
		case m.Manifests != nil && m.Config == nil:
			mt = oci.MediaTypeImageIndex
		case m.Config != nil && m.Layers != nil:
			mt = oci.MediaTypeImageManifest
		}
	}
	switch mt {
	case oci.MediaTypeImageManifest, oci.MediaTypeDockerManifest:
		refs := make([]oci.Descriptor, 0, len(m.Layers)+1)
		if m.Config != nil {
			refs = append(refs, *m.Config)
		}
		return mt, append(refs, m.Layers...)
	case oci.MediaTypeImageIndex, oci.MediaTypeDockerManifestList:
		return mt, append(make([]oci.Descriptor, 0, len(m.Manifests)), m.Manifests...)
	}
	return mediaTypeOctetStream, nil
}
