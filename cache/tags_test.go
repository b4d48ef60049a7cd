package cache

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

const (
	ociManifest    = "application/vnd.oci.image.manifest.v1+json"
	dockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	ociIndex       = "application/vnd.oci.image.index.v1+json"
)

func tagRecord(seed uint64) TagRecord {
	data, dgst := blob(seed, 100+int(seed))
	return TagRecord{Digest: dgst, MediaType: ociManifest, Size: int64(len(data)),
		Checked: time.Unix(1_700_000_000, int64(seed)*1000)}
}

func mustGetTag(t *testing.T, s *Store, repo, tag, accept string, want TagRecord) {
	t.Helper()
	got, err := s.GetTag(repo, tag, accept)
	if err != nil {
		t.Fatalf("GetTag(%s, %s, %q): %v", repo, tag, accept, err)
	}
	if !got.Checked.Equal(want.Checked) || got.Digest != want.Digest || got.MediaType != want.MediaType || got.Size != want.Size {
		t.Fatalf("GetTag(%s, %s, %q) = %+v, want %+v", repo, tag, accept, got, want)
	}
}

// A record reads back as written, per repository, tag and Accept; a new
// one replaces it; what was never recorded is ErrNotFound.
func TestPutGetTag(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	accept := ociManifest + ", " + dockerManifest
	a, b := tagRecord(1), tagRecord(2)

	if _, err := s.GetTag("team/app", "v1", accept); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTag before any PutTag: %v, want ErrNotFound", err)
	}
	for _, r := range []struct {
		repo, tag, accept string
		rec               TagRecord
	}{
		{"team/app", "v1", accept, a},
		{"team/app", "v2", accept, b},
		{"team/app", "v1", ociIndex, b},
		{"team", "app", accept, b}, // a repository's prefix is not confused with it
		{"team/app/v1", "x", accept, b},
	} {
		if err := s.PutTag(r.repo, r.tag, r.accept, r.rec); err != nil {
			t.Fatalf("PutTag(%s:%s): %v", r.repo, r.tag, err)
		}
	}
	mustGetTag(t, s, "team/app", "v1", accept, a)
	mustGetTag(t, s, "team/app", "v2", accept, b)
	mustGetTag(t, s, "team/app", "v1", ociIndex, b)
	for _, miss := range [][3]string{
		{"team/app", "v3", accept},
		{"team/app", "v1", dockerManifest},
		{"other/app", "v1", accept},
		{"team/app", "v1", ""},
	} {
		if got, err := s.GetTag(miss[0], miss[1], miss[2]); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetTag(%q) = %+v, %v; want ErrNotFound", miss, got, err)
		}
	}

	c := tagRecord(3)
	c.MediaType = ""
	if err := s.PutTag("team/app", "v1", accept, c); err != nil {
		t.Fatal(err)
	}
	mustGetTag(t, s, "team/app", "v1", accept, c)
}

// Accept values naming the same media types, in any order, case, spacing,
// with parameters or repeats, share one record.
func TestTagAcceptNormalised(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name, a, b string
		same       bool
	}{
		{name: "order", a: ociManifest + "," + dockerManifest, b: dockerManifest + "," + ociManifest, same: true},
		{name: "spaces", a: ociManifest + "," + dockerManifest, b: "  " + ociManifest + " ,\t" + dockerManifest + " ", same: true},
		{name: "parameters", a: ociManifest + "," + dockerManifest, b: ociManifest + ";q=0.9, " + dockerManifest + "; q=1", same: true},
		{name: "duplicates", a: ociManifest, b: ociManifest + "," + ociManifest, same: true},
		{name: "case", a: ociManifest, b: strings.ToUpper(ociManifest), same: true},
		{name: "empty parts", a: ociManifest, b: "," + ociManifest + ",,", same: true},
		{name: "subset", a: ociManifest + "," + dockerManifest, b: ociManifest, same: false},
		{name: "other type", a: ociManifest, b: ociIndex, same: false},
		{name: "none vs one", a: "", b: ociManifest, same: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := normalizeAccept(tt.a) == normalizeAccept(tt.b); got != tt.same {
				t.Errorf("normalizeAccept(%q) = %q, normalizeAccept(%q) = %q; same = %v, want %v",
					tt.a, normalizeAccept(tt.a), tt.b, normalizeAccept(tt.b), got, tt.same)
			}
		})
	}

	s := openStore(t, t.TempDir(), 1<<20)
	rec := tagRecord(4)
	if err := s.PutTag("team/app", "v1", "application/vnd.oci.image.manifest.v1+json;q=0.5, "+dockerManifest, rec); err != nil {
		t.Fatal(err)
	}
	mustGetTag(t, s, "team/app", "v1", dockerManifest+","+ociManifest, rec)
}

// Records survive a clean restart: Close lands the writes PutTag did not
// wait for, and the reconciliation at Open leaves them alone.
func TestTagRecordsSurviveReopen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxSize: 1 << 20, AccessFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if err := s.PutTag("team/app", fmt.Sprintf("v%d", i), ociManifest, tagRecord(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	// A blob too, so that Open's reconciliation has something to do.
	data, dgst := blob(99, 1000)
	mustPut(t, s, data, dgst)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag("team/app", "late", ociManifest, tagRecord(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("PutTag after Close: %v, want ErrClosed", err)
	}
	if _, err := s.GetTag("team/app", "v1", ociManifest); !errors.Is(err, ErrClosed) {
		t.Errorf("GetTag after Close: %v, want ErrClosed", err)
	}

	s = openStore(t, dir, 1<<20)
	for i := range n {
		mustGetTag(t, s, "team/app", fmt.Sprintf("v%d", i), ociManifest, tagRecord(uint64(i)))
	}
	readEntry(t, s, dgst, data)
	if st := s.Stats(); st.Entries != 1 || st.Bytes != int64(len(data)) {
		t.Errorf("after reopen the store counts %d entries of %d bytes; tag records must not count", st.Entries, st.Bytes)
	}
}

func TestPutTagRejects(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	good := tagRecord(5)
	tests := []struct {
		name, repo, tag string
		rec             TagRecord
	}{
		{name: "empty repository", repo: "", tag: "v1", rec: good},
		{name: "empty tag", repo: "team/app", tag: "", rec: good},
		{name: "slash in tag", repo: "team/app", tag: "v1/x", rec: good},
		{name: "no digest", repo: "team/app", tag: "v1", rec: TagRecord{Size: 1}},
		{name: "sha512", repo: "team/app", tag: "v1", rec: TagRecord{Digest: digest.SHA512.FromString("x")}},
		{name: "negative size", repo: "team/app", tag: "v1", rec: TagRecord{Digest: good.Digest, Size: -1}},
		{name: "huge media type", repo: "team/app", tag: "v1", rec: TagRecord{Digest: good.Digest, MediaType: strings.Repeat("a", maxMediaTypeLen+1)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if err := s.PutTag(tt.repo, tt.tag, ociManifest, tt.rec); err == nil {
				t.Errorf("PutTag(%q, %q, %+v) succeeded", tt.repo, tt.tag, tt.rec)
			}
		})
	}
}

func TestDecodeTagRecordRejects(t *testing.T) {
	t.Parallel()
	good := encodeTagRecord(tagRecord(6))
	if _, err := decodeTagRecord(good); err != nil {
		t.Fatalf("decode of a good record: %v", err)
	}
	badVersion := append([]byte(nil), good...)
	badVersion[0] = 2
	badDigest := append([]byte(nil), good...)
	badDigest[tagRecordHeaderLen+10] = 'x'
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short header":   good[:tagRecordHeaderLen-1],
		"short digest":   good[:tagRecordHeaderLen+5],
		"version":        badVersion,
		"invalid digest": badDigest,
	} {
		if rec, err := decodeTagRecord(b); err == nil {
			t.Errorf("%s: decoded %+v", name, rec)
		}
	}
}
