// Package oci is the OCI and Docker schema2 vocabulary the project shares:
// the media types of manifests, configs and layers, and the content
// descriptor. It imports none of the project's packages, so that the
// cache, the registry API, the proxy, the image client, the layout archive
// and the fake ECR all name a media type or a descriptor the same way.
package oci

import (
	"mime"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Manifest media types.
const (
	MediaTypeImageManifest       = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeImageIndex          = "application/vnd.oci.image.index.v1+json"
	MediaTypeArtifactManifest    = "application/vnd.oci.artifact.manifest.v1+json"
	MediaTypeDockerManifest      = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerManifestList  = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerSchema1       = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// Config and layer media types.
const (
	MediaTypeImageConfig                    = "application/vnd.oci.image.config.v1+json"
	MediaTypeImageLayer                     = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeImageLayerGzip                 = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeImageLayerNondistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeDockerConfig                   = "application/vnd.docker.container.image.v1+json"
	MediaTypeDockerLayer                    = "application/vnd.docker.image.rootfs.diff.tar"
	MediaTypeDockerLayerGzip                = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignLayerGzip         = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
)

// ManifestTypes are the schema2 manifest media types, indexes first: the
// Accept of a manifest GET that reads whole images.
func ManifestTypes() []string {
	return []string{MediaTypeImageIndex, MediaTypeDockerManifestList, MediaTypeImageManifest, MediaTypeDockerManifest}
}

// Descriptor is an OCI content descriptor: a reference from a manifest to
// its config and layers, from an index to its manifests, or an index.json
// entry.
type Descriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
	// ArtifactType is the artifact type of the manifest described, in
	// a referrers list.
	ArtifactType string            `json:"artifactType,omitempty"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
}

// ContentRef is a descriptor read for its digest alone, not as a whole
// Descriptor: a manifest whose other descriptor fields are malformed
// still names its content.
type ContentRef struct {
	Digest digest.Digest `json:"digest"`
}

// ManifestRefs is the part of a manifest or an index that names other
// content: an image manifest's config and layers, an OCI artifact
// manifest's blobs, an index's manifests. A referrer's subject is not
// among them: the image it describes does not need it.
type ManifestRefs struct {
	MediaType string       `json:"mediaType"`
	Config    *ContentRef  `json:"config"`
	Layers    []ContentRef `json:"layers"`
	Blobs     []ContentRef `json:"blobs"`
	Manifests []ContentRef `json:"manifests"`
}

// Platform is the platform an index entry's manifest runs on. Its fields
// are in the order export has always written them, so that a rewritten
// index keeps its bytes.
type Platform struct {
	OS           string   `json:"os"`
	Architecture string   `json:"architecture"`
	Variant      string   `json:"variant,omitempty"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
}

// Distributable reports whether registries serve, and a layout must hold,
// the blob d references: non-distributable (foreign) layers and content
// with URLs are fetched by clients from elsewhere.
func Distributable(d Descriptor) bool {
	return len(d.URLs) == 0 &&
		!strings.Contains(d.MediaType, "nondistributable") &&
		!strings.Contains(d.MediaType, "foreign")
}

// IsGenericType reports whether a media type says nothing about the
// content ("", application/octet-stream, application/json...): a
// manifest may hide behind it, served by a registry that sent no or a
// generic Content-Type, and only its JSON mediaType field tells.
func IsGenericType(mediaType string) bool {
	if mediaType == "" {
		return true
	}
	mt, _, err := mime.ParseMediaType(mediaType)
	if err != nil {
		return false
	}
	switch mt {
	case "application/octet-stream", "binary/octet-stream", "application/json", "text/plain":
		return true
	}
	return false
}
