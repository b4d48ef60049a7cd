package cache

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
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
	got, err := s.GetTag(Repo{Name: repo}, tag, accept)
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

	if _, err := s.GetTag(Repo{Name: "team/app"}, "v1", accept); !errors.Is(err, ErrNotFound) {
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
		if err := s.PutTag(Repo{Name: r.repo}, r.tag, r.accept, r.rec); err != nil {
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
		if got, err := s.GetTag(Repo{Name: miss[0]}, miss[1], miss[2]); !errors.Is(err, ErrNotFound) {
			t.Errorf("GetTag(%q) = %+v, %v; want ErrNotFound", miss, got, err)
		}
	}

	c := tagRecord(3)
	c.MediaType = ""
	if err := s.PutTag(Repo{Name: "team/app"}, "v1", accept, c); err != nil {
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
		{name: "unknown types dropped", a: ociManifest, b: "text/html, " + ociManifest + ", application/x-whatever;v=2", same: true},
		{name: "wildcard beside manifest types", a: ociManifest + "," + ociIndex, b: ociIndex + ", " + ociManifest + ", */*;q=0.8", same: true},
		{name: "none is any", a: "", b: AnyAccept, same: true},
		{name: "only unknown types is any", a: "text/html, image/*", b: AnyAccept, same: true},
		{name: "schema1 kept", a: ociManifest, b: ociManifest + ",application/vnd.docker.distribution.manifest.v1+prettyjws", same: false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := NormalizeAccept(tt.a) == NormalizeAccept(tt.b); got != tt.same {
				t.Errorf("NormalizeAccept(%q) = %q, NormalizeAccept(%q) = %q; same = %v, want %v",
					tt.a, NormalizeAccept(tt.a), tt.b, NormalizeAccept(tt.b), got, tt.same)
			}
		})
	}

	s := openStore(t, t.TempDir(), 1<<20)
	rec := tagRecord(4)
	if err := s.PutTag(Repo{Name: "team/app"}, "v1", "application/vnd.oci.image.manifest.v1+json;q=0.5, "+dockerManifest, rec); err != nil {
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
		if err := s.PutTag(Repo{Name: "team/app"}, fmt.Sprintf("v%d", i), ociManifest, tagRecord(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	// A blob too, so that Open's reconciliation has something to do.
	data, dgst := blob(99, 1000)
	mustPut(t, s, data, dgst)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(Repo{Name: "team/app"}, "late", ociManifest, tagRecord(1)); !errors.Is(err, ErrClosed) {
		t.Errorf("PutTag after Close: %v, want ErrClosed", err)
	}
	if _, err := s.GetTag(Repo{Name: "team/app"}, "v1", ociManifest); !errors.Is(err, ErrClosed) {
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
			if err := s.PutTag(Repo{Name: tt.repo}, tt.tag, ociManifest, tt.rec); err == nil {
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

// TestTagsListAndDelete: Tags lists every record, one per tag and
// Accept, sorted; DeleteTags removes every record of one tag and no
// other, even of a repository whose name extends it; DeleteAllTags
// removes the rest; deletions are durable.
func TestTagsListAndDelete(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxSize: 1 << 20, AccessFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	puts := []struct {
		repo, tag, accept string
		seed              uint64
	}{
		{"team/app", "v1", ociManifest, 1},
		{"team/app", "v1", dockerManifest, 3}, // checked later: listed first
		{"team/app", "v1", AnyAccept, 2},
		{"team/app", "v2", ociManifest, 4},
		{"team/app/v1", "x", ociManifest, 5}, // its key starts like team/app:v1's
		{"team", "app", ociManifest, 6},
		{"a", "latest", "", 7},
	}
	for _, p := range puts {
		if err := s.PutTag(Repo{Name: p.repo}, p.tag, p.accept, tagRecord(p.seed)); err != nil {
			t.Fatal(err)
		}
	}
	type row struct {
		repo, tag string
		seed      uint64
	}
	list := func(s *Store) []row {
		t.Helper()
		tags, err := s.Tags()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]row, len(tags))
		for i, ti := range tags {
			seed := uint64(ti.Checked.Nanosecond() / 1000)
			want := tagRecord(seed)
			if ti.Digest != want.Digest || ti.Size != want.Size || ti.MediaType != want.MediaType {
				t.Fatalf("Tags()[%d] = %+v, want the fields of %+v", i, ti, want)
			}
			out[i] = row{ti.Repo, ti.Tag, seed}
		}
		return out
	}
	want := []row{
		{"a", "latest", 7},
		{"team", "app", 6},
		{"team/app", "v1", 3}, {"team/app", "v1", 2}, {"team/app", "v1", 1},
		{"team/app", "v2", 4},
		{"team/app/v1", "x", 5},
	}
	if got := list(s); !slices.Equal(got, want) {
		t.Fatalf("Tags = %v, want %v", got, want)
	}

	tests := []struct {
		repo, tag string
		n         int
	}{
		{"team/app", "v1", 3},
		{"team/app", "v1", 0}, // gone already
		{"team/app", "v3", 0},
		{"team/app/v1", "x", 1},
	}
	for _, tc := range tests {
		if n, err := s.DeleteTags(Repo{Name: tc.repo}, tc.tag); err != nil || n != tc.n {
			t.Fatalf("DeleteTags(%s, %s) = %d, %v; want %d", tc.repo, tc.tag, n, err, tc.n)
		}
	}
	for _, bad := range [][2]string{{"", "v1"}, {"team/app", ""}, {"team/app", "v1/x"}} {
		if _, err := s.DeleteTags(Repo{Name: bad[0]}, bad[1]); err == nil {
			t.Errorf("DeleteTags(%q, %q) succeeded", bad[0], bad[1])
		}
	}
	if _, err := s.GetTag(Repo{Name: "team/app"}, "v1", AnyAccept); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTag after DeleteTags: %v, want ErrNotFound", err)
	}
	want = []row{{"a", "latest", 7}, {"team", "app", 6}, {"team/app", "v2", 4}}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, 1<<20)
	if got := list(s); !slices.Equal(got, want) {
		t.Fatalf("Tags after DeleteTags and a restart = %v, want %v", got, want)
	}
	if n, err := s.DeleteAllTags(); err != nil || n != 3 {
		t.Fatalf("DeleteAllTags = %d, %v; want 3", n, err)
	}
	if got := list(s); len(got) != 0 {
		t.Fatalf("Tags after DeleteAllTags = %v", got)
	}
	if n, err := s.DeleteAllTags(); err != nil || n != 0 {
		t.Fatalf("DeleteAllTags on none = %d, %v", n, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Tags(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Tags after Close: %v, want ErrClosed", err)
	}
	if _, err := s.DeleteAllTags(); !errors.Is(err, ErrClosed) {
		t.Fatalf("DeleteAllTags after Close: %v, want ErrClosed", err)
	}
}

// TestAnyAccept: the import's record ("*/*") is its own record, apart
// from any one media type, and shared by clients naming no manifest type.
func TestAnyAccept(t *testing.T) {
	t.Parallel()
	if NormalizeAccept(AnyAccept) == NormalizeAccept(ociManifest) {
		t.Fatalf("NormalizeAccept(%q) = %q is not distinct", AnyAccept, NormalizeAccept(AnyAccept))
	}
	s := openStore(t, t.TempDir(), 1<<20)
	imported, proxied := tagRecord(10), tagRecord(11)
	if err := s.PutTag(Repo{Name: "team/app"}, "v1", AnyAccept, imported); err != nil {
		t.Fatal(err)
	}
	if err := s.PutTag(Repo{Name: "team/app"}, "v1", ociManifest, proxied); err != nil {
		t.Fatal(err)
	}
	mustGetTag(t, s, "team/app", "v1", AnyAccept, imported)
	mustGetTag(t, s, "team/app", "v1", " */*; q=0.5", imported)
	mustGetTag(t, s, "team/app", "v1", "", imported)
	mustGetTag(t, s, "team/app", "v1", ociManifest, proxied)
}

// A tag keeps at most maxTagRecords records, however many distinct
// Accept values it is asked with: a put past the bound drops the least
// recently checked, keeps the newest, and replacing a record drops none.
func TestTagRecordsBounded(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	// Distinct sets of manifest types, so distinct records.
	types := []string{ociManifest, dockerManifest, ociIndex,
		"application/vnd.docker.distribution.manifest.list.v2+json",
		"application/vnd.docker.distribution.manifest.v1+json"}
	accept := func(mask int) string {
		var parts []string
		for bit, mt := range types {
			if mask&(1<<bit) != 0 {
				parts = append(parts, mt)
			}
		}
		return strings.Join(parts, ",")
	}
	const n = 3 * maxTagRecords
	for i := 1; i <= n; i++ {
		if err := s.PutTag(Repo{Name: "team/app"}, "v1", accept(i), tagRecord(uint64(i))); err != nil {
			t.Fatal(err)
		}
	}
	// Another tag and a repository extending the name are not counted.
	for _, r := range [][2]string{{"team/app", "v2"}, {"team/app/v1", "x"}} {
		if err := s.PutTag(Repo{Name: r[0]}, r[1], ociManifest, tagRecord(100)); err != nil {
			t.Fatal(err)
		}
	}
	count := func() int {
		t.Helper()
		tags, err := s.Tags()
		if err != nil {
			t.Fatal(err)
		}
		c := 0
		for _, ti := range tags {
			if ti.Repo == "team/app" && ti.Tag == "v1" {
				c++
			}
		}
		return c
	}
	if got := count(); got != maxTagRecords {
		t.Fatalf("%d distinct Accept values left %d records, want %d", n, got, maxTagRecords)
	}
	for i := 1; i <= n; i++ {
		_, err := s.GetTag(Repo{Name: "team/app"}, "v1", accept(i))
		if kept := i > n-maxTagRecords; kept != (err == nil) {
			t.Errorf("record %d of %d: GetTag error %v, want kept = %v", i, n, err, kept)
		}
	}
	// Replacing a kept record keeps all the others.
	newer := tagRecord(200)
	if err := s.PutTag(Repo{Name: "team/app"}, "v1", accept(n-maxTagRecords+1), newer); err != nil {
		t.Fatal(err)
	}
	if got := count(); got != maxTagRecords {
		t.Fatalf("after a replacement %d records, want %d", got, maxTagRecords)
	}
	mustGetTag(t, s, "team/app", "v1", accept(n-maxTagRecords+1), newer)
	mustGetTag(t, s, "team/app", "v1", accept(n-maxTagRecords+2), tagRecord(uint64(n-maxTagRecords+2)))
	mustGetTag(t, s, "team/app", "v2", ociManifest, tagRecord(100))
	mustGetTag(t, s, "team/app/v1", "x", ociManifest, tagRecord(100))
}

// A record written by a version that kept unknown types in the key is
// still found for its Accept, and is replaced, not duplicated, when that
// Accept is recorded again.
func TestLegacyTagRecordRead(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	accept := ociManifest + ", " + ociIndex + ", */*"
	legacy := hashedTagKey(Repo{Name: "team/app"}, "v1", "*/*,"+ociIndex+","+ociManifest)
	old := tagRecord(1)
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(legacy, encodeTagRecord(old)) }); err != nil {
		t.Fatal(err)
	}
	if k, _ := tagKey(Repo{Name: "team/app"}, "v1", accept); string(k) == string(legacy) {
		t.Fatal("the test's Accept has the same key either way")
	}
	mustGetTag(t, s, "team/app", "v1", accept, old)
	mustGetTag(t, s, "team/app", "v1", "*/*;q=0.1,"+ociIndex+","+ociManifest, old)

	newer := tagRecord(2)
	if err := s.PutTag(Repo{Name: "team/app"}, "v1", accept, newer); err != nil {
		t.Fatal(err)
	}
	mustGetTag(t, s, "team/app", "v1", accept, newer)
	mustGetTag(t, s, "team/app", "v1", ociIndex+","+ociManifest, newer)
	tags, err := s.Tags()
	if err != nil {
		t.Fatal(err)
	}
	if len(tags) != 1 {
		t.Fatalf("after the new record, Tags = %+v; want the new record alone", tags)
	}
}

func TestParseTagKey(t *testing.T) {
	t.Parallel()
	h := strings.Repeat("ab", 32)
	tests := []struct {
		key, registry, repo, tag string
		ok                       bool
	}{
		{key: "tag/team/app/v1/" + h, repo: "team/app", tag: "v1", ok: true},
		{key: "tag@ghcr.io/team/app/v1/" + h, registry: "ghcr.io", repo: "team/app", tag: "v1", ok: true},
		{key: "tag@127.0.0.1:5000/app/v1/" + h, registry: "127.0.0.1:5000", repo: "app", tag: "v1", ok: true},
		{key: "tag@/app/v1/" + h},    // empty registry
		{key: "tag@ghcr.io/v1/" + h}, // no repository
		{key: "tag/a/b/c/d/latest/" + h, repo: "a/b/c/d", tag: "latest", ok: true},
		{key: "tag/app/v1/" + h, repo: "app", tag: "v1", ok: true},
		{key: "tag/v1/" + h},                      // no repository
		{key: "tag//v1/" + h},                     // empty repository
		{key: "tag/app//" + h},                    // empty tag
		{key: "tag/app/v1/" + h[:62]},             // short hash
		{key: "tag/app/v1/" + strings.ToUpper(h)}, // not lowercase hex
		{key: "blob/app/v1/" + h},
		{key: "tag/app/v1"},
	}
	for _, tc := range tests {
		repo, tag, ok := parseTagKey(tc.key)
		if ok != tc.ok || ok && (repo != Repo{Registry: tc.registry, Name: tc.repo} || tag != tc.tag) {
			t.Errorf("parseTagKey(%q) = %+v, %q, %v; want %q %q, %q, %v", tc.key, repo, tag, ok, tc.registry, tc.repo, tc.tag, tc.ok)
		}
	}
	// Every key tagKey builds parses back.
	for _, r := range []struct {
		repo Repo
		tag  string
	}{{Repo{Name: "team/app"}, "v1"}, {Repo{Name: "x"}, "y"}, {Repo{Name: "a/b/c"}, "1.0-rc"}, {Repo{Registry: "ghcr.io", Name: "a/b"}, "v1"}} {
		key, err := tagKey(r.repo, r.tag, ociManifest)
		if err != nil {
			t.Fatal(err)
		}
		if repo, tag, ok := parseTagKey(string(key)); !ok || repo != r.repo || tag != r.tag {
			t.Errorf("parseTagKey(tagKey(%+v, %q)) = %+v, %q, %v", r.repo, r.tag, repo, tag, ok)
		}
	}
}

// The records of one repo:tag are kept apart per upstream registry, and
// the main upstream's records written without a host (older versions,
// an import into a stopped mirror) stay apart from them: listed,
// deleted and bounded per registry.
func TestTagRecordsAreKeptPerRegistry(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	repos := []Repo{{Name: "team/app"}, {Registry: "a.example", Name: "team/app"}, {Registry: "127.0.0.1:5000", Name: "team/app"}}
	for i, r := range repos {
		if err := s.PutTag(r, "v1", ociManifest, tagRecord(uint64(i+1))); err != nil {
			t.Fatalf("PutTag(%s:v1): %v", r, err)
		}
	}
	for i, r := range repos {
		got, err := s.GetTag(r, "v1", ociManifest)
		if err != nil || got.Digest != tagRecord(uint64(i+1)).Digest {
			t.Fatalf("GetTag(%s:v1) = %+v, %v; want the record put for it", r, got, err)
		}
	}
	if _, err := s.GetTag(Repo{Registry: "b.example", Name: "team/app"}, "v1", ociManifest); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetTag of a registry that recorded nothing: %v, want ErrNotFound", err)
	}
	tags, err := s.Tags()
	if err != nil {
		t.Fatal(err)
	}
	var listed []string
	for _, ti := range tags {
		listed = append(listed, ti.Registry+"|"+ti.Repo+":"+ti.Tag+"@"+ti.Digest.String())
	}
	want := []string{
		"|team/app:v1@" + tagRecord(1).Digest.String(),
		"127.0.0.1:5000|team/app:v1@" + tagRecord(3).Digest.String(),
		"a.example|team/app:v1@" + tagRecord(2).Digest.String(),
	}
	if !slices.Equal(listed, want) {
		t.Fatalf("Tags = %q, want %q", listed, want)
	}
	if n, err := s.DeleteTags(repos[1], "v1"); err != nil || n != 1 {
		t.Fatalf("DeleteTags(%s:v1) = %d, %v; want 1", repos[1], n, err)
	}
	for i, r := range repos {
		_, err := s.GetTag(r, "v1", ociManifest)
		if gone := errors.Is(err, ErrNotFound); gone != (i == 1) {
			t.Fatalf("after deleting %s's record, GetTag(%s:v1): %v", repos[1], r, err)
		}
	}
	if n, err := s.DeleteAllTags(); err != nil || n != 2 {
		t.Fatalf("DeleteAllTags = %d, %v; want 2 (with and without a host)", n, err)
	}
}
