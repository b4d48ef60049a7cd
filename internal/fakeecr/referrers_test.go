package fakeecr

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
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

// AttachReferrer stores a cosign-style artifact that the referrers API
// lists, and, with TagSchema, the subject's tag-schema index lists too;
// SetReferrersAPI turns the API off (404, with the code asked for) and on.
func TestAttachReferrerAndReferrersAPIOff(t *testing.T) {
	t.Parallel()
	f := Start(t, Options{})
	c := newClient(t)
	auth := "Authorization: Basic " + token(t, f)
	const repo = "team/app"
	subject := []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","layers":[]}`)
	subj := oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: f.PutManifest(repo, "v1", "", subject), Size: int64(len(subject))}
	sig := f.AttachReferrer(repo, subj, Referrer{ArtifactType: ArtifactTypeCosignSignature, Payload: []byte("sig"), TagSchema: true})
	sbom := f.AttachReferrer(repo, subj, Referrer{ArtifactType: ArtifactTypeSPDX, Payload: []byte("sbom"), TagSchema: true})
	f.AttachReferrer(repo, subj, Referrer{ArtifactType: "application/x-api-only", Payload: []byte("x")})
	if sig.ArtifactType != ArtifactTypeCosignSignature || sig.MediaType != oci.MediaTypeImageManifest || sig.Size == 0 {
		t.Fatalf("descriptor %+v", sig)
	}
	listed := func(body []byte) []digest.Digest {
		t.Helper()
		var idx struct{ Manifests []oci.Descriptor }
		if err := json.Unmarshal(body, &idx); err != nil {
			t.Fatalf("body %s: %v", body, err)
		}
		var out []digest.Digest
		for _, d := range idx.Manifests {
			out = append(out, d.Digest)
		}
		slices.Sort(out)
		return out
	}
	want := []digest.Digest{sig.Digest, sbom.Digest}
	slices.Sort(want)
	r := do(t, c, http.MethodGet, f.URL()+"/v2/"+repo+"/referrers/"+subj.Digest.String()+"?artifactType="+url.QueryEscape(ArtifactTypeCosignSignature), auth)
	if got := listed(r.body); r.StatusCode != 200 || !slices.Equal(got, []digest.Digest{sig.Digest}) {
		t.Fatalf("referrers by artifactType: %d %v", r.StatusCode, got)
	}
	r = do(t, c, http.MethodGet, f.URL()+"/v2/"+repo+"/manifests/"+TagSchemaTag(subj.Digest), auth)
	if got := listed(r.body); r.StatusCode != 200 || !slices.Equal(got, want) || r.Header.Get("Content-Type") != oci.MediaTypeImageIndex {
		t.Fatalf("tag-schema index: %d %s %v, want %v", r.StatusCode, r.Header.Get("Content-Type"), got, want)
	}
	r = do(t, c, http.MethodGet, f.URL()+"/v2/"+repo+"/manifests/"+sig.Digest.String(), auth)
	if r.StatusCode != 200 || subjectOf(r.body) != subj.Digest {
		t.Fatalf("the artifact manifest: %d %s", r.StatusCode, r.body)
	}

	for _, code := range []string{"", codeNameUnknown, codeUnsupported} {
		f.SetReferrersAPI(false, code)
		r = do(t, c, http.MethodGet, f.URL()+"/v2/"+repo+"/referrers/"+subj.Digest.String(), auth)
		got, _, _ := strings.Cut(string(r.body), `"message"`)
		if r.StatusCode != 404 || code != "" && !strings.Contains(got, code) {
			t.Fatalf("API off (code %q): %d %s", code, r.StatusCode, r.body)
		}
	}
	f.SetReferrersAPI(true, "")
	if r = do(t, c, http.MethodGet, f.URL()+"/v2/"+repo+"/referrers/"+subj.Digest.String(), auth); r.StatusCode != 200 || len(listed(r.body)) != 3 {
		t.Fatalf("API back on: %d %s", r.StatusCode, r.body)
	}
}
