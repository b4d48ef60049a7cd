package cache

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// The tagStore tests run on an in-memory index: no Store, no files.

func newTestTagStore(t *testing.T) *tagStore {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	db, err := badger.Open(indexOptions("", log).WithInMemory(true))
	if err != nil {
		t.Fatalf("open in-memory index: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return &tagStore{db: db, log: log}
}

// putTag puts rec under the key of accept and waits for the commit.
func putTag(t *testing.T, ts *tagStore, repo, tag, accept string, rec TagRecord) {
	t.Helper()
	key, err := tagKey(Repo{Name: repo}, tag, accept)
	if err != nil {
		t.Fatal(err)
	}
	putTagKey(t, ts, repo, tag, key, legacyTagKey(Repo{Name: repo}, tag, accept), rec)
}

// putTagKey puts rec under key and waits for the commit.
func putTagKey(t *testing.T, ts *tagStore, repo, tag string, key, legacy []byte, rec TagRecord) {
	t.Helper()
	committed := make(chan error, 1)
	if err := ts.put(Repo{Name: repo}, tag, key, legacy, rec, func(err error) { committed <- err }); err != nil {
		t.Fatalf("put %s: %v", key, err)
	}
	if err := <-committed; err != nil {
		t.Fatalf("commit %s: %v", key, err)
	}
}

func TestTagStoreGet(t *testing.T) {
	t.Parallel()
	rec := tagRecord(1)
	tests := []struct {
		name    string
		put     func(ts *tagStore) error
		wantErr error
	}{
		{"under its key", func(ts *tagStore) error {
			key, _ := tagKey(Repo{Name: "team/app"}, "v1", ociManifest)
			return ts.db.Update(func(txn *badger.Txn) error { return txn.Set(key, encodeTagRecord(rec)) })
		}, nil},
		{"under the legacy key only", func(ts *tagStore) error {
			legacy := legacyTagKey(Repo{Name: "team/app"}, "v1", ociManifest)
			return ts.db.Update(func(txn *badger.Txn) error { return txn.Set(legacy, encodeTagRecord(rec)) })
		}, nil},
		{"another tag only", func(ts *tagStore) error {
			key, _ := tagKey(Repo{Name: "team/app"}, "v2", ociManifest)
			return ts.db.Update(func(txn *badger.Txn) error { return txn.Set(key, encodeTagRecord(rec)) })
		}, ErrNotFound},
		{"a record that does not parse", func(ts *tagStore) error {
			key, _ := tagKey(Repo{Name: "team/app"}, "v1", ociManifest)
			return ts.db.Update(func(txn *badger.Txn) error { return txn.Set(key, []byte{9}) })
		}, errAny},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestTagStore(t)
			if err := tc.put(ts); err != nil {
				t.Fatal(err)
			}
			key, _ := tagKey(Repo{Name: "team/app"}, "v1", ociManifest)
			got, err := ts.get(key, legacyTagKey(Repo{Name: "team/app"}, "v1", ociManifest))
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("get: %v", err)
			case tc.wantErr == nil && (got.Digest != rec.Digest || !got.Checked.Equal(rec.Checked)):
				t.Fatalf("get = %+v, want %+v", got, rec)
			case tc.wantErr == errAny && (err == nil || errors.Is(err, ErrNotFound)):
				t.Fatalf("get = %+v, %v; want a decoding error", got, err)
			case tc.wantErr != nil && tc.wantErr != errAny && !errors.Is(err, tc.wantErr):
				t.Fatalf("get = %+v, %v; want %v", got, err, tc.wantErr)
			}
		})
	}
}

// errAny stands for an error other than ErrNotFound in a test table.
var errAny = errors.New("any error")

// A tag keeps the maxTagRecords most recently checked records, one per
// Accept, and put replaces a record under the same Accept.
func TestTagStorePutBoundsRecords(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		puts    int
		accepts int // distinct Accept values, cycled
		want    int
	}{
		{"one Accept, replaced", 5, 1, 1},
		{"under the bound", maxTagRecords - 1, maxTagRecords - 1, maxTagRecords - 1},
		{"at the bound", maxTagRecords, maxTagRecords, maxTagRecords},
		{"past the bound", maxTagRecords + 3, maxTagRecords + 3, maxTagRecords},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestTagStore(t)
			var checked []time.Time
			for i := range tc.puts {
				// Keys as distinct Accept values give them.
				key := hashedTagKey(Repo{Name: "team/app"}, "v1", fmt.Sprint(i%tc.accepts))
				rec := tagRecord(uint64(i + 1))
				putTagKey(t, ts, "team/app", "v1", key, legacyTagKey(Repo{Name: "team/app"}, "v1", ""), rec)
				checked = append(checked, rec.Checked)
			}
			// Another tag's records are neither counted nor dropped.
			putTag(t, ts, "team/app", "v10", ociManifest, tagRecord(99))
			infos, err := ts.list()
			if err != nil {
				t.Fatal(err)
			}
			var got []time.Time
			for _, in := range infos {
				if in.Tag == "v1" {
					got = append(got, in.Checked)
				}
			}
			if len(got) != tc.want || len(infos) != tc.want+1 {
				t.Fatalf("%d records of v1 and %d in all, want %d and %d", len(got), len(infos), tc.want, tc.want+1)
			}
			// The newest survive, listed most recently checked first.
			slices.Reverse(checked)
			if !slices.EqualFunc(got, checked[:tc.want], time.Time.Equal) {
				t.Fatalf("kept checked times %v, want %v", got, checked[:tc.want])
			}
		})
	}
}

func TestTagStoreDelete(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		prefix string
		match  func(string) bool
		want   int
		left   []string // repo:tag of the records left, as listed
	}{
		{"everything", tagKeyPrefix, func(string) bool { return true }, 3, nil},
		{"one tag, not the repository named like it", tagKeyPrefix + "team/app/v1/", func(k string) bool {
			r, tag, ok := parseTagKey(k)
			return ok && r == Repo{Name: "team/app"} && tag == "v1"
		}, 1, []string{"team/app:v2", "team/app/v1:x"}},
		{"nothing matches", tagKeyPrefix + "other/", func(string) bool { return true }, 0, []string{"team/app:v1", "team/app:v2", "team/app/v1:x"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ts := newTestTagStore(t)
			putTag(t, ts, "team/app", "v1", ociManifest, tagRecord(1))
			putTag(t, ts, "team/app", "v2", ociManifest, tagRecord(2))
			putTag(t, ts, "team/app/v1", "x", ociManifest, tagRecord(3))
			n, err := ts.delete(tc.prefix, tc.match)
			if err != nil || n != tc.want {
				t.Fatalf("delete(%q) = %d, %v; want %d", tc.prefix, n, err, tc.want)
			}
			infos, err := ts.list()
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, in := range infos {
				left = append(left, in.Repo+":"+in.Tag)
			}
			if !slices.Equal(left, tc.left) {
				t.Fatalf("left %v, want %v", left, tc.left)
			}
		})
	}
}
