package imageclient

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/ocilayout"
)

func descDigests(ds []oci.Descriptor) []digest.Digest {
	out := make([]digest.Digest, len(ds))
	for i, d := range ds {
		out[i] = d.Digest
	}
	return out
}

func sortedDigests(ds ...digest.Digest) []digest.Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

func TestReferrersReadsEveryPageAndFilters(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		api          referrersAPI
		artifactType string
		// wantSigs and wantSBOMs: whether the list holds them.
		wantSigs, wantSBOMs bool
		wantGets            int
	}{
		{name: "one page", wantSigs: true, wantSBOMs: true, wantGets: 1},
		{name: "pages of two, linked on the registry", api: referrersAPI{pageSize: 2}, wantSigs: true, wantSBOMs: true, wantGets: 3},
		// The mirror's Link names the host the request named; a Link to
		// another host is followed on the client's registry, nowhere else.
		{name: "pages linked to another host", api: referrersAPI{pageSize: 2, linkHost: "elsewhere.invalid:5000"}, wantSigs: true, wantSBOMs: true, wantGets: 3},
		{name: "pages linked relatively", api: referrersAPI{pageSize: 2, linkHost: "-"}, wantSigs: true, wantSBOMs: true, wantGets: 3},
		{name: "filtered by the registry", artifactType: sbomType, wantSBOMs: true, wantGets: 1},
		{name: "filtered here when the registry does not", api: referrersAPI{noFilter: true, pageSize: 4}, artifactType: signatureType, wantSigs: true, wantGets: 2},
		{name: "no referrers API", api: referrersAPI{absent: true}, wantGets: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			img := reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
			var sigs, sboms []digest.Digest
			for range 3 {
				sigs = append(sigs, reg.artifact("team/app", img, signatureType, 5).Digest)
				sboms = append(sboms, reg.artifact("team/app", img, sbomType, 7).Digest)
			}
			reg.artifact("team/app", reg.image("team/app", "", oci.MediaTypeImageManifest, 3), signatureType) // another image's
			reg.setReferrers(tt.api)
			list, err := reg.client(Options{}).Referrers(context.Background(), "team/app", img.Digest, tt.artifactType)
			if err != nil {
				t.Fatal(err)
			}
			var want []digest.Digest
			if tt.wantSigs {
				want = append(want, sigs...)
			}
			if tt.wantSBOMs {
				want = append(want, sboms...)
			}
			if got := descDigests(list); !slices.Equal(got, sortedDigests(want...)) {
				t.Errorf("referrers %v, want %v", got, sortedDigests(want...))
			}
			for _, d := range list {
				if d.ArtifactType == "" || d.Annotations["org.example.kind"] != d.ArtifactType || d.MediaType != oci.MediaTypeImageManifest {
					t.Errorf("referrer %+v lacks what the list said of it", d)
				}
			}
			queries := reg.referrerQueries()
			if len(queries) != tt.wantGets {
				t.Errorf("%d GETs of the list (%q), want %d", len(queries), queries, tt.wantGets)
			}
			if tt.artifactType != "" && !strings.Contains(queries[0], "artifactType=") {
				t.Errorf("first GET %q does not ask for the artifact type", queries[0])
			}
		})
	}
}

func TestReferrersReportsWhatItCannotRead(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		api     referrersAPI
		wantErr string
	}{
		{name: "an error status, as the registry's code and message", api: referrersAPI{status: 503, body: `{"errors":[{"code":"UNAVAILABLE","message":"upstream down"}]}`}, wantErr: ": UNAVAILABLE: upstream down"},
		{name: "not an index", api: referrersAPI{body: `[1,2]`}, wantErr: "not an image index"},
		{name: "a referrer digest that is not sha256", api: referrersAPI{body: `{"manifests":[{"digest":"md5:d41d8cd98f00b204e9800998ecf8427e"}]}`}, wantErr: "not a sha256 digest"},
		{name: "larger than a manifest may be", api: referrersAPI{body: `{"manifests":[` + strings.Repeat(" ", maxManifestSize) + `]}`}, wantErr: "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			img := reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
			reg.setReferrers(tt.api)
			list, err := reg.client(Options{}).Referrers(context.Background(), "team/app", img.Digest, "")
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), "referrers of team/app@"+img.Digest.String()) {
				t.Fatalf("Referrers = %v, %v; want an error naming team/app@%s and containing %q", list, err, img.Digest, tt.wantErr)
			}
		})
	}
}

// A list whose pages link back to themselves ends in an error, not a
// loop.
func TestReferrersStopsAtPagesThatLinkBack(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	img := reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
	reg.artifact("team/app", img, signatureType)
	reg.setReferrers(referrersAPI{linkSelf: true})
	_, err := reg.client(Options{}).Referrers(context.Background(), "team/app", img.Digest, "")
	if err == nil || !strings.Contains(err.Error(), "link back") {
		t.Fatalf("Referrers = %v, want an error about pages that link back", err)
	}
	if n := len(reg.referrerQueries()); n != 1 {
		t.Errorf("%d GETs of the list, want 1", n)
	}
}

// imageWithReferrers is team/app:v1, an index of two platforms, with a
// signature of the index, an SBOM of the amd64 manifest, a signature of
// that SBOM, a signature of the arm64 manifest, and a chain of referrers
// of the SBOM's signature one level deeper than the client reads.
type imageWithReferrers struct {
	index, amd, arm                 oci.Descriptor
	indexSig, sbom, sbomSig, armSig oci.Descriptor
	deepest, tooDeep                oci.Descriptor // at maxReferrerDepth, and past it
}

func storeImageWithReferrers(reg *testRegistry) *imageWithReferrers {
	s := &imageWithReferrers{}
	s.amd = reg.image("team/app", "", oci.MediaTypeImageManifest, 10)
	s.arm = reg.image("team/app", "", oci.MediaTypeImageManifest, 20)
	s.index = reg.index("team/app", "v1", oci.MediaTypeImageIndex, onPlatform(s.amd, "linux/amd64"), onPlatform(s.arm, "linux/arm64"))
	s.indexSig = reg.artifact("team/app", s.index, signatureType, 11)
	s.sbom = reg.artifact("team/app", s.amd, sbomType, 12)          // depth 1
	s.sbomSig = reg.artifact("team/app", s.sbom, signatureType, 13) // depth 2
	s.armSig = reg.artifact("team/app", s.arm, signatureType, 14)
	s.deepest = reg.artifact("team/app", s.sbomSig, signatureType, 15) // depth 3
	s.tooDeep = reg.artifact("team/app", s.deepest, signatureType, 16)
	if maxReferrerDepth != 3 {
		reg.t.Fatalf("the chain is built for a depth of 3, not %d", maxReferrerDepth)
	}
	return s
}

// layersOf is the layers of the artifact a in team/app.
func layersOf(reg *testRegistry, a oci.Descriptor) []digest.Digest {
	reg.mu.Lock()
	body := reg.content[manifestPath("team/app", a.Digest.String())].body
	reg.mu.Unlock()
	var doc Doc
	if err := json.Unmarshal(body, &doc); err != nil {
		reg.t.Fatal(err)
	}
	return descDigests(doc.Layers)
}

func TestWarmWithReferrersReadsThemToABoundedDepth(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name         string
		opts         Options
		api          referrersAPI
		wantReferrer func(s *imageWithReferrers) []oci.Descriptor
	}{
		{name: "without referrers", opts: Options{}, wantReferrer: func(s *imageWithReferrers) []oci.Descriptor { return nil }},
		{name: "every referrer", opts: Options{WithReferrers: true}, wantReferrer: func(s *imageWithReferrers) []oci.Descriptor {
			return []oci.Descriptor{s.indexSig, s.sbom, s.armSig, s.sbomSig, s.deepest}
		}},
		{name: "the image's SBOMs, with their signatures", opts: Options{WithReferrers: true, ReferrerType: sbomType},
			wantReferrer: func(s *imageWithReferrers) []oci.Descriptor { return []oci.Descriptor{s.sbom, s.sbomSig, s.deepest} }},
		{name: "one platform's", opts: Options{WithReferrers: true, Platforms: []string{"linux/arm64"}},
			wantReferrer: func(s *imageWithReferrers) []oci.Descriptor { return []oci.Descriptor{s.indexSig, s.armSig} }},
		{name: "a registry without the API", opts: Options{WithReferrers: true}, api: referrersAPI{absent: true},
			wantReferrer: func(s *imageWithReferrers) []oci.Descriptor { return nil }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			s := storeImageWithReferrers(reg)
			reg.setReferrers(tt.api)
			var prog countingProgress
			img, err := reg.client(tt.opts).Warm(context.Background(), mustParse(t, "team/app:v1"), &prog)
			if err != nil {
				t.Fatal(err)
			}
			want := tt.wantReferrer(s)
			var wantDigests []digest.Digest
			for _, d := range want {
				wantDigests = append(wantDigests, d.Digest)
			}
			if got := img.ReferrerRoots(); !slices.Equal(sortedDigests(got...), sortedDigests(wantDigests...)) {
				t.Errorf("referrers %v, want %v", got, wantDigests)
			}
			for _, r := range img.Referrers {
				if r.Desc.ArtifactType == "" || r.Desc.Annotations["org.example.kind"] != r.Desc.ArtifactType || r.Desc.Digest != digest.FromBytes(r.Body) {
					t.Errorf("referrer %+v lacks its artifact type, annotations or body", r.Desc)
				}
			}
			// Each referrer wanted and its blobs read once, verified;
			// nothing past the depth bound.
			for _, a := range want {
				if n := reg.getsOf(manifestPath("team/app", a.Digest.String())); n != 1 {
					t.Errorf("referrer %s read %d times, want once", a.Digest, n)
				}
				for _, b := range layersOf(reg, a) {
					if n := reg.getsOf(blobPath("team/app", b)); n != 1 {
						t.Errorf("blob %s of referrer %s read %d times, want once", b, a.Digest, n)
					}
				}
			}
			for _, b := range layersOf(reg, s.tooDeep) {
				if n := reg.getsOf(blobPath("team/app", b)) + reg.getsOf(manifestPath("team/app", s.tooDeep.Digest.String())); n != 0 {
					t.Errorf("the referrer past depth %d was read", maxReferrerDepth)
				}
			}
			if !tt.opts.WithReferrers && len(reg.referrerQueries()) != 0 {
				t.Errorf("referrers listed %d times without WithReferrers", len(reg.referrerQueries()))
			}
			if prog.done != img.Size() || prog.total != img.Size() {
				t.Errorf("progress %d of %d bytes, want %d", prog.done, prog.total, img.Size())
			}
		})
	}
}

func TestResolveRefusesAReferrerItCannotVerify(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	img := reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
	sig := reg.artifact("team/app", img, signatureType, 5)
	// Other bytes, still naming the image as their subject.
	path := manifestPath("team/app", sig.Digest.String())
	reg.mu.Lock()
	body := append(slices.Clone(reg.content[path].body), ' ')
	reg.mu.Unlock()
	reg.set(path, entry{mediaType: oci.MediaTypeImageManifest, body: body})
	_, err := reg.client(Options{WithReferrers: true}).Resolve(context.Background(), mustParse(t, "team/app:v1"))
	if err == nil || !strings.Contains(err.Error(), "body hashes to") || !strings.Contains(err.Error(), sig.Digest.String()) {
		t.Fatalf("Resolve = %v; want an error naming referrer %s whose body hashes to another digest", err, sig.Digest)
	}
}

func TestWriteImageWritesReferrersAsTheLayoutSpecWants(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		platforms []string
		want      func(s *imageWithReferrers) []oci.Descriptor
		// notWritten are referrers whose blobs the archive must lack.
		notWritten func(s *imageWithReferrers) []oci.Descriptor
	}{
		{name: "the index whole", want: func(s *imageWithReferrers) []oci.Descriptor {
			return []oci.Descriptor{s.indexSig, s.sbom, s.armSig, s.sbomSig, s.deepest}
		}},
		// The index is not written: its signature names what the
		// archive lacks.
		{name: "one platform", platforms: []string{"linux/amd64"}, want: func(s *imageWithReferrers) []oci.Descriptor {
			return []oci.Descriptor{s.sbom, s.sbomSig, s.deepest}
		}, notWritten: func(s *imageWithReferrers) []oci.Descriptor { return []oci.Descriptor{s.indexSig, s.armSig} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			s := storeImageWithReferrers(reg)
			var buf bytes.Buffer
			aw := ocilayout.NewWriter(&buf)
			c := reg.client(Options{WithReferrers: true, Platforms: tt.platforms})
			w, err := c.WriteImage(context.Background(), aw, mustParse(t, "team/app:v1"), nil)
			if err != nil {
				t.Fatal(err)
			}
			// The same image again (as another tag would): each referrer
			// is still listed once.
			if _, err := c.WriteImage(context.Background(), aw, mustParse(t, "team/app:v1"), nil); err != nil {
				t.Fatal(err)
			}
			if err := aw.Close(); err != nil {
				t.Fatal(err)
			}
			layout, err := ocilayout.Read(&buf, nil)
			if err != nil {
				t.Fatalf("the archive does not read back: %v", err)
			}
			want := tt.want(s)
			checkReferrerEntries(t, reg, layout, want)
			if tt.notWritten != nil {
				for _, a := range tt.notWritten(s) {
					for _, b := range append(layersOf(reg, a), a.Digest) {
						if _, ok := layout.Blobs[b]; ok {
							t.Errorf("the archive holds %s of %s, a referrer of what it lacks", b, a.Digest)
						}
					}
				}
			}
			// A reader finds them by their subjects.
			if got := descDigests(layout.Referrers(s.sbom.Digest)); !slices.Equal(got, []digest.Digest{s.sbomSig.Digest}) {
				t.Errorf("layout referrers of the SBOM: %v, want its signature %s", got, s.sbomSig.Digest)
			}
			if missing := layout.Missing(); len(missing) != 0 {
				t.Errorf("the archive lacks %v", missing)
			}
			if got := len(w.Image.ReferrerRoots()); got != len(want) {
				t.Errorf("WriteImage reports %d referrers, want %d", got, len(want))
			}
		})
	}
}

// checkReferrerEntries checks that index.json lists each of want once,
// as the referrers list describes it, naming no image, besides the image
// written twice, and that the archive holds their blobs.
func checkReferrerEntries(t *testing.T, reg *testRegistry, layout *ocilayout.Layout, want []oci.Descriptor) {
	t.Helper()
	entries := map[digest.Digest]oci.Descriptor{}
	for _, e := range layout.Index {
		if e.Annotations[ocilayout.AnnotationRefName] != "" {
			continue
		}
		if _, dup := entries[e.Digest]; dup {
			t.Errorf("index.json lists referrer %s twice", e.Digest)
		}
		entries[e.Digest] = e
	}
	if len(entries) != len(want) || len(layout.Index) != len(want)+2 {
		t.Errorf("index.json has %d entries, %d of them unnamed; want the image twice and %d referrers", len(layout.Index), len(entries), len(want))
	}
	for _, a := range want {
		e, ok := entries[a.Digest]
		if !ok {
			t.Errorf("index.json lacks referrer %s", a.Digest)
			continue
		}
		if e.MediaType != oci.MediaTypeImageManifest || e.Size != a.Size || e.ArtifactType != a.ArtifactType ||
			e.Annotations["org.example.kind"] != a.ArtifactType || e.Annotations[ocilayout.AnnotationImageName] != "" {
			t.Errorf("index.json entry %+v, want %s as the referrers list describes it, naming no image", e, a.Digest)
		}
		for _, b := range layersOf(reg, a) {
			if _, ok := layout.Blobs[b]; !ok {
				t.Errorf("the archive lacks blob %s of referrer %s", b, a.Digest)
			}
		}
	}
}

// A referrer written as an OCI artifact manifest (a draft of OCI 1.1) is
// asked for with its own media type, and its blobs are read.
func TestWarmReadsAnArtifactManifestReferrer(t *testing.T) {
	t.Parallel()
	reg := newRegistry(t)
	img := reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
	blob := reg.blob("team/app", "application/octet-stream", 9)
	art := reg.manifest("team/app", "", oci.MediaTypeArtifactManifest, struct {
		MediaType    string           `json:"mediaType"`
		ArtifactType string           `json:"artifactType"`
		Blobs        []oci.Descriptor `json:"blobs"`
		Subject      oci.Descriptor   `json:"subject"`
	}{oci.MediaTypeArtifactManifest, signatureType, []oci.Descriptor{blob}, img})
	got, err := reg.client(Options{WithReferrers: true}).Warm(context.Background(), mustParse(t, "team/app:v1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if roots := got.ReferrerRoots(); !slices.Equal(roots, []digest.Digest{art.Digest}) {
		t.Errorf("referrers %v, want %s", roots, art.Digest)
	}
	if !strings.Contains(reg.acceptAt(manifestPath("team/app", art.Digest.String())), oci.MediaTypeArtifactManifest) {
		t.Errorf("the artifact manifest was asked for without its media type")
	}
	if n := reg.getsOf(blobPath("team/app", blob.Digest)); n != 1 {
		t.Errorf("its blob read %d times, want once", n)
	}
}
