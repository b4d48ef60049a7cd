package fakeecr

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// Artifact types tests attach, as cosign 3 and SBOM tools write them.
const (
	ArtifactTypeCosignSignature = "application/vnd.dev.cosign.artifact.sig.v1+json"
	ArtifactTypeSPDX            = "application/spdx+json"
)

// emptyJSON is the OCI empty descriptor's content, the config of an
// artifact manifest.
var emptyJSON = []byte("{}")

// Referrer is an artifact to attach to a subject (AttachReferrer).
type Referrer struct {
	// ArtifactType is the manifest's artifactType, e.g.
	// ArtifactTypeCosignSignature.
	ArtifactType string
	// Payload is the artifact's one layer (a signature, an SBOM).
	Payload []byte
	// Annotations go into the manifest, and so into referrers lists.
	Annotations map[string]string
	// TagSchema also lists the artifact in the subject's tag-schema
	// index (tag sha256-<hex>), as a client pushing to a registry
	// without the referrers API does.
	TagSchema bool
}

// AttachReferrer stores in repo an artifact manifest (OCI image
// manifest with artifactType, the empty config, r.Payload as its layer)
// whose subject is subject, and returns its descriptor as a referrers
// list names it.
func (s *Server) AttachReferrer(repo string, subject oci.Descriptor, r Referrer) oci.Descriptor {
	s.PutBlob(repo, emptyJSON)
	payload := oci.Descriptor{MediaType: "application/octet-stream", Digest: s.PutBlob(repo, r.Payload), Size: int64(len(r.Payload))}
	if r.ArtifactType != "" {
		payload.MediaType = r.ArtifactType
	}
	doc := struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		ArtifactType  string            `json:"artifactType,omitempty"`
		Config        oci.Descriptor    `json:"config"`
		Layers        []oci.Descriptor  `json:"layers"`
		Subject       oci.Descriptor    `json:"subject"`
		Annotations   map[string]string `json:"annotations,omitempty"`
	}{2, oci.MediaTypeImageManifest, r.ArtifactType,
		oci.Descriptor{MediaType: "application/vnd.oci.empty.v1+json", Digest: digest.FromBytes(emptyJSON), Size: int64(len(emptyJSON))},
		[]oci.Descriptor{payload}, subject, r.Annotations}
	data, _ := json.Marshal(doc) // plain strings and numbers
	dgst := s.PutManifest(repo, "", oci.MediaTypeImageManifest, data)
	m, _ := s.store.manifest(repo, dgst.String(), true)
	d := referrer(m)
	if r.TagSchema {
		s.addToTagSchema(repo, subject.Digest, d)
	}
	return d
}

// TagSchemaTag is the tag under which the tag schema lists the referrers
// of subject: sha256-<hex>.
func TagSchemaTag(subject digest.Digest) string {
	return subject.Algorithm().String() + "-" + subject.Encoded()
}

// addToTagSchema adds d to the index tagged TagSchemaTag(subject) in
// repo, creating it if needed.
func (s *Server) addToTagSchema(repo string, subject digest.Digest, d oci.Descriptor) {
	s.refs.indexMu.Lock() // one read-modify-write of the index at a time
	defer s.refs.indexMu.Unlock()
	idx := struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Manifests     []oci.Descriptor `json:"manifests"`
	}{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex}
	tag := TagSchemaTag(subject)
	if m, _ := s.store.manifest(repo, tag, false); m != nil {
		_ = json.Unmarshal(m.data, &idx)
	}
	idx.Manifests = append(slices.DeleteFunc(idx.Manifests, func(o oci.Descriptor) bool { return o.Digest == d.Digest }), d)
	data, _ := json.Marshal(idx)
	s.PutManifest(repo, tag, oci.MediaTypeImageIndex, data)
}

// SetReferrersAPI turns the referrers API on (the default, as ECR since
// 2024) or off. Off, every referrers request is answered 404 with the
// given OCI error code ("" for a bare 404 with a text body), as by a
// registry that predates the API; clients then fall back to the tag
// schema.
func (s *Server) SetReferrersAPI(on bool, offCode string) {
	s.refs.mu.Lock()
	defer s.refs.mu.Unlock()
	s.refs.off, s.refs.code = !on, offCode
}

// referrersState says whether the referrers API is off, and how it
// answers then; indexMu orders updates of tag-schema indexes.
type referrersState struct {
	mu   sync.Mutex
	off  bool
	code string

	indexMu sync.Mutex
}

// refuse answers a referrers request as a registry without the API, and
// reports whether it did.
func (r *referrersState) refuse(w http.ResponseWriter) bool {
	r.mu.Lock()
	off, code := r.off, r.code
	r.mu.Unlock()
	switch {
	case !off:
		return false
	case code == "":
		http.Error(w, "404 page not found", http.StatusNotFound)
	default:
		writeOCIError(w, http.StatusNotFound, code, strings.ToLower(code)+" (no referrers API)")
	}
	return true
}
