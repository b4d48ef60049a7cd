package cache

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
)

func referrersIndex(n int) []byte {
	var b strings.Builder
	b.WriteString(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`)
	for i := range n {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, `{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":%q,"size":1}`, digest.FromString(fmt.Sprint(i)))
	}
	b.WriteString("]}")
	return []byte(b.String())
}

// A referrers record is found under exactly its repository (registry
// and name), subject, filter and page, with every field as put, also
// after a restart.
func TestReferrersRecordKeyedByRepoSubjectFilterPage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	subject := digest.FromString("subject")
	key := ReferrersKey{Repo: Repo{Registry: "r.example", Name: "team/app"}, Subject: subject,
		ArtifactType: "application/vnd.dev.cosign.artifact.sig.v1+json", Page: "last=x&n=2"}
	rec := ReferrersRecord{Body: referrersIndex(2), FiltersApplied: "artifactType", NextQuery: "last=y&n=2",
		Fallback: true, Checked: time.Unix(0, 1_700_000_000_123_456_789)}
	if err := s.PutReferrers(key, rec); err != nil {
		t.Fatal(err)
	}
	others := map[string]ReferrersKey{}
	for name, change := range map[string]func(*ReferrersKey){
		"another registry":                func(k *ReferrersKey) { k.Repo.Registry = "other.example" },
		"the main upstream":               func(k *ReferrersKey) { k.Repo.Registry = "" },
		"a repository under it":           func(k *ReferrersKey) { k.Repo.Name = "team/app/sub" },
		"another subject":                 func(k *ReferrersKey) { k.Subject = digest.FromString("other") },
		"no filter":                       func(k *ReferrersKey) { k.ArtifactType = "" },
		"the first page":                  func(k *ReferrersKey) { k.Page = "" },
		"filter and page swapped":         func(k *ReferrersKey) { k.ArtifactType, k.Page = k.Page, k.ArtifactType },
		"filter and page split elsewhere": func(k *ReferrersKey) { k.ArtifactType += k.Page[:4]; k.Page = k.Page[4:] },
	} {
		k := key
		change(&k)
		others[name] = k
	}
	check := func(s *Store) {
		t.Helper()
		got, err := s.GetReferrers(key)
		if err != nil {
			t.Fatal(err)
		}
		if string(got.Body) != string(rec.Body) || got.FiltersApplied != rec.FiltersApplied || got.NextQuery != rec.NextQuery ||
			got.Fallback != rec.Fallback || !got.Checked.Equal(rec.Checked) {
			t.Fatalf("GetReferrers = %+v, want %+v", got, rec)
		}
		for name, k := range others {
			if _, err := s.GetReferrers(k); !errors.Is(err, ErrNotFound) {
				t.Errorf("%s: GetReferrers = %v, want ErrNotFound", name, err)
			}
		}
	}
	check(s)
	s.Close()
	check(openStore(t, dir, 1<<20))
}

// A subject keeps at most maxReferrersRecords answers per repository,
// the most recently checked; other repositories' records, even under a
// name the first one prefixes, are not counted or dropped.
func TestReferrersRecordsBoundedPerSubject(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	subject := digest.FromString("subject")
	repo, under := Repo{Name: "team/app"}, Repo{Name: "team/app/x"}
	put := func(r Repo, page int, at time.Time) {
		t.Helper()
		k := ReferrersKey{Repo: r, Subject: subject, Page: fmt.Sprintf("last=%d", page)}
		if err := s.PutReferrers(k, ReferrersRecord{Body: referrersIndex(1), Checked: at}); err != nil {
			t.Fatal(err)
		}
	}
	base := time.Unix(1_700_000_000, 0)
	for i := range 3 {
		put(under, i, base)
	}
	const n = 100
	for i := range n {
		put(repo, i, base.Add(time.Duration(i)*time.Second))
	}
	list, err := s.Referrers()
	if err != nil {
		t.Fatal(err)
	}
	pages := map[Repo][]string{}
	for _, info := range list {
		if info.Key.Subject != subject || info.Manifests != 1 {
			t.Fatalf("listed %+v", info)
		}
		pages[info.Key.Repo] = append(pages[info.Key.Repo], info.Key.Page)
	}
	if len(pages[repo]) != maxReferrersRecords || len(pages[under]) != 3 {
		t.Fatalf("records per repository: %d of %s, %d of %s; want %d and 3", len(pages[repo]), repo, len(pages[under]), under, maxReferrersRecords)
	}
	for i, p := range pages[repo] { // most recently checked first
		if want := fmt.Sprintf("last=%d", n-1-i); p != want {
			t.Fatalf("record %d is page %q, want %q (the newest kept)", i, p, want)
		}
	}
}

// What is over a bound is refused, saying so, and nothing is recorded.
func TestReferrersRecordBounds(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	ok := ReferrersKey{Repo: Repo{Name: "team/app"}, Subject: digest.FromString("s")}
	long := strings.Repeat("a", maxReferrersField+1)
	tests := []struct {
		name string
		key  ReferrersKey
		rec  ReferrersRecord
		want error
	}{
		{name: "body over the bound", key: ok, rec: ReferrersRecord{Body: make([]byte, MaxReferrersBody+1)}, want: ErrTooLarge},
		{name: "next query over the bound", key: ok, rec: ReferrersRecord{NextQuery: long}, want: ErrTooLarge},
		{name: "filter over the bound", key: ReferrersKey{Repo: ok.Repo, Subject: ok.Subject, ArtifactType: long}, want: ErrTooLarge},
		{name: "page over the bound", key: ReferrersKey{Repo: ok.Repo, Subject: ok.Subject, Page: long}, want: ErrTooLarge},
		{name: "bad subject", key: ReferrersKey{Repo: ok.Repo, Subject: "sha256:zz"}},
		{name: "no repository", key: ReferrersKey{Subject: ok.Subject}},
	}
	for _, tt := range tests {
		err := s.PutReferrers(tt.key, tt.rec)
		if err == nil || tt.want != nil && !errors.Is(err, tt.want) {
			t.Errorf("%s: PutReferrers = %v, want an error (%v)", tt.name, err, tt.want)
		}
	}
	if err := s.PutReferrers(ok, ReferrersRecord{Body: make([]byte, MaxReferrersBody)}); err != nil {
		t.Fatalf("a body of exactly the bound: %v", err)
	}
	if list, _ := s.Referrers(); len(list) != 1 {
		t.Fatalf("%d records, want only the one within bounds", len(list))
	}
	// The largest record stays under Badger's value threshold, in the
	// LSM tree.
	most := strings.Repeat("a", maxReferrersField)
	largest := encodeReferrersRecord(ReferrersKey{ArtifactType: most, Page: most},
		ReferrersRecord{Body: make([]byte, MaxReferrersBody), FiltersApplied: most, NextQuery: most})
	if threshold := indexOptions("", nil).ValueThreshold; int64(len(largest)) >= threshold {
		t.Errorf("the largest record is %d bytes, not under the value threshold %d", len(largest), threshold)
	}
}

// DeleteReferrers drops the records of the subjects asked for, in every
// repository, durably, and leaves the others.
func TestDeleteReferrers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	gone, kept := digest.FromString("gone"), digest.FromString("kept")
	for _, subject := range []digest.Digest{gone, kept} {
		for _, r := range []Repo{{Name: "a"}, {Registry: "r.example", Name: "b/c"}} {
			if err := s.PutReferrers(ReferrersKey{Repo: r, Subject: subject}, ReferrersRecord{Body: referrersIndex(0), Checked: time.Now()}); err != nil {
				t.Fatal(err)
			}
		}
	}
	n, err := s.DeleteReferrers(func(d digest.Digest) bool { return d == gone })
	if err != nil || n != 2 {
		t.Fatalf("DeleteReferrers = %d, %v; want 2", n, err)
	}
	s.Close()
	s = openStore(t, dir, 1<<20)
	list, err := s.Referrers()
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].Key.Subject != kept || list[1].Key.Subject != kept {
		t.Fatalf("after the delete and a restart: %+v", list)
	}
}

// A read-only store reads records and refuses to write them.
func TestReferrersReadOnly(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 1<<20)
	k := ReferrersKey{Repo: Repo{Name: "a"}, Subject: digest.FromString("s")}
	if err := s.PutReferrers(k, ReferrersRecord{Body: referrersIndex(1), Checked: time.Now()}); err != nil {
		t.Fatal(err)
	}
	s.Close()
	ro, err := Open(Options{Dir: dir, MaxSize: 1 << 20, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if _, err := ro.GetReferrers(k); err != nil {
		t.Fatalf("GetReferrers read-only: %v", err)
	}
	if err := ro.PutReferrers(k, ReferrersRecord{}); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("PutReferrers read-only = %v, want ErrReadOnly", err)
	}
	if _, err := ro.DeleteReferrers(func(digest.Digest) bool { return true }); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("DeleteReferrers read-only = %v, want ErrReadOnly", err)
	}
}
