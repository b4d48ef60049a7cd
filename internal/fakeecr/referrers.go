package fakeecr

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// manifestFields are the parts of a manifest or index the referrers API
// reads.
type manifestFields struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Config       *oci.Descriptor   `json:"config"`
	Subject      *oci.Descriptor   `json:"subject"`
	Annotations  map[string]string `json:"annotations"`
}

// subjectOf is the digest a manifest's subject field names, or "".
func subjectOf(data []byte) digest.Digest {
	var f manifestFields
	if json.Unmarshal(data, &f) != nil || f.Subject == nil {
		return ""
	}
	return f.Subject.Digest
}

// referrer describes m as a referrers list does: its artifactType is its
// own, else its config's media type (OCI image spec, "Listing Referrers").
func referrer(m *manifest) oci.Descriptor {
	var f manifestFields
	_ = json.Unmarshal(m.data, &f) // stored manifests are valid JSON
	d := oci.Descriptor{MediaType: m.mediaType, Digest: m.dgst, Size: int64(len(m.data)),
		ArtifactType: f.ArtifactType, Annotations: f.Annotations}
	if d.ArtifactType == "" && f.Config != nil {
		d.ArtifactType = f.Config.MediaType
	}
	return d
}

// referrers lists the manifests of repository name whose subject is dgst,
// in digest order; repoFound is false when the repository does not exist.
func (s *store) referrers(name string, dgst digest.Digest) (refs []oci.Descriptor, repoFound bool) {
	s.mu.RLock()
	r := s.repos[name]
	var ms []*manifest
	if r != nil {
		for _, m := range r.manifests {
			ms = append(ms, m)
		}
	}
	s.mu.RUnlock()
	if r == nil {
		return nil, false
	}
	refs = []oci.Descriptor{}
	for _, m := range ms {
		if subjectOf(m.data) == dgst {
			refs = append(refs, referrer(m))
		}
	}
	slices.SortFunc(refs, func(a, b oci.Descriptor) int { return strings.Compare(string(a.Digest), string(b.Digest)) })
	return refs, true
}

// serveReferrers serves GET /v2/<name>/referrers/<digest>, as ECR does
// since 2024: an OCI index of the repository's manifests whose subject is
// the digest (empty when there are none, the subject need not exist),
// filtered by ?artifactType= with OCI-Filters-Applied saying so. Whether
// ECR pages long lists is unconfirmed; the fake sends one page. With the
// API off (SetReferrersAPI) it answers 404 instead.
func (s *Server) serveReferrers(w http.ResponseWriter, r *http.Request, rt route) {
	s.ctr.referrers.Add(1)
	if s.refs.refuse(w) {
		return
	}
	dgst, err := digest.Parse(rt.ref)
	if err != nil {
		writeOCIError(w, http.StatusBadRequest, codeDigestInvalid, "invalid digest "+strconv.Quote(rt.ref))
		return
	}
	refs, repoFound := s.store.referrers(rt.name, dgst)
	if !repoFound {
		s.writeNameUnknown(w, rt.name)
		return
	}
	if at := r.URL.Query().Get("artifactType"); at != "" {
		refs = slices.DeleteFunc(refs, func(d oci.Descriptor) bool { return d.ArtifactType != at })
		w.Header().Set("OCI-Filters-Applied", "artifactType")
	}
	body, err := json.Marshal(struct {
		SchemaVersion int              `json:"schemaVersion"`
		MediaType     string           `json:"mediaType"`
		Manifests     []oci.Descriptor `json:"manifests"`
	}{2, oci.MediaTypeImageIndex, refs})
	if err != nil { // cannot happen: plain strings and numbers
		writeOCIError(w, http.StatusInternalServerError, codeUnknown, err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", oci.MediaTypeImageIndex)
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}
