package cache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
	"github.com/ecr-mirror/ecr-mirror/internal/testkit"
)

func mustPin(t testing.TB, s *Store, n *node, name string) {
	t.Helper()
	if err := s.Pin(n.dgst, name); err != nil {
		t.Fatalf("Pin(%s, %q): %v", n.name, name, err)
	}
}

// checkWhole fails unless every entry of n's closure is stored and its
// file on disk has the right bytes.
func checkWhole(t testing.TB, s *Store, n *node) {
	t.Helper()
	for _, c := range closure(n) {
		if err := s.Verify(c.dgst); err != nil {
			t.Fatalf("%s of pinned %s: %v", c.name, n.name, err)
		}
		b, err := os.ReadFile(s.blobPath(c.dgst))
		if err != nil || !bytes.Equal(b, c.data) {
			t.Fatalf("file of %s: %d bytes, %v; want its %d bytes", c.name, len(b), err, len(c.data))
		}
	}
}

// layerNode is a layer of size bytes; seeds are unique per test.
func layerNode(name string, seed uint64, size int) *node {
	return blobNode(name, seed, size, "application/octet-stream")
}

// imageNode is a manifest with a small config and the given layers.
func imageNode(name string, layers ...*node) *node {
	return manifestNode(name, oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("c-"+name, 200), layers...)
}

// fillers returns n images of one layer of size bytes each.
func fillers(prefix string, seed uint64, n, size int) []*node {
	out := make([]*node, n)
	for i := range out {
		out[i] = imageNode(fmt.Sprintf("%s%d", prefix, i), layerNode(fmt.Sprintf("%s%d-layer", prefix, i), seed+uint64(i), size))
	}
	return out
}

// TestPinnedImageSurvivesEviction pulls far more than MaxSize of other
// images after pinning one: the pinned image stays whole and intact, the
// others go, the bound holds throughout.
func TestPinnedImageSurvivesEviction(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		build func() (pinned *node, neighbour *node)
	}{
		{"manifest", func() (*node, *node) {
			shared := layerNode("shared", 1000, 1200)
			p := imageNode("P", shared, layerNode("p1", 1001, 1500))
			return p, imageNode("N", shared, layerNode("n1", 1002, 800))
		}},
		{"index", func() (*node, *node) {
			base := layerNode("base", 1010, 1000)
			amd := imageNode("amd64", base, layerNode("amd", 1011, 700))
			arm := imageNode("arm64", base, layerNode("arm", 1012, 700))
			return indexNode("I", oci.MediaTypeImageIndex, oci.MediaTypeImageIndex, amd, arm), imageNode("N", base, layerNode("n1", 1013, 800))
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			const maxSize = 10_000
			s := openStore(t, dir, maxSize)
			p, neighbour := tc.build()
			pull(t, s, p)
			pull(t, s, neighbour) // shares content with p
			mustPin(t, s, p, "team/app:v1")
			if got := s.Stats().PinnedBytes; got != closureSize(p) {
				t.Fatalf("PinnedBytes = %d, want the image's %d", got, closureSize(p))
			}
			others := fillers("other", 1100, 30, 1500)
			for _, o := range others {
				pull(t, s, o)
				if s.Size() > maxSize {
					t.Fatalf("Size %d > MaxSize %d", s.Size(), maxSize)
				}
			}
			checkWhole(t, s, p)
			checkStore(t, s, dir)
			checkInvariant(t, s, slices.Concat(closure(p), closure(neighbour)))
			if stored(s, neighbour) {
				t.Fatal("the unpinned neighbour survived 30 images of pressure")
			}
			for _, o := range others[:20] {
				if stored(s, o) || stored(s, o.refs[1]) {
					t.Fatalf("%s, pulled long ago, is still stored", o.name)
				}
			}
			if st := s.Stats(); st.Evictions == 0 || st.PinnedBytes != closureSize(p) {
				t.Fatalf("Stats = %+v", st)
			}
		})
	}
}

// TestPinRefused: an image that is not whole, or that would take pinned
// content over MaxSize, is not pinned, and the error says why.
func TestPinRefused(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 100_000)
	var layers []*node
	for i := range 8 {
		layers = append(layers, layerNode(fmt.Sprintf("l%d", i), 1200+uint64(i), 300))
	}
	whole := imageNode("whole", layers[0])
	oneMissing := imageNode("one-missing", layers[1], layers[2])
	manyMissing := imageNode("many-missing", layers[2:]...)
	missingManifest := indexNode("I", oci.MediaTypeImageIndex, oci.MediaTypeImageIndex, whole, imageNode("absent", layers[0]))
	pull(t, s, whole)
	fetch(t, s, oneMissing)
	fetch(t, s, oneMissing.refs[0])
	fetch(t, s, layers[1]) // layers[2] is missing
	fetch(t, s, manyMissing)
	fetch(t, s, missingManifest)
	_, absent := blob(1299, 10)

	tests := []struct {
		name     string
		dgst     digest.Digest
		pinName  string
		want     []error
		mentions []string
	}{
		{name: "one layer missing", dgst: oneMissing.dgst, want: []error{ErrIncomplete},
			mentions: []string{"1 referenced digests", layers[2].dgst.String()}},
		{name: "many missing", dgst: manyMissing.dgst, want: []error{ErrIncomplete},
			mentions: []string{"7 referenced digests", "and 2 more"}},
		{name: "platform manifest missing", dgst: missingManifest.dgst, want: []error{ErrIncomplete},
			mentions: []string{missingManifest.refs[1].dgst.String()}},
		{name: "root not stored", dgst: absent, want: []error{ErrIncomplete, ErrNotFound}, mentions: []string{absent.String()}},
		{name: "name too long", dgst: whole.dgst, pinName: strings.Repeat("n", maxPinNameLen+1), mentions: []string{"name of 513 bytes"}},
		{name: "sha512", dgst: digest.SHA512.FromString("x"), mentions: []string{"sha512"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Pin(tc.dgst, tc.pinName)
			if err == nil {
				t.Fatalf("Pin(%s) succeeded", tc.dgst)
			}
			for _, w := range tc.want {
				if !errors.Is(err, w) {
					t.Errorf("Pin error %q does not wrap %v", err, w)
				}
			}
			for _, m := range tc.mentions {
				if !strings.Contains(err.Error(), m) {
					t.Errorf("Pin error %q does not mention %q", err, m)
				}
			}
		})
	}
	if pins, err := s.Pins(); err != nil || len(pins) != 0 {
		t.Fatalf("Pins after refusals = %+v, %v", pins, err)
	}

	// ErrPinTooLarge cannot happen through the API while Size <= MaxSize
	// (pinned content and the image are stored, so they fit); lower the
	// budget under the store to check the guard.
	big := imageNode("big", layerNode("big-layer", 1290, 3000))
	pull(t, s, big)
	mustPin(t, s, whole, "")
	s.mu.Lock()
	s.maxSize = closureSize(whole) + closureSize(big) - 1
	s.mu.Unlock()
	err := s.Pin(big.dgst, "big")
	if !errors.Is(err, ErrPinTooLarge) || !strings.Contains(err.Error(), fmt.Sprint(closureSize(whole)+closureSize(big))) {
		t.Fatalf("Pin beyond the budget: %v, want ErrPinTooLarge with the figures", err)
	}
	// Content already pinned adds nothing: pinning a part of a pinned
	// image, or the image again, always fits.
	mustPin(t, s, whole, "again")
	s.mu.Lock()
	s.maxSize = 100_000
	s.mu.Unlock()
}

// TestPinnedBytesCountInBudget: a commit that does not fit in what the
// pins leave of MaxSize is verified and not kept, without evicting
// anything; one that fits evicts unpinned images only.
func TestPinnedBytesCountInBudget(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const maxSize = 10_000
	s := openStore(t, dir, maxSize)
	p := imageNode("P", layerNode("p1", 1300, 3000))
	pull(t, s, p)
	mustPin(t, s, p, "")
	room := maxSize - closureSize(p)
	others := fillers("o", 1310, 4, 1200)
	for _, o := range others {
		pull(t, s, o)
	}
	before := s.Stats()

	tests := []struct {
		name string
		size int64
		kept bool
	}{
		{"one byte too many", room + 1, false},
		{"far too large", maxSize, false},
		{"exactly the room", room, true},
	}
	for i, tc := range tests {
		data, dgst := blob(1320+uint64(i), int(tc.size))
		w, err := s.Create(dgst, tc.size, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := writeChunks(w, data, 4096, 0); err != nil {
			t.Fatal(err)
		}
		kept, err := w.Commit()
		if err != nil || kept != tc.kept {
			t.Fatalf("%s: Commit = %v, %v; want kept %v", tc.name, kept, err, tc.kept)
		}
		if s.Size() > maxSize {
			t.Fatalf("%s: Size %d > MaxSize %d", tc.name, s.Size(), maxSize)
		}
		st := s.Stats()
		if !tc.kept && (st.Evictions != before.Evictions || st.Discarded != before.Discarded+int64(i)+1) {
			t.Fatalf("%s: a commit not kept evicted %d entries, discarded %d; want none evicted, counted discarded",
				tc.name, st.Evictions-before.Evictions, st.Discarded-before.Discarded)
		}
		checkStore(t, s, dir)
	}
	checkWhole(t, s, p)
	for _, o := range others {
		if stored(s, o) {
			t.Fatalf("%s still stored beside the pins and a blob filling the rest", o.name)
		}
	}
}

// TestPinsSurviveReopen: pins, with their names and time, come back
// after Close and Open and still protect their images; a budget lowered
// below the pins keeps every pin, evicts the rest and warns.
func TestPinsSurviveReopen(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		reopen  int64 // MaxSize at the second Open
		overrun bool
	}{
		{name: "same budget", reopen: 20_000},
		{name: "budget below the pins", reopen: 3_000, overrun: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			s, err := Open(Options{Dir: dir, MaxSize: 20_000, AccessFlushInterval: time.Hour})
			if err != nil {
				t.Fatal(err)
			}
			a := imageNode("A", layerNode("a1", 1400, 2000))
			b := imageNode("B", layerNode("b1", 1401, 2000))
			u := imageNode("U", layerNode("u1", 1402, 2000))
			for _, n := range []*node{a, b, u} {
				pull(t, s, n)
			}
			mustPin(t, s, a, "team/a:v1")
			mustPin(t, s, a, "team/a:latest")
			mustPin(t, s, a, "team/a:v1")
			mustPin(t, s, b, "")
			want, err := s.Pins()
			if err != nil {
				t.Fatal(err)
			}
			if len(want) != 2 {
				t.Fatalf("Pins = %+v, want 2", want)
			}
			for _, pi := range want {
				if pi.Digest == a.dgst && (!slices.Equal(pi.Names, []string{"team/a:latest", "team/a:v1"}) || pi.Bytes != closureSize(a)) {
					t.Fatalf("pin of A = %+v", pi)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}

			var logs testkit.SyncBuffer
			s, err = Open(Options{Dir: dir, MaxSize: tc.reopen, AccessFlushInterval: time.Hour,
				Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			got, err := s.Pins()
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Fatalf("Pins after reopen = %+v, want %+v", got, want)
			}
			for i := range got {
				g, w := got[i], want[i]
				if g.Digest != w.Digest || !slices.Equal(g.Names, w.Names) || g.Bytes != w.Bytes || !g.Pinned.Equal(w.Pinned) {
					t.Fatalf("pin %d after reopen = %+v, want %+v", i, g, w)
				}
			}
			checkWhole(t, s, a)
			checkWhole(t, s, b)
			checkStore(t, s, dir)
			warned := strings.Contains(logs.String(), "pinned content exceeds the budget")
			if tc.overrun {
				if stored(s, u) || s.Size() != closureSize(a)+closureSize(b) || !warned {
					t.Fatalf("over budget: U stored %v, Size %d, warned %v; want only the pins kept, and a warning", stored(s, u), s.Size(), warned)
				}
				if !strings.Contains(logs.String(), fmt.Sprintf("max_size=%d", tc.reopen)) {
					t.Fatalf("the warning lacks the figures: %s", logs.String())
				}
				// Nothing new fits; nothing pinned goes.
				pull(t, s, imageNode("new", layerNode("n1", 1403, 100)))
				checkWhole(t, s, a)
				checkStore(t, s, dir)
				return
			}
			if warned {
				t.Fatalf("warned within the budget: %s", logs.String())
			}
			for _, o := range fillers("o", 1410, 20, 2000) {
				pull(t, s, o)
			}
			checkWhole(t, s, a)
			checkWhole(t, s, b)
			checkStore(t, s, dir)
		})
	}
}

// TestUnpinMakesImageEvictable: once unpinned, an image is an ordinary
// LRU candidate; unpinning what is not pinned is ErrNotFound.
func TestUnpinMakesImageEvictable(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const maxSize = 10_000
	s := openStore(t, dir, maxSize)
	p := imageNode("P", layerNode("p1", 1500, 3000))
	pull(t, s, p)
	mustPin(t, s, p, "x")
	for _, o := range fillers("o", 1510, 10, 2000) {
		pull(t, s, o)
	}
	checkWhole(t, s, p)
	if err := s.Unpin(p.dgst); err != nil {
		t.Fatal(err)
	}
	if err := s.Unpin(p.dgst); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Unpin: %v, want ErrNotFound", err)
	}
	if pins, _ := s.Pins(); len(pins) != 0 {
		t.Fatalf("Pins after Unpin = %+v", pins)
	}
	if st := s.Stats(); st.PinnedBytes != 0 {
		t.Fatalf("PinnedBytes after Unpin = %d", st.PinnedBytes)
	}
	checkStore(t, s, dir)
	for _, o := range fillers("q", 1530, 10, 2000) {
		pull(t, s, o)
	}
	if got := storedOf(s, closure(p)...); got != "000" {
		t.Fatalf("stored P = %s after unpinning and 10 more images, want it evicted", got)
	}
	checkStore(t, s, dir)
}

// TestPinnedManifestUnderIndex: a pinned platform manifest stays, with
// its config and layers, when the unpinned index listing it is evicted
// or purged; its sibling goes with the index.
func TestPinnedManifestUnderIndex(t *testing.T) {
	t.Parallel()
	for _, how := range []string{"evict", "purge"} {
		t.Run(how, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			const maxSize = 10_000
			s := openStore(t, dir, maxSize)
			base := layerNode("base", 1600, 1000)
			amd := imageNode("amd64", base, layerNode("amd", 1601, 1000))
			arm := imageNode("arm64", base, layerNode("arm", 1602, 1000))
			idx := indexNode("I", oci.MediaTypeImageIndex, oci.MediaTypeImageIndex, amd, arm)
			pull(t, s, idx)
			mustPin(t, s, arm, "team/app:v1-arm64")
			switch how {
			case "evict":
				for _, o := range fillers("o", 1610, 10, 1500) {
					pull(t, s, o)
				}
			case "purge":
				removed, err := s.Purge(idx.dgst)
				if err != nil {
					t.Fatal(err)
				}
				var got []digest.Digest
				for _, r := range removed {
					got = append(got, r.Digest)
				}
				want := []digest.Digest{idx.dgst, amd.dgst, amd.refs[0].dgst, amd.refs[2].dgst}
				slices.Sort(got)
				slices.Sort(want)
				if !slices.Equal(got, want) {
					t.Fatalf("Purge(I) removed %v, want %v", got, want)
				}
			}
			checkWhole(t, s, arm)
			if stored(s, idx) || stored(s, amd) || stored(s, amd.refs[2]) {
				t.Fatalf("index %v, amd64 %v, its layer %v still stored", stored(s, idx), stored(s, amd), stored(s, amd.refs[2]))
			}
			checkStore(t, s, dir)
			s.mu.Lock()
			inLRU := s.g.lru.Contains(arm.dgst)
			s.mu.Unlock()
			if inLRU {
				t.Fatal("the pinned manifest became an eviction candidate when its index went")
			}
		})
	}
}

// TestPinnedContentDeletedAndRefetched: Delete removes pinned content (a
// repair); the pin stays, and the content fetched again is pinned as it
// lands, root included.
func TestPinnedContentDeletedAndRefetched(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const maxSize = 10_000
	s := openStore(t, dir, maxSize)
	p := imageNode("P", layerNode("p1", 1700, 2000), layerNode("p2", 1701, 1000))
	pull(t, s, p)
	mustPin(t, s, p, "p")
	layer := p.refs[1]
	if err := s.Delete(layer.dgst); err != nil {
		t.Fatal(err)
	}
	pins, err := s.Pins()
	if err != nil || len(pins) != 1 || pins[0].Bytes != closureSize(p)-layer.size() {
		t.Fatalf("Pins after deleting a pinned layer = %+v, %v", pins, err)
	}
	if err := s.Pin(p.dgst, "again"); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), layer.dgst.String()) {
		t.Fatalf("Pin of the damaged image: %v, want ErrIncomplete naming the layer", err)
	}
	checkStore(t, s, dir)
	fetch(t, s, layer)
	if info, err := s.Stat(layer.dgst); err != nil || !info.Pinned {
		t.Fatalf("refetched layer: %+v, %v; want pinned", info, err)
	}
	// The root itself, deleted and stored again, is pinned and no
	// eviction candidate.
	if err := s.Delete(p.dgst); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.PinnedBytes != 0 {
		t.Fatalf("PinnedBytes without the pinned root = %d", st.PinnedBytes)
	}
	checkStore(t, s, dir)
	fetch(t, s, p)
	if st := s.Stats(); st.PinnedBytes != closureSize(p) {
		t.Fatalf("PinnedBytes after the root came back = %d, want %d", st.PinnedBytes, closureSize(p))
	}
	for _, o := range fillers("o", 1710, 10, 2000) {
		pull(t, s, o)
	}
	checkWhole(t, s, p)
	checkStore(t, s, dir)
}

// TestEntriesKindAndPinned: Entries and Stat say what each entry is and
// whether a pin holds it.
func TestEntriesKindAndPinned(t *testing.T) {
	t.Parallel()
	s := openStore(t, t.TempDir(), 1<<20)
	base := layerNode("base", 1800, 500)
	amd := imageNode("amd64", base, layerNode("amd", 1801, 500))
	arm := imageNode("arm64", base, layerNode("arm", 1802, 500))
	idx := indexNode("I", oci.MediaTypeImageIndex, "", amd, arm) // found by its JSON
	loose := layerNode("loose", 1803, 100)
	pull(t, s, idx)
	fetch(t, s, loose)
	mustPin(t, s, arm, "")
	want := map[digest.Digest]struct {
		kind   string
		pinned bool
	}{
		idx.dgst:         {"index", false},
		amd.dgst:         {"manifest", false},
		arm.dgst:         {"manifest", true},
		amd.refs[0].dgst: {"blob", false},
		amd.refs[2].dgst: {"blob", false},
		arm.refs[0].dgst: {"blob", true},
		arm.refs[2].dgst: {"blob", true},
		base.dgst:        {"blob", true}, // shared with amd64, held by arm64's pin
		loose.dgst:       {"blob", false},
	}
	entries, err := s.Entries()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != len(want) {
		t.Fatalf("Entries has %d entries, want %d", len(entries), len(want))
	}
	for _, e := range entries {
		w := want[e.Digest]
		if e.Kind != w.kind || e.Pinned != w.pinned {
			t.Errorf("Entries: %s is %q pinned %v, want %q pinned %v", e.Digest, e.Kind, e.Pinned, w.kind, w.pinned)
		}
		st, err := s.Stat(e.Digest)
		if err != nil || st.Digest != e.Digest || st.Kind != e.Kind || st.Pinned != e.Pinned || st.Size != e.Size || !st.LastAccess.Equal(e.LastAccess) {
			t.Errorf("Stat(%s) = %+v, %v; want %+v", e.Digest, st, err, e)
		}
	}
}

func TestPinRecordRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		names []string
	}{
		{"no names", nil},
		{"one", []string{"team/app:v1"}},
		{"several", []string{"a", "b/c:d", strings.Repeat("x", maxPinNameLen), "ünïcode"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			in := &pinRecord{names: tc.names, pinned: 1_700_000_000_123_456_789}
			out, err := decodePin(encodePin(in))
			if err != nil || out.pinned != in.pinned || !slices.Equal(out.names, in.names) {
				t.Fatalf("decodePin(encodePin(%+v)) = %+v, %v", in, out, err)
			}
		})
	}
	good := encodePin(&pinRecord{names: []string{"abc", "de"}, pinned: 5})
	for name, b := range map[string][]byte{
		"empty":         nil,
		"short header":  good[:pinRecordHeaderLen-1],
		"version":       append([]byte{2}, good[1:]...),
		"cut in a name": good[:len(good)-1],
		"cut at a name": good[:pinRecordHeaderLen+1],
		"trailing":      append(slices.Clone(good), 0),
	} {
		if p, err := decodePin(b); err == nil {
			t.Errorf("%s: decoded %+v", name, p)
		}
	}
}

// TestBadPinRecordDroppedAtOpen: a pin record that does not parse is
// dropped at Open, like any bad record; a good one beside it stays.
func TestBadPinRecordDroppedAtOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxSize: 1 << 20, AccessFlushInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	p := imageNode("P", layerNode("p1", 1900, 100))
	pull(t, s, p)
	mustPin(t, s, p, "p")
	sum := sha256.Sum256([]byte("x"))
	bad := map[string][]byte{
		pinKeyPrefix + "sha256:" + hex.EncodeToString(sum[:]): {9, 9},
		pinKeyPrefix + "not-a-digest":                         encodePin(&pinRecord{}),
	}
	for k, v := range bad {
		if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set([]byte(k), v) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, 1<<20)
	pins, err := s.Pins()
	if err != nil || len(pins) != 1 || pins[0].Digest != p.dgst {
		t.Fatalf("Pins = %+v, %v; want only P", pins, err)
	}
	_, badKeys, err := loadPins(s.db)
	if err != nil || len(badKeys) != 0 {
		t.Fatalf("bad pin records left: %q, %v", badKeys, err)
	}
}
