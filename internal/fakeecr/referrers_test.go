package fakeecr

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// The referrers API lists a repository's manifests whose subject is the
// digest asked for, filtered by artifactType on request; a manifest pushed
// with a subject is answered with OCI-Subject.
func TestReferrers(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)
	const repo = "team/app"
	subject := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`)
	subjectDgst := f.PutManifest(repo, "v1", "", subject)
	artifact := func(kind, artifactType, configType string) []byte {
		at := ""
		if artifactType != "" {
			at = fmt.Sprintf(`"artifactType":%q,`, artifactType)
		}
		return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",%s`+
			`"config":{"mediaType":%q,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[],`+
			`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":%d},"annotations":{"kind":%q}}`,
			at, configType, subjectDgst, len(subject), kind))
	}
	f.PutBlob(repo, []byte("{}"))
	sig := artifact("sig", "application/vnd.example.sig", "application/vnd.oci.empty.v1+json")
	sbom := artifact("sbom", "", "application/vnd.example.sbom")
	f.PutManifest(repo, "", "", sbom)
	put := send(t, c, http.MethodPut, f.URL()+"/v2/"+repo+"/manifests/"+digest.FromBytes(sig).String(), sig,
		auth, "Content-Type: application/vnd.oci.image.manifest.v1+json")
	wantStatus(t, put, http.StatusCreated)
	if got := put.Header.Get("OCI-Subject"); got != subjectDgst.String() {
		t.Fatalf("OCI-Subject %q, want %s", got, subjectDgst)
	}
	put = send(t, c, http.MethodPut, f.URL()+"/v2/"+repo+"/manifests/v2", subject, auth, "Content-Type: application/vnd.oci.image.manifest.v1+json")
	if wantStatus(t, put, http.StatusCreated); put.Header.Get("OCI-Subject") != "" {
		t.Fatalf("OCI-Subject %q on a manifest without subject", put.Header.Get("OCI-Subject"))
	}

	tests := []struct {
		name, path, query string
		status            int
		kinds             []string // annotations "kind" of the listed manifests, any order
		filtered          bool
	}{
		{name: "all", path: repo + "/referrers/" + subjectDgst.String(), status: 200, kinds: []string{"sig", "sbom"}},
		{name: "by artifactType", path: repo + "/referrers/" + subjectDgst.String(), query: "?artifactType=application/vnd.example.sig", status: 200, kinds: []string{"sig"}, filtered: true},
		{name: "config type as artifactType", path: repo + "/referrers/" + subjectDgst.String(), query: "?artifactType=application/vnd.example.sbom", status: 200, kinds: []string{"sbom"}, filtered: true},
		{name: "no referrers", path: repo + "/referrers/" + digest.FromString("nothing").String(), status: 200, kinds: []string{}},
		{name: "unknown repository", path: "team/nope/referrers/" + subjectDgst.String(), status: 404},
		{name: "bad digest", path: repo + "/referrers/sha256:zz", status: 400},
	}
	for _, tt := range tests {
		r := do(t, c, http.MethodGet, f.URL()+"/v2/"+tt.path+tt.query, auth)
		if r.StatusCode != tt.status {
			t.Fatalf("%s: status %d, want %d: %s", tt.name, r.StatusCode, tt.status, r.body)
		}
		if tt.status != 200 {
			continue
		}
		var idx struct {
			MediaType string           `json:"mediaType"`
			Manifests []oci.Descriptor `json:"manifests"`
		}
		if err := json.Unmarshal(r.body, &idx); err != nil || idx.Manifests == nil || idx.MediaType != oci.MediaTypeImageIndex {
			t.Fatalf("%s: body %s (%v)", tt.name, r.body, err)
		}
		if ct := r.Header.Get("Content-Type"); ct != oci.MediaTypeImageIndex {
			t.Errorf("%s: Content-Type %q", tt.name, ct)
		}
		var kinds []string
		for _, d := range idx.Manifests {
			kinds = append(kinds, d.Annotations["kind"])
			if d.ArtifactType == "" || d.Size == 0 || d.MediaType == "" {
				t.Errorf("%s: incomplete descriptor %+v", tt.name, d)
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(kinds)), slices.Sorted(slices.Values(tt.kinds))) {
			t.Errorf("%s: listed %q, want %q", tt.name, kinds, tt.kinds)
		}
		if got := r.Header.Get("OCI-Filters-Applied") == "artifactType"; got != tt.filtered {
			t.Errorf("%s: OCI-Filters-Applied %q", tt.name, r.Header.Get("OCI-Filters-Applied"))
		}
	}
	if got := f.Counters().Referrers; got != int64(len(tests)) {
		t.Errorf("Referrers counter %d, want %d", got, len(tests))
	}
}
