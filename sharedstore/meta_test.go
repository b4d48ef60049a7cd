package sharedstore

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/opencontainers/go-digest"
)

var (
	testRepo    = Repo{Registry: "123456789012.dkr.ecr.eu-west-1.amazonaws.com", Name: "team/app"}
	testDigest  = digest.FromString("manifest")
	testChecked = time.Date(2026, 12, 5, 10, 0, 0, 123, time.UTC)
)

// putRaw writes data under key as another writer of the bucket would.
func putRaw(t *testing.T, s *Store, key string, data []byte) {
	t.Helper()
	_, err := s.client.PutObject(context.Background(), &s3.PutObjectInput{Bucket: &s.bucket, Key: &key,
		Body: bytes.NewReader(data), ContentLength: aws.Int64(int64(len(data)))})
	if err != nil {
		t.Fatalf("writing %s: %v", key, err)
	}
}

func TestLinksAreWrittenOnceAndReadBackByRepository(t *testing.T) {
	s, srv, obs := newStore(t)
	ctx := context.Background()
	if ok, err := s.Linked(ctx, testRepo, testDigest); err != nil || ok {
		t.Fatalf("Linked before PutLink = %v, %v; want false, nil", ok, err)
	}
	for range 2 {
		if err := s.PutLink(ctx, testRepo, testDigest); err != nil {
			t.Fatal(err)
		}
	}
	if ok, err := s.Linked(ctx, testRepo, testDigest); err != nil || !ok {
		t.Fatalf("Linked after PutLink = %v, %v; want true, nil", ok, err)
	}
	other := Repo{Registry: testRepo.Registry, Name: "team/other"}
	if ok, err := s.Linked(ctx, other, testDigest); err != nil || ok {
		t.Fatalf("another repository: Linked = %v, %v; want false, nil", ok, err)
	}
	want := "mirror/links/" + testRepo.Registry + "/team/app/sha256/" + testDigest.Encoded()
	if keys := srv.Keys(t, "tier", "mirror/links/"); len(keys) != 1 || keys[0] != want {
		t.Errorf("objects %v, want [%s]", keys, want)
	}
	if ok, exists := obs.get(OpMetaPut, OutcomeOK), obs.get(OpMetaPut, OutcomeExists); ok != 1 || exists != 1 {
		t.Errorf("link writes: %d ok, %d exists; want 1 and 1 (the second a conditional create that found it)", ok, exists)
	}
	if n := obs.get(OpPut, OutcomeOK) + obs.get(OpGet, OutcomeOK); n != 0 {
		t.Errorf("%d metadata requests counted as blob requests", n)
	}
}

func TestTagRecordsRoundTripPerAccept(t *testing.T) {
	s, srv, _ := newStore(t)
	ctx := context.Background()
	oci := TagRecord{Digest: testDigest, MediaType: "application/vnd.oci.image.index.v1+json", Size: 512, Checked: testChecked}
	docker := TagRecord{Digest: digest.FromString("docker"), MediaType: "application/vnd.docker.distribution.manifest.v2+json", Size: 400, Checked: testChecked}
	if _, err := s.GetTag(ctx, testRepo, "v1", "*/*"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTag before PutTag: %v, want ErrNotFound", err)
	}
	if err := s.PutTag(ctx, testRepo, "v1", "*/*", oci); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(ctx, testRepo, "v1", docker.MediaType, docker); err != nil {
		t.Fatal(err)
	}
	for accept, want := range map[string]TagRecord{"*/*": oci, docker.MediaType: docker} {
		got, err := s.GetTag(ctx, testRepo, "v1", accept)
		if err != nil || got.Digest != want.Digest || got.MediaType != want.MediaType || got.Size != want.Size || !got.Checked.Equal(want.Checked) {
			t.Errorf("GetTag(%q) = %+v, %v; want %+v", accept, got, err, want)
		}
	}
	key, _ := s.TagKey(testRepo, "v1", "*/*")
	if !strings.HasPrefix(key, "mirror/tags/"+testRepo.Registry+"/team/app/v1/") || len(key) != len("mirror/tags/"+testRepo.Registry+"/team/app/v1/")+64 {
		t.Errorf("tag key %q", key)
	}
	if n := len(srv.Keys(t, "tier", "mirror/tags/")); n != 2 {
		t.Errorf("%d tag objects, want one per Accept: 2", n)
	}
}

func TestReferrersRecordsRoundTripPerFilterAndPage(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	k := ReferrersKey{Repo: testRepo, Subject: testDigest, ArtifactType: "application/vnd.dev.cosign.artifact.sig.v1+json"}
	rec := ReferrersRecord{Body: []byte(`{"schemaVersion":2,"manifests":[]}`), FiltersApplied: "artifactType", Checked: testChecked}
	if err := s.PutReferrers(ctx, k, rec); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetReferrers(ctx, k)
	if err != nil || !bytes.Equal(got.Body, rec.Body) || got.FiltersApplied != rec.FiltersApplied || !got.Checked.Equal(rec.Checked) {
		t.Fatalf("GetReferrers = %+v, %v; want %+v", got, err, rec)
	}
	for _, other := range []ReferrersKey{{Repo: testRepo, Subject: testDigest}, {Repo: testRepo, Subject: testDigest, ArtifactType: k.ArtifactType, Page: "last=x"}} {
		if _, err := s.GetReferrers(ctx, other); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetReferrers(%+v): %v, want ErrNotFound", other, err)
		}
	}
}

// No name makes a key outside its place: each is checked against the
// grammar before any request.
func TestMetadataKeysRefuseMalformedNames(t *testing.T) {
	s, err := New(Options{Bucket: "b", Prefix: "p"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		repo Repo
		tag  string
		dgst digest.Digest
	}{
		{"no registry", Repo{Name: "app"}, "v1", testDigest},
		{"registry with a slash", Repo{Registry: "a/b", Name: "app"}, "v1", testDigest},
		{"registry ..", Repo{Registry: "..", Name: "app"}, "v1", testDigest},
		{"repository ..", Repo{Registry: "r", Name: "team/../x"}, "v1", testDigest},
		{"repository with a leading slash", Repo{Registry: "r", Name: "/app"}, "v1", testDigest},
		{"repository with an empty component", Repo{Registry: "r", Name: "team//app"}, "v1", testDigest},
		{"repository in capitals", Repo{Registry: "r", Name: "App"}, "v1", testDigest},
		{"tag with a slash", Repo{Registry: "r", Name: "app"}, "a/b", testDigest},
		{"tag ..", Repo{Registry: "r", Name: "app"}, "..", testDigest},
		{"empty tag", Repo{Registry: "r", Name: "app"}, "", testDigest},
		{"bad digest", Repo{Registry: "r", Name: "app"}, "v1", "sha256:../../x"},
		{"sha512 digest", Repo{Registry: "r", Name: "app"}, "v1", digest.SHA512.FromString("x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, lerr := s.LinkKey(tc.repo, tc.dgst)
			_, terr := s.TagKey(tc.repo, tc.tag, "*/*")
			_, rerr := s.ReferrersKey(ReferrersKey{Repo: tc.repo, Subject: tc.dgst})
			if lerr == nil && terr == nil && rerr == nil {
				t.Fatalf("%+v %q %q made keys", tc.repo, tc.tag, tc.dgst)
			}
		})
	}
	for _, r := range []Repo{{"127.0.0.1:5000", "app"}, {"[::1]:5000", "team/app"}, {testRepo.Registry, "a.b_c__d-e/f"}} {
		if _, err := s.TagKey(r, "v1.0_rc-1", "*/*"); err != nil {
			t.Errorf("valid %+v: %v", r, err)
		}
	}
}

// What the bucket holds is untrusted: a record that is not one this
// mirror writes is refused with ErrMalformed, never returned.
func TestMalformedTagRecordsAreRefused(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	key, err := s.TagKey(testRepo, "v1", "*/*")
	if err != nil {
		t.Fatal(err)
	}
	good := `{"digest":"` + testDigest.String() + `","mediaType":"application/vnd.oci.image.manifest.v1+json","size":5,"checked":"2026-12-05T10:00:00Z"}`
	for _, tc := range []struct{ name, body string }{
		{"not JSON", "hello"},
		{"null", "null"},
		{"empty", ""},
		{"unknown field", strings.TrimSuffix(good, "}") + `,"extra":1}`},
		{"data after the record", good + `{}`},
		{"bad digest", strings.Replace(good, testDigest.String(), "sha256:1234", 1)},
		{"negative size", strings.Replace(good, `"size":5`, `"size":-5`, 1)},
		{"no time", strings.Replace(good, `,"checked":"2026-12-05T10:00:00Z"`, "", 1)},
		{"media type with a header", strings.Replace(good, `manifest.v1+json"`, `manifest.v1+json\r\nX: y"`, 1)},
		{"over the bound", strings.Replace(good, `"size":5`, `"size":5`+strings.Repeat(" ", maxTagRecordBody), 1)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			putRaw(t, s, key, []byte(tc.body))
			if rec, err := s.GetTag(ctx, testRepo, "v1", "*/*"); !errors.Is(err, ErrMalformed) {
				t.Fatalf("GetTag = %+v, %v; want ErrMalformed", rec, err)
			}
		})
	}
	putRaw(t, s, key, []byte(good))
	if rec, err := s.GetTag(ctx, testRepo, "v1", "*/*"); err != nil || rec.Digest != testDigest || rec.Size != 5 {
		t.Fatalf("the well-formed record: %+v, %v", rec, err)
	}
}

func TestMalformedReferrersRecordsAreRefused(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	k := ReferrersKey{Repo: testRepo, Subject: testDigest}
	key, err := s.ReferrersKey(k)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, body string }{
		{"body not JSON", `{"body":"aGVsbG8=","checked":"2026-12-05T10:00:00Z"}`},
		{"no body", `{"checked":"2026-12-05T10:00:00Z"}`},
		{"no time", `{"body":"e30="}`},
		{"unknown field", `{"body":"e30=","checked":"2026-12-05T10:00:00Z","x":1}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			putRaw(t, s, key, []byte(tc.body))
			if rec, err := s.GetReferrers(ctx, k); !errors.Is(err, ErrMalformed) {
				t.Fatalf("GetReferrers = %+v, %v; want ErrMalformed", rec, err)
			}
		})
	}
}

// A record written late (a replica's answer that waited in its queue)
// never replaces a newer one another replica wrote first: with ECR down,
// replicas serve the tag's newest known answer, not the one before it.
func TestAnOlderRecordNeverReplacesANewerOne(t *testing.T) {
	s, _, _ := newStore(t)
	ctx := context.Background()
	newer := TagRecord{Digest: digest.FromString("fixed"), MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 400, Checked: testChecked}
	older := TagRecord{Digest: digest.FromString("before the fix"), MediaType: newer.MediaType, Size: 400, Checked: testChecked.Add(-time.Minute)}
	for _, rec := range []TagRecord{newer, older} {
		if err := s.PutTag(ctx, testRepo, "v1", "*/*", rec); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.GetTag(ctx, testRepo, "v1", "*/*"); err != nil || got.Digest != newer.Digest {
		t.Errorf("tag record %+v, %v; want the newer answer %s", got, err, newer.Digest)
	}
	k := ReferrersKey{Repo: testRepo, Subject: testDigest}
	newRefs := ReferrersRecord{Body: []byte(`{"schemaVersion":2,"manifests":[{"digest":"x"}]}`), Checked: testChecked}
	oldRefs := ReferrersRecord{Body: []byte(`{"schemaVersion":2,"manifests":[]}`), Checked: testChecked.Add(-time.Minute)}
	for _, rec := range []ReferrersRecord{newRefs, oldRefs} {
		if err := s.PutReferrers(ctx, k, rec); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.GetReferrers(ctx, k); err != nil || !bytes.Equal(got.Body, newRefs.Body) {
		t.Errorf("referrers record %s, %v; want the newer answer %s", got.Body, err, newRefs.Body)
	}
	// A newer answer replaces the record, as always.
	newest := newer
	newest.Digest, newest.Checked = digest.FromString("newest"), testChecked.Add(time.Minute)
	if err := s.PutTag(ctx, testRepo, "v1", "*/*", newest); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetTag(ctx, testRepo, "v1", "*/*"); err != nil || got.Digest != newest.Digest {
		t.Errorf("tag record %+v, %v; want the newest answer %s", got, err, newest.Digest)
	}
}
