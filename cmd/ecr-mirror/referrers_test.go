package main

import (
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// signedRawImage is a subject image in the fake with a cosign signature
// and an SBOM attached.
type signedRawImage struct {
	rawImage
	sig, sbom oci.Descriptor
}

// putSignedRawImage stores an image made from seed in repo under tag,
// with a cosign signature and an SPDX SBOM referring to it (listed in
// its tag-schema index too when tagSchema).
func putSignedRawImage(fake *fakeecr.Server, repo, tag string, seed uint64, tagSchema bool) signedRawImage {
	img := signedRawImage{rawImage: newRawImage(seed, nil)}
	putRawImage(fake, repo, tag, img.rawImage)
	subject := oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: img.Dgst, Size: int64(len(img.Manifest))}
	img.sig = fake.AttachReferrer(repo, subject, fakeecr.Referrer{ArtifactType: fakeecr.ArtifactTypeCosignSignature,
		Payload: []byte(`{"critical":{"image":{"docker-manifest-digest":"` + img.Dgst.String() + `"}}}`), TagSchema: tagSchema})
	img.sbom = fake.AttachReferrer(repo, subject, fakeecr.Referrer{ArtifactType: fakeecr.ArtifactTypeSPDX,
		Payload: []byte(`{"spdxVersion":"SPDX-2.3"}`), TagSchema: tagSchema})
	return img
}

// clientReferrers lists subject's referrers in repo through the mirror as
// cosign does (go-containerregistry's remote.Referrers), filtered by
// artifactType unless it is "".
func clientReferrers(t *testing.T, m *mirror, repo string, subject digest.Digest, artifactType string) ([]digest.Digest, error) {
	t.Helper()
	d, err := name.NewDigest(m.Host+"/"+repo+"@"+subject.String(), name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	opts := []remote.Option{remote.WithTransport(newTransport(t))}
	if artifactType != "" {
		opts = append(opts, remote.WithFilter("artifactType", artifactType))
	}
	idx, err := remote.Referrers(d, opts...)
	if err != nil {
		return nil, err
	}
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, err
	}
	out := []digest.Digest{}
	for _, desc := range im.Manifests {
		out = append(out, digest.Digest(desc.Digest.String()))
	}
	slices.Sort(out)
	return out, nil
}

// rawReferrers GETs subject's referrers in repo through the mirror, as
// notation and oras do (no fallback of their own), and returns the
// answer with the digests listed, sorted.
func rawReferrers(t *testing.T, m *mirror, repo string, subject digest.Digest, artifactType string) (*http.Response, []byte, []digest.Digest) {
	t.Helper()
	u := m.URL + "/v2/" + repo + "/referrers/" + subject.String()
	if artifactType != "" {
		u += "?artifactType=" + url.QueryEscape(artifactType)
	}
	resp, body, err := get(t, http.MethodGet, u, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		return resp, body, nil
	}
	var idx referrersIndex
	if err := json.Unmarshal(body, &idx); err != nil || idx.SchemaVersion != 2 || idx.MediaType != oci.MediaTypeImageIndex || idx.Manifests == nil {
		t.Fatalf("referrers body %s is not an OCI index (%v)", body, err)
	}
	out := []digest.Digest{}
	for _, d := range idx.Manifests {
		out = append(out, d.Digest)
	}
	slices.Sort(out)
	return resp, body, out
}

func sorted(ds ...digest.Digest) []digest.Digest {
	out := append([]digest.Digest{}, ds...)
	slices.Sort(out)
	return out
}

// cosign-style signatures and SBOMs are found through the mirror by
// subject digest and by artifactType; with ECR down, STALE_IF_ERROR
// serves the last lists (Warning 110) and the signature itself from the
// cache, and without it the lookup fails as before.
func TestReferrersThroughMirrorAndOffline(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := putSignedRawImage(fake, "team/app", "v1", 31, false)
	stale := startMirror(t, fake, mirrorOpts{env: map[string]string{"STALE_IF_ERROR": "1h", "UPSTREAM_TAG_TIMEOUT": staleTagTimeout.String()}})
	strict := startMirror(t, fake, mirrorOpts{env: map[string]string{"UPSTREAM_TAG_TIMEOUT": staleTagTimeout.String()}})

	for _, m := range []*mirror{stale, strict} {
		if got, err := clientReferrers(t, m, "team/app", img.Dgst, ""); err != nil || !slices.Equal(got, sorted(img.sig.Digest, img.sbom.Digest)) {
			t.Fatalf("referrers: %v, %v; want the signature and the SBOM", got, err)
		}
		if got, err := clientReferrers(t, m, "team/app", img.Dgst, fakeecr.ArtifactTypeCosignSignature); err != nil || !slices.Equal(got, sorted(img.sig.Digest)) {
			t.Fatalf("signatures: %v, %v; want the signature", got, err)
		}
		if resp, body, err := get(t, http.MethodGet, m.URL+"/v2/team/app/manifests/"+img.sig.Digest.String(), nil); err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("GET the signature: %v %s", err, body)
		}
	}

	before := fake.Counters().Dropped
	fake.SetDown(true)
	if got, err := clientReferrers(t, stale, "team/app", img.Dgst, fakeecr.ArtifactTypeCosignSignature); err != nil || !slices.Equal(got, sorted(img.sig.Digest)) {
		t.Fatalf("signatures with ECR down: %v, %v; want the signature", got, err)
	}
	resp, _, got := rawReferrers(t, stale, "team/app", img.Dgst, "")
	if resp.StatusCode != http.StatusOK || !slices.Equal(got, sorted(img.sig.Digest, img.sbom.Digest)) || resp.Header.Get("Warning") != staleWarning {
		t.Fatalf("referrers with ECR down: %d %v, Warning %q", resp.StatusCode, got, resp.Header.Get("Warning"))
	}
	if resp, body, err := get(t, http.MethodGet, stale.URL+"/v2/team/app/manifests/"+img.sig.Digest.String(), nil); err != nil || resp.StatusCode != http.StatusOK || digest.FromBytes(body) != img.sig.Digest {
		t.Fatalf("the signature with ECR down: %v %d", err, resp.StatusCode)
	}
	if fake.Counters().Dropped == before {
		t.Fatal("ECR saw no request while down: the test proves nothing")
	}
	resp, body, _ := rawReferrers(t, strict, "team/app", img.Dgst, "")
	if code, _, _ := registry.ParseErrorBody(body); resp.StatusCode != http.StatusBadGateway || code != registry.CodeUnavailable {
		t.Fatalf("without STALE_IF_ERROR: %d %s, want 502 UNAVAILABLE", resp.StatusCode, body)
	}
	if _, err := clientReferrers(t, strict, "team/app", img.Dgst, ""); err == nil {
		t.Fatal("without STALE_IF_ERROR a client found referrers with ECR down")
	}
}

// An ECR without the referrers API (404, even NAME_UNKNOWN): the mirror
// answers from the tag schema, so notation-like clients, which do not
// fall back on NAME_UNKNOWN, find the signatures; a subject without a
// tag-schema index has an empty list (200), never an error.
func TestReferrersFromTagSchemaThroughMirror(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	img := putSignedRawImage(fake, "team/app", "v1", 32, true)
	unsigned := newRawImage(33, nil)
	putRawImage(fake, "team/app", "v2", unsigned)
	fake.SetReferrersAPI(false, "NAME_UNKNOWN")
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"STALE_IF_ERROR": "1h", "UPSTREAM_TAG_TIMEOUT": staleTagTimeout.String()}})

	tests := []struct {
		name         string
		subject      digest.Digest
		artifactType string
		want         []digest.Digest
	}{
		{name: "all", subject: img.Dgst, want: sorted(img.sig.Digest, img.sbom.Digest)},
		{name: "signatures", subject: img.Dgst, artifactType: fakeecr.ArtifactTypeCosignSignature, want: sorted(img.sig.Digest)},
		{name: "SBOMs", subject: img.Dgst, artifactType: fakeecr.ArtifactTypeSPDX, want: sorted(img.sbom.Digest)},
		{name: "no tag-schema index", subject: unsigned.Dgst, want: []digest.Digest{}},
	}
	for _, tt := range tests {
		resp, body, got := rawReferrers(t, m, "team/app", tt.subject, tt.artifactType)
		if resp.StatusCode != http.StatusOK || !slices.Equal(got, tt.want) {
			t.Fatalf("%s: %d %s, want 200 listing %v", tt.name, resp.StatusCode, body, tt.want)
		}
		if f := resp.Header.Get("OCI-Filters-Applied"); (f == "artifactType") != (tt.artifactType != "") {
			t.Errorf("%s: OCI-Filters-Applied %q", tt.name, f)
		}
	}
	if got, err := clientReferrers(t, m, "team/app", img.Dgst, fakeecr.ArtifactTypeCosignSignature); err != nil || !slices.Equal(got, sorted(img.sig.Digest)) {
		t.Fatalf("cosign-like client: %v, %v", got, err)
	}
	fake.SetDown(true)
	resp, _, got := rawReferrers(t, m, "team/app", img.Dgst, fakeecr.ArtifactTypeCosignSignature)
	if resp.StatusCode != http.StatusOK || !slices.Equal(got, sorted(img.sig.Digest)) || resp.Header.Get("Warning") != staleWarning {
		t.Fatalf("the tag-schema answer with ECR down: %d %v, Warning %q", resp.StatusCode, got, resp.Header.Get("Warning"))
	}
}

// A signature pushed through the mirror with its subject is answered
// with OCI-Subject and is then listed by the referrers API through the
// mirror.
func TestPushedReferrerListedThroughMirror(t *testing.T) {
	t.Parallel()
	fake := fakeecr.Start(t, fakeecr.Options{})
	m := startMirror(t, fake, mirrorOpts{env: map[string]string{"PUSH": "true", "UPSTREAM_TAG_TIMEOUT": staleTagTimeout.String()}})
	subject := newRawImage(34, nil)
	pushRawImage(t, m, "team/app", "v1", subject)
	if _, _, got := rawReferrers(t, m, "team/app", subject.Dgst, ""); len(got) != 0 {
		t.Fatalf("referrers before the push: %v", got)
	}
	sig := newRawImage(35, &subject)
	if resp := pushRawImage(t, m, "team/app", sig.Dgst.String(), sig); resp.Header.Get("OCI-Subject") != subject.Dgst.String() {
		t.Fatalf("OCI-Subject %q, want %s", resp.Header.Get("OCI-Subject"), subject.Dgst)
	}
	if resp, body, got := rawReferrers(t, m, "team/app", subject.Dgst, ""); !slices.Equal(got, []digest.Digest{sig.Dgst}) {
		t.Fatalf("referrers after the push: %d %s", resp.StatusCode, body)
	}
}
