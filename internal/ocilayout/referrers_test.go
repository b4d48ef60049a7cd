package ocilayout

import (
	"bytes"
	"fmt"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// referrerJSON is an OCI 1.1 artifact manifest whose subject is subject.
func referrerJSON(t testing.TB, subject oci.Descriptor, seed int) []byte {
	t.Helper()
	empty := descOf("application/vnd.oci.empty.v1+json", []byte("{}"))
	return mustJSON(t, struct {
		SchemaVersion int               `json:"schemaVersion"`
		MediaType     string            `json:"mediaType"`
		ArtifactType  string            `json:"artifactType"`
		Config        oci.Descriptor    `json:"config"`
		Layers        []oci.Descriptor  `json:"layers"`
		Subject       oci.Descriptor    `json:"subject"`
		Annotations   map[string]string `json:"annotations"`
	}{2, oci.MediaTypeImageManifest, "application/example", empty,
		[]oci.Descriptor{descOf("application/octet-stream", []byte(fmt.Sprint("signature ", seed)))}, subject,
		map[string]string{"seed": fmt.Sprint(seed)}})
}

func digestsOf(ds []oci.Descriptor) []digest.Digest {
	out := make([]digest.Digest, len(ds))
	for i, d := range ds {
		out[i] = d.Digest
	}
	return out
}

// Read finds the archive's referrers by the subject their manifests
// name, whether index.json names them or not.
func TestReadFindsReferrersBySubject(t *testing.T) {
	t.Parallel()
	m := newMinimal(t)
	img := descOf(oci.MediaTypeImageManifest, m.manifest)
	listed, unlisted := referrerJSON(t, img, 1), referrerJSON(t, img, 2)
	ofReferrer := referrerJSON(t, descOf(oci.MediaTypeImageManifest, listed), 3)
	var idx struct {
		SchemaVersion int              `json:"schemaVersion"`
		Manifests     []oci.Descriptor `json:"manifests"`
	}
	idx.SchemaVersion = 2
	named := img
	named.Annotations = map[string]string{AnnotationRefName: "v1"}
	idx.Manifests = []oci.Descriptor{named, descOf(oci.MediaTypeImageManifest, listed)}
	entries := append(m.entries()[:6], blobEntry([]byte("{}")))
	for i, b := range [][]byte{listed, unlisted, ofReferrer} {
		entries = append(entries, blobEntry(b), blobEntry([]byte(fmt.Sprint("signature ", i+1))))
	}
	entries = append(entries, entry{name: "index.json", body: mustJSON(t, idx)})
	layout, err := Read(bytes.NewReader(buildTar(t, entries...)), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{digest.FromBytes(listed), digest.FromBytes(unlisted)}
	slices.Sort(want)
	got := layout.Referrers(img.Digest)
	if !slices.Equal(digestsOf(got), want) {
		t.Errorf("Referrers(image) = %v, want %v", got, want)
	}
	for _, d := range got {
		// As the referrers API lists them.
		if d.MediaType != oci.MediaTypeImageManifest || d.ArtifactType != "application/example" || d.Annotations["seed"] == "" || d.Size <= 0 {
			t.Errorf("referrer %+v is not described as the referrers API would", d)
		}
	}
	if got := layout.Referrers(digest.FromBytes(listed)); !slices.Equal(digestsOf(got), []digest.Digest{digest.FromBytes(ofReferrer)}) {
		t.Errorf("Referrers(referrer) = %v, want the referrer's own", got)
	}
	if got := layout.Subject(digest.FromBytes(unlisted)); got != img.Digest {
		t.Errorf("Subject(unlisted referrer) = %q, want %s", got, img.Digest)
	}
	if got := layout.Subject(img.Digest); got != "" {
		t.Errorf("Subject(image) = %q, want none", got)
	}
	if missing := layout.Missing(); len(missing) != 0 {
		t.Errorf("Missing = %v", missing)
	}
}

// AddReferrer lists a referrer once, as the referrers API describes it,
// naming no image.
func TestAddReferrerListsEachOnce(t *testing.T) {
	t.Parallel()
	m := newMinimal(t)
	img := descOf(oci.MediaTypeImageManifest, m.manifest)
	sig := referrerJSON(t, img, 1)
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, b := range [][]byte{m.layer, m.config, m.manifest, []byte("{}"), []byte("signature 1"), sig} {
		if err := w.AddBlob(digest.FromBytes(b), int64(len(b)), bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}
	w.AddImage(img, map[string]string{AnnotationRefName: "team/app:v1"})
	d := descOf(oci.MediaTypeImageManifest, sig)
	d.ArtifactType, d.Annotations = "application/example", map[string]string{"a": "b"}
	w.AddReferrer(d)
	w.AddReferrer(d)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	layout, err := Read(&buf, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(layout.Index) != 2 {
		t.Fatalf("index.json: %+v, want the image and the referrer once", layout.Index)
	}
	if e := layout.Index[1]; e.Digest != d.Digest || e.ArtifactType != d.ArtifactType || e.Annotations["a"] != "b" || e.Annotations[AnnotationRefName] != "" {
		t.Errorf("referrer entry %+v, want %+v", e, d)
	}
}
