package main

import (
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/admin"
	"github.com/ecr-mirror/ecr-mirror/internal/fakeecr"
	"github.com/ecr-mirror/ecr-mirror/internal/imageclient"
	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/ocilayout"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// Artifact types of the signed image's referrers.
const (
	cosignSigType = fakeecr.ArtifactTypeCosignSignature
	spdxType      = fakeecr.ArtifactTypeSPDX
)

// signedFake is a fake ECR with team/app:v1 signed (sig), with an SBOM
// (sbom) that is signed too (sbomSig), and an unsigned team/other:v1.
type signedFake struct {
	fake               *fakeecr.Server
	app, other         rawImage
	sig, sbom, sbomSig artifact
}

// artifact is a referrer attached in the fake (fakeecr.AttachReferrer).
type artifact struct {
	oci.Descriptor               // as referrers lists name it
	Payload        digest.Digest // its one layer
}

func newSignedFake(t *testing.T) *signedFake {
	t.Helper()
	s := &signedFake{fake: fakeecr.Start(t, fakeecr.Options{}), app: newRawImage(101, nil), other: newRawImage(105, nil)}
	putRawImage(s.fake, "team/app", "v1", s.app)
	putRawImage(s.fake, "team/other", "v1", s.other)
	app := oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: s.app.Dgst, Size: int64(len(s.app.Manifest))}
	s.sig = s.attach(app, cosignSigType, 102)
	s.sbom = s.attach(app, spdxType, 103)
	s.sbomSig = s.attach(s.sbom.Descriptor, cosignSigType, 104)
	return s
}

// attach attaches to subject in team/app an artifact of artifactType
// whose payload and annotation depend on seed.
func (s *signedFake) attach(subject oci.Descriptor, artifactType string, seed uint64) artifact {
	payload := testkit.RandomBytes(seed, 256)
	subject = oci.Descriptor{MediaType: subject.MediaType, Digest: subject.Digest, Size: subject.Size}
	d := s.fake.AttachReferrer("team/app", subject, fakeecr.Referrer{ArtifactType: artifactType, Payload: payload,
		Annotations: map[string]string{"org.example.seed": fmt.Sprint(seed)}})
	return artifact{Descriptor: d, Payload: digest.FromBytes(payload)}
}

// patient is the settings of a mirror whose tag and referrers lookups
// wait for ECR as long as it takes (a busy machine cannot fail them; ECR
// down drops connections at once), with more settings in key, value
// pairs.
func patient(kv ...string) map[string]string {
	env := map[string]string{"UPSTREAM_TAG_TIMEOUT": "1h"}
	for i := 0; i+1 < len(kv); i += 2 {
		env[kv[i]] = kv[i+1]
	}
	return env
}

// contentOf is every digest of the images given: manifest, config, layer.
func contentOf(imgs ...rawImage) []digest.Digest {
	var out []digest.Digest
	for _, img := range imgs {
		out = append(out, img.Dgst, img.ConfigDgst, img.LayerDgst)
	}
	return out
}

// emptyConfig is the config of every artifact, the OCI empty JSON.
var emptyConfig = digest.FromString("{}")

// artifactContent is every digest of the artifacts given: manifest,
// config, payload.
func artifactContent(as ...artifact) []digest.Digest {
	var out []digest.Digest
	for _, a := range as {
		out = append(out, a.Digest, emptyConfig, a.Payload)
	}
	return out
}

// digestsOf is the artifacts' manifest digests, sorted.
func digestsOf(as ...artifact) []digest.Digest {
	var out []digest.Digest
	for _, a := range as {
		out = append(out, a.Digest)
	}
	slices.Sort(out)
	return out
}

// warm --with-referrers brings the image's signatures and SBOMs, and the
// SBOM's signature, into the cache; --referrers-type keeps one type of
// the image's referrers (with their own referrers); without the flag the
// referrers API is not asked.
func TestWarmWithReferrers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		args []string
		want func(s *signedFake) (wanted, unwanted []artifact)
		// lists is how many referrers lists ECR is asked for: one per
		// subject and level, down to the bound (the image's, then the
		// signature's and the SBOM's, then the SBOM signature's).
		lists int64
	}{
		{name: "every referrer", args: []string{"--with-referrers"}, lists: 4, want: func(s *signedFake) ([]artifact, []artifact) {
			return []artifact{s.sig, s.sbom, s.sbomSig}, nil
		}},
		{name: "the SBOMs and their signatures", args: []string{"--with-referrers", "--referrers-type", spdxType}, lists: 3,
			want: func(s *signedFake) ([]artifact, []artifact) { return []artifact{s.sbom, s.sbomSig}, []artifact{s.sig} }},
		{name: "no referrers", want: func(s *signedFake) ([]artifact, []artifact) { return nil, []artifact{s.sig, s.sbom, s.sbomSig} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := newSignedFake(t)
			m := startMirror(t, s.fake, mirrorOpts{env: patient()})
			wanted, unwanted := tt.want(s)
			args := append([]string{"warm", "--mirror", m.URL}, tt.args...)
			code, _, errOut := cli(t, nil, append(args, "team/app:v1")...)
			if code != exitOK {
				t.Fatalf("warm: exit %d\n%s", code, errOut)
			}
			if len(wanted) > 0 && !strings.Contains(errOut, "referrers") {
				t.Errorf("warm's line does not count the referrers:\n%s", errOut)
			}
			waitStored(t, m, append(contentOf(s.app), artifactContent(wanted...)...)...)
			c := s.fake.Counters()
			for _, a := range unwanted {
				if c.S3Get[a.Payload] != 0 || m.stored(a.Digest) || m.stored(a.Payload) {
					t.Errorf("referrer %s was fetched", a.Digest)
				}
			}
			if c.Referrers != tt.lists {
				t.Errorf("ECR was asked for %d referrers lists, want %d", c.Referrers, tt.lists)
			}
		})
	}
	if code, _, errOut := cli(t, nil, "warm", "--referrers-type", spdxType, "team/app:v1"); code != exitUsage || !strings.Contains(errOut, "--referrers-type needs --with-referrers") {
		t.Errorf("--referrers-type alone: exit %d\n%s", code, errOut)
	}
}

// export --with-referrers writes the referrers beside the image, each
// named in index.json as a referrer (no image name); import admits them
// and links them to the image's repository, so a mirror whose ECR is
// down serves the signature by digest, and its blobs.
func TestExportImportCarriesReferrers(t *testing.T) {
	t.Parallel()
	s := newSignedFake(t)
	bundle := exportSigned(t, s)
	checkReferrerEntries(t, bundle, s)

	dir := filepath.Join(t.TempDir(), "cache")
	code, stdout, errOut := cli(t, map[string]string{"CACHE_DIR": dir}, "import", "--json", bundle)
	if code != exitOK {
		t.Fatalf("import: exit %d\n%s", code, errOut)
	}
	var rep admin.ImportReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil || len(rep.Images) != 1 || rep.Images[0].Name != "team/app:v1" ||
		rep.Referrers != 3 || rep.New != len(contentOf(s.app))+len(artifactContent(s.sig, s.sbom, s.sbomSig))-2 { // the artifacts share their empty config
		t.Fatalf("import --json: %v\n%s", err, stdout)
	}

	s.fake.SetDown(true)
	s.fake.ResetCounters()
	m := startMirror(t, s.fake, mirrorOpts{dir: dir, env: patient("STALE_IF_ERROR", "always")})
	accept := map[string][]string{"Accept": {oci.MediaTypeImageManifest}}
	for _, a := range []artifact{s.sig, s.sbom, s.sbomSig} {
		resp, body, err := get(t, "GET", m.URL+"/v2/team/app/manifests/"+a.Digest.String(), accept)
		if err != nil || resp.StatusCode != 200 || digest.FromBytes(body) != a.Digest {
			t.Errorf("referrer %s by digest with ECR down: %v %v, body %s", a.Digest, err, resp, body)
		}
		if err := fetchBlob(t, m, "team/app", a.Payload); err != nil {
			t.Errorf("blob %s of referrer %s with ECR down: %v", a.Payload, a.Digest, err)
		}
	}
	// Linked to team/app only: another repository is not served it.
	if resp, _, err := get(t, "GET", m.URL+"/v2/team/other/manifests/"+s.sig.Digest.String(), accept); err != nil || resp.StatusCode == 200 {
		t.Errorf("the signature under team/other with ECR down: %v %v, want a refusal", err, resp)
	}
	if got := s3Gets(s.fake.Counters()); got != 0 {
		t.Errorf("the offline mirror fetched %d blobs from ECR", got)
	}
	// The lists themselves, as the import recorded them, whole and by
	// artifact type.
	checkReferrersList(t, m, "team/app", s.app.Dgst, "", s.sig, s.sbom)
	checkReferrersList(t, m, "team/app", s.app.Dgst, cosignSigType, s.sig)
	checkReferrersList(t, m, "team/app", s.sbom.Digest, "", s.sbomSig)
}

// warm --with-referrers leaves the referrers lists recorded: with ECR
// down, a verifier (cosign asks by artifact type) is answered.
func TestWarmWithReferrersServesTheListsOffline(t *testing.T) {
	t.Parallel()
	s := newSignedFake(t)
	m := startMirror(t, s.fake, mirrorOpts{env: patient("STALE_IF_ERROR", "always")})
	if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "--with-referrers", "team/app:v1"); code != exitOK {
		t.Fatalf("warm: exit %d\n%s", code, errOut)
	}
	s.fake.SetDown(true)
	checkReferrersList(t, m, "team/app", s.app.Dgst, "", s.sig, s.sbom)
	checkReferrersList(t, m, "team/app", s.app.Dgst, cosignSigType, s.sig)
	checkReferrersList(t, m, "team/app", s.app.Dgst, spdxType, s.sbom)
	checkReferrersList(t, m, "team/app", s.sbom.Digest, cosignSigType, s.sbomSig)
}

// checkReferrersList checks the mirror's referrers list of subject in
// repo, with an artifactType filter unless empty: want, each described
// with its artifact type, and the filter said applied.
func checkReferrersList(t *testing.T, m *mirror, repo string, subject digest.Digest, artifactType string, want ...artifact) {
	t.Helper()
	u := m.URL + "/v2/" + repo + "/referrers/" + subject.String()
	if artifactType != "" {
		u += "?artifactType=" + url.QueryEscape(artifactType)
	}
	resp, body, err := get(t, "GET", u, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Errorf("referrers of %s (%q) with ECR down: %v %v %s", subject, artifactType, err, resp, body)
		return
	}
	var idx struct {
		Manifests []oci.Descriptor `json:"manifests"`
	}
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatalf("referrers of %s: %v: %s", subject, err, body)
	}
	var got []digest.Digest
	for _, d := range idx.Manifests {
		got = append(got, d.Digest)
		if d.ArtifactType == "" || d.Size <= 0 {
			t.Errorf("referrer %+v is described without its artifact type or size", d)
		}
	}
	if slices.Sort(got); !slices.Equal(got, digestsOf(want...)) {
		t.Errorf("referrers of %s (%q) with ECR down: %v, want %v", subject, artifactType, got, digestsOf(want...))
	}
	if artifactType != "" && !strings.Contains(resp.Header.Get("OCI-Filters-Applied"), "artifactType") {
		t.Errorf("referrers of %s filtered by %q without OCI-Filters-Applied", subject, artifactType)
	}
}

// exportSigned exports team/app:v1 with its referrers through a mirror
// of s and returns the archive's path.
func exportSigned(t *testing.T, s *signedFake) string {
	t.Helper()
	m := startMirror(t, s.fake, mirrorOpts{env: patient()})
	bundle := filepath.Join(t.TempDir(), "bundle.tar")
	code, stdout, errOut := cli(t, nil, "export", "--mirror", m.URL, "--with-referrers", "--json", "-o", bundle, "team/app:v1")
	if code != exitOK {
		t.Fatalf("export: exit %d\n%s", code, errOut)
	}
	var sum imageclient.ExportSummary
	if err := json.Unmarshal([]byte(stdout), &sum); err != nil || len(sum.Images) != 1 ||
		!slices.Equal(sortedCopy(sum.Images[0].Referrers), digestsOf(s.sig, s.sbom, s.sbomSig)) {
		t.Fatalf("export --json: %v\n%s", err, stdout)
	}
	m.Stop()
	return bundle
}

// skopeo picks the image out of an archive that lists referrers too.
func TestExportWithReferrersSkopeoReads(t *testing.T) {
	t.Parallel()
	sk := newSkopeo(t)
	s := newSignedFake(t)
	bundle := exportSigned(t, s)
	dst := filepath.Join(t.TempDir(), "layout")
	args := []string{"--policy", sk.policy, "--registries.d", sk.regsd, "--tmpdir", sk.tmp,
		"--command-timeout", clientCmdTimeout.String(), "copy", "--preserve-digests",
		"oci-archive:" + bundle + ":team/app:v1", "oci:" + dst + ":copy"}
	if _, _, err := runTool(t, sk.env, sk.bin, args...); err != nil {
		t.Fatalf("skopeo copy oci-archive:%s:team/app:v1: %v", bundle, err)
	}
	blobs, refs := readOCILayout(t, dst)
	if refs["copy"] != s.app.Dgst || !slices.Contains(blobs, s.app.LayerDgst) {
		t.Errorf("skopeo's copy names %s with blobs %v, want %s and its layer", refs["copy"], blobs, s.app.Dgst)
	}
}

func sortedCopy(ds []digest.Digest) []digest.Digest {
	out := slices.Clone(ds)
	slices.Sort(out)
	return out
}

// checkReferrerEntries checks the archive's index.json: the image named,
// and each referrer in an entry of its own, with its artifact type and
// annotations, naming no image.
func checkReferrerEntries(t *testing.T, bundle string, s *signedFake) {
	t.Helper()
	f, err := os.Open(bundle)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	layout, err := ocilayout.Read(f, nil)
	if err != nil {
		t.Fatal(err)
	}
	entries := map[digest.Digest]oci.Descriptor{}
	for _, e := range layout.Index {
		entries[e.Digest] = e
	}
	if len(entries) != 4 || entries[s.app.Dgst].Annotations[ocilayout.AnnotationRefName] != "team/app:v1" {
		t.Fatalf("index.json: %+v; want team/app:v1 and its 3 referrers", layout.Index)
	}
	for _, a := range []artifact{s.sig, s.sbom, s.sbomSig} {
		e := entries[a.Digest]
		if e.ArtifactType != a.ArtifactType || e.Annotations["org.example.seed"] == "" || e.Annotations[ocilayout.AnnotationRefName] != "" ||
			e.Annotations[ocilayout.AnnotationImageName] != "" || e.Size != a.Size || e.MediaType != a.MediaType {
			t.Errorf("index.json entry of referrer %s: %+v", a.Digest, e)
		}
	}
}

// cache pin --with-referrers pins the referrers with the image: a purge
// of everything unpinned keeps them, on disk; unpinning the image unpins
// them, and the next purge takes them.
func TestPinWithReferrersKeepsThem(t *testing.T) {
	t.Parallel()
	s := newSignedFake(t)
	m := startMirror(t, s.fake, mirrorOpts{env: patient()})
	env := map[string]string{"CACHE_DIR": m.Dir}
	code, stdout, errOut := cli(t, env, "cache", "pin", "--with-referrers", "--json", "team/app:v1")
	if code != exitOK {
		t.Fatalf("pin: exit %d\n%s", code, errOut)
	}
	var pin admin.PinReport
	referrers := digestsOf(s.sig, s.sbom, s.sbomSig)
	if err := json.Unmarshal([]byte(stdout), &pin); err != nil || pin.Digest != s.app.Dgst || !slices.Equal(sortedCopy(pin.Referrers), referrers) {
		t.Fatalf("pin --json: %v\n%s", err, stdout)
	}
	if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "team/other:v1"); code != exitOK {
		t.Fatalf("warm: exit %d\n%s", code, errOut)
	}
	kept := append(contentOf(s.app), artifactContent(s.sig, s.sbom, s.sbomSig)...)
	all := append(slices.Clone(kept), contentOf(s.other)...)
	slices.Sort(all)
	all = slices.Compact(all) // the artifacts share their empty config
	// A file lands on disk a moment before its index record: wait for
	// the records, which purge goes by.
	testwait.Until(t, "every entry indexed", func() bool { return len(listing(t, env).Entries) == len(all) })

	if code, _, errOut := cli(t, env, "cache", "purge", "--all"); code != exitOK {
		t.Fatalf("purge --all: exit %d\n%s", code, errOut)
	}
	for _, d := range kept {
		if !m.stored(d) {
			t.Errorf("pinned %s was purged", d)
		}
	}
	for _, d := range contentOf(s.other) {
		if m.stored(d) {
			t.Errorf("unpinned %s was kept", d)
		}
	}
	l := listing(t, env)
	var named []digest.Digest
	for _, p := range l.Pins {
		if slices.Equal(p.Names, []string{admin.ReferrerPinName("team/app:v1")}) {
			named = append(named, p.Digest)
		}
	}
	if len(l.Pins) != 4 || !slices.Equal(sortedCopy(named), referrers) {
		t.Errorf("pins %+v; want the image and its 3 referrers, named as its referrers", l.Pins)
	}

	code, stdout, errOut = cli(t, env, "cache", "unpin", "--json", "team/app:v1")
	if code != exitOK {
		t.Fatalf("unpin: exit %d\n%s", code, errOut)
	}
	var unpin admin.PinReport
	if err := json.Unmarshal([]byte(stdout), &unpin); err != nil || !slices.Equal(sortedCopy(unpin.Referrers), referrers) {
		t.Errorf("unpin --json: %v\n%s", err, stdout)
	}
	if l := listing(t, env); len(l.Pins) != 0 {
		t.Errorf("after unpin: pins %+v", l.Pins)
	}
	if code, _, errOut := cli(t, env, "cache", "purge", "--all"); code != exitOK {
		t.Fatalf("purge --all: exit %d\n%s", code, errOut)
	}
	for _, d := range kept {
		if m.stored(d) {
			t.Errorf("%s kept after unpin and purge", d)
		}
	}

	// A stopped mirror cannot list referrers: the flag is refused, named.
	m.Stop()
	code, _, errOut = cli(t, env, "cache", "pin", "--with-referrers", "team/app:v1")
	if code != exitFail || !strings.Contains(errOut, "only a running mirror can") {
		t.Errorf("pin --with-referrers on a stopped mirror: exit %d\n%s", code, errOut)
	}
}

// Eviction under pressure takes every unpinned image, one after the
// other, and never the referrers pinned with an image.
func TestPinWithReferrersSurvivesEviction(t *testing.T) {
	t.Parallel()
	const budget = 100 << 10
	s := newSignedFake(t)
	var big [][]digest.Digest // manifest, then blobs
	for i := range 3 {
		img, err := random.Image(60<<10, 1) // one beside the pinned image fits, not two
		if err != nil {
			t.Fatal(err)
		}
		m, blobs := putImage(t, s.fake, "team/big", fmt.Sprint("v", i), img)
		big = append(big, append([]digest.Digest{m}, blobs...))
	}
	m := startMirror(t, s.fake, mirrorOpts{maxSize: "100k", env: patient()})
	env := map[string]string{"CACHE_DIR": m.Dir}
	if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, "team/other:v1"); code != exitOK {
		t.Fatalf("warm: exit %d\n%s", code, errOut)
	}
	waitStored(t, m, contentOf(s.other)...)
	if code, _, errOut := cli(t, env, "cache", "pin", "--with-referrers", "team/app:v1"); code != exitOK {
		t.Fatalf("pin: exit %d\n%s", code, errOut)
	}
	for i := range big {
		if code, _, errOut := cli(t, nil, "warm", "--mirror", m.URL, fmt.Sprint("team/big:v", i)); code != exitOK {
			t.Fatalf("warm team/big:v%d: exit %d\n%s", i, code, errOut)
		}
		waitStored(t, m, big[i]...)
	}
	for _, d := range append(contentOf(s.app), artifactContent(s.sig, s.sbom, s.sbomSig)...) {
		if !m.stored(d) {
			t.Errorf("pinned %s evicted", d)
		}
	}
	for _, d := range slices.Concat(contentOf(s.other), big[0], big[1]) {
		if m.stored(d) {
			t.Errorf("unpinned %s survived", d)
		}
	}
	if got := m.storedBytes(t); got > budget {
		t.Errorf("%d bytes stored, over the %d byte budget", got, budget)
	}
}
