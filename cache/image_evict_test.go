package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// node is synthetic registry content: a layer, a config, a manifest or an
// index, with what it references.
type node struct {
	name      string
	data      []byte
	dgst      digest.Digest
	mediaType string // as stored
	kind      refKind
	refs      []*node
}

func (n *node) size() int64 { return int64(len(n.data)) }

// blobNode is a layer of size random bytes.
func blobNode(name string, seed uint64, size int, mediaType string) *node {
	data, dgst := blob(seed, size)
	return &node{name: name, data: data, dgst: dgst, mediaType: mediaType}
}

// configNode is an image config: a JSON object without a mediaType field,
// padded to about size bytes.
func configNode(name string, size int) *node {
	pad := strings.Repeat("x", max(size-100, 1))
	data, _ := json.Marshal(map[string]any{"architecture": "amd64", "os": "linux", "name": name, "pad": pad})
	return &node{name: name, data: data, dgst: digest.FromBytes(data), mediaType: "application/octet-stream"}
}

type testDescriptor struct {
	MediaType string        `json:"mediaType"`
	Digest    digest.Digest `json:"digest"`
	Size      int64         `json:"size"`
}

type testManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	Config        *testDescriptor   `json:"config,omitempty"`
	Layers        []testDescriptor  `json:"layers,omitempty"`
	Manifests     []testDescriptor  `json:"manifests,omitempty"`
	Subject       *testDescriptor   `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

func descOf(n *node) testDescriptor {
	mt := n.mediaType
	if mt == "" || mt == "application/octet-stream" {
		mt = "application/vnd.oci.image.layer.v1.tar+gzip"
	}
	return testDescriptor{MediaType: mt, Digest: n.dgst, Size: n.size()}
}

// manifestNode is an image manifest of media type mt (stored as
// storedType) referencing config and layers.
func manifestNode(name, mt, storedType string, config *node, layers ...*node) *node {
	m := testManifest{SchemaVersion: 2, MediaType: mt, Annotations: map[string]string{"name": name}}
	d := descOf(config)
	m.Config = &d
	for _, l := range layers {
		m.Layers = append(m.Layers, descOf(l))
	}
	data, _ := json.Marshal(m)
	return &node{name: name, data: data, dgst: digest.FromBytes(data), mediaType: storedType,
		kind: kindManifest, refs: append([]*node{config}, layers...)}
}

// indexNode is an index of media type mt referencing manifests.
func indexNode(name, mt, storedType string, manifests ...*node) *node {
	m := testManifest{SchemaVersion: 2, MediaType: mt, Annotations: map[string]string{"name": name}}
	for _, c := range manifests {
		m.Manifests = append(m.Manifests, testDescriptor{MediaType: c.mediaType, Digest: c.dgst, Size: c.size()})
	}
	data, _ := json.Marshal(m)
	return &node{name: name, data: data, dgst: digest.FromBytes(data), mediaType: storedType,
		kind: kindIndex, refs: manifests}
}

// closure returns n and everything it references, transitively, once each.
func closure(n *node) []*node {
	var out []*node
	seen := map[digest.Digest]bool{}
	var walk func(*node)
	walk = func(n *node) {
		if seen[n.dgst] {
			return
		}
		seen[n.dgst] = true
		out = append(out, n)
		for _, c := range n.refs {
			walk(c)
		}
	}
	walk(n)
	return out
}

func closureSize(n *node) (total int64) {
	for _, c := range closure(n) {
		total += c.size()
	}
	return total
}

// pull fetches n the way a client pulling through the proxy does: a
// manifest is Put (as a by-tag fetch stores it), a blob that is not stored
// is downloaded through a Writer; each is then read with Get; then what it
// references, in order (manifest, config, layers; index, manifests).
func pull(t testing.TB, s *Store, n *node) {
	t.Helper()
	if err := pullErr(s, n); err != nil {
		t.Fatal(err)
	}
}

func pullErr(s *Store, n *node) error {
	if err := fetchErr(s, n); err != nil {
		return err
	}
	for _, c := range n.refs {
		if err := pullErr(s, c); err != nil {
			return err
		}
	}
	return nil
}

// fetch stores and reads one entry, as one request through the proxy.
func fetch(t testing.TB, s *Store, n *node) {
	t.Helper()
	if err := fetchErr(s, n); err != nil {
		t.Fatal(err)
	}
}

func fetchErr(s *Store, n *node) error {
	if n.kind != kindOpaque {
		if err := s.Put(n.dgst, n.mediaType, n.data); err != nil {
			return fmt.Errorf("Put(%s): %w", n.name, err)
		}
	} else if _, err := s.Stat(n.dgst); errors.Is(err, ErrNotFound) {
		w, err := s.Create(n.dgst, n.size(), n.mediaType)
		if err != nil {
			return fmt.Errorf("Create(%s): %w", n.name, err)
		}
		if err := writeChunks(w, n.data, 700, 0); err != nil {
			return fmt.Errorf("Write(%s): %w", n.name, err)
		}
		if _, err := w.Commit(); err != nil {
			return fmt.Errorf("Commit(%s): %w", n.name, err)
		}
	} else if err != nil {
		return fmt.Errorf("Stat(%s): %w", n.name, err)
	}
	return getErr(s, n)
}

// get reads n if it is stored and checks its bytes.
func get(t testing.TB, s *Store, n *node) {
	t.Helper()
	if err := getErr(s, n); err != nil {
		t.Fatal(err)
	}
}

func getErr(s *Store, n *node) error {
	f, _, err := s.Get(n.dgst)
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("Get(%s): %w", n.name, err)
	}
	defer f.Close()
	b, err := io.ReadAll(f)
	if err != nil || !bytes.Equal(b, n.data) {
		return fmt.Errorf("Get(%s): %d bytes, %v; want %d equal bytes", n.name, len(b), err, len(n.data))
	}
	return nil
}

func stored(s *Store, n *node) bool {
	_, err := s.Stat(n.dgst)
	return err == nil
}

// storedOf returns which of nodes are stored, as a string of 0/1.
func storedOf(s *Store, nodes ...*node) string {
	out := make([]byte, len(nodes))
	for i, n := range nodes {
		out[i] = '0'
		if stored(s, n) {
			out[i] = '1'
		}
	}
	return string(out)
}

// checkInvariant fails if a stored manifest or index of nodes references
// something that is not stored: the image must be pullable whole.
func checkInvariant(t testing.TB, s *Store, nodes []*node) {
	t.Helper()
	checkInvariantExcept(t, s, nodes, nil)
}

// checkInvariantExcept is checkInvariant for the manifests not in
// except: those that may lack content too large to be kept.
func checkInvariantExcept(t testing.TB, s *Store, nodes []*node, except map[digest.Digest]bool) {
	t.Helper()
	for _, n := range nodes {
		if n.kind == kindOpaque || !stored(s, n) || except[n.dgst] {
			continue
		}
		for _, c := range n.refs {
			if !stored(s, c) {
				t.Fatalf("%s %s is stored but %s, which it references, is not", n.kind, n.name, c.name)
			}
		}
	}
}

// checkStore checks the bound (which only pinned content alone may
// pass), that the accounting matches the files and the index, that tmp/
// is empty and that the in-memory reference graph is consistent.
func checkStore(t testing.TB, s *Store, dir string) {
	t.Helper()
	if size, pinned := s.Size(), s.Stats().PinnedBytes; size > s.MaxSize() && size != pinned {
		t.Fatalf("Size %d > MaxSize %d, and not all of it pinned (%d bytes)", size, s.MaxSize(), pinned)
	}
	var onDisk int64
	var files []string
	root := filepath.Join(dir, blobsDirName)
	for _, rel := range blobFiles(t, dir) {
		fi, err := os.Stat(filepath.Join(root, rel))
		if err != nil {
			t.Fatal(err)
		}
		onDisk += fi.Size()
		files = append(files, rel)
	}
	if onDisk != s.Size() {
		t.Fatalf("Size %d, but the stored files hold %d bytes", s.Size(), onDisk)
	}
	idx := indexed(t, s)
	var inIndex []digest.Digest
	var indexBytes int64
	for d, n := range idx {
		inIndex = append(inIndex, d)
		indexBytes += n
	}
	assertFileSet(t, "blobs/ vs index", files, blobPaths(inIndex...))
	if indexBytes != onDisk {
		t.Fatalf("index records %d bytes, files %d", indexBytes, onDisk)
	}
	assertFileSet(t, "tmp/", tmpFiles(t, dir), nil)
	checkGraph(t, s)
}

// checkGraph checks the store's in-memory state against itself: the
// eviction order holds exactly the stored entries no stored manifest
// references that are not pinned, the reverse links mirror the stored
// manifests' refs, and the pinned set and its bytes are what the pins
// make them.
func checkGraph(t testing.TB, s *Store) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.reserved < 0 {
		t.Fatalf("accounting: %d bytes reserved", s.reserved)
	}
	if err := s.g.check(); err != nil {
		t.Fatal(err)
	}
}

// twoImages builds images A and B that share layer S, each with its own
// config and layer, and the sizes of their parts.
func twoImages() (a, b *node, shared *node) {
	shared = blobNode("S", 1, 3000, "application/octet-stream")
	ua := blobNode("uA", 2, 2000, "application/octet-stream")
	ub := blobNode("uB", 3, 2000, "application/octet-stream")
	a = manifestNode("A", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("cA", 200), shared, ua)
	b = manifestNode("B", oci.MediaTypeDockerManifest, oci.MediaTypeDockerManifest, configNode("cB", 200), shared, ub)
	return a, b, shared
}

// TestImageEvictedAsUnit: the least recently used image goes as a whole,
// manifest first among equals, while the layer it shares with a more
// recently used image stays. Plain LRU would have evicted the shared
// layer first (it is the oldest entry).
func TestImageEvictedAsUnit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b, shared := twoImages()
	c := manifestNode("C", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("cC", 200), blobNode("uC", 4, 2500, "application/octet-stream"))
	max := closureSize(a) + closureSize(b) - shared.size() + 1000
	s := openStore(t, dir, max)
	pull(t, s, a)
	pull(t, s, b)
	all := slices.Concat(closure(a), closure(b)[1:], closure(c))
	checkInvariant(t, s, all)

	pull(t, s, c)
	checkStore(t, s, dir)
	checkInvariant(t, s, all)
	// A, cA, S, uA | B, cB, S, uB | C, cC, uC
	if got := storedOf(s, closure(a)...) + "|" + storedOf(s, closure(b)...) + "|" + storedOf(s, closure(c)...); got != "0010|1111|111" {
		t.Fatalf("stored = %s, want A evicted as a unit except the shared layer", got)
	}
	if st := s.Stats(); st.Evictions != 3 || st.EvictedBytes != a.size()+a.refs[0].size()+a.refs[2].size() {
		t.Fatalf("Stats = %+v, want A, cA and uA evicted", st)
	}
}

// TestIndexEvictedAsUnit: an index goes with its manifests and their
// blobs; a manifest that another stored index also lists stays, whole.
func TestIndexEvictedAsUnit(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	base := blobNode("base", 10, 1500, "application/octet-stream")
	amd := manifestNode("amd64", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("c-amd64", 200), base, blobNode("l-amd64", 11, 1000, "application/octet-stream"))
	arm := manifestNode("arm64", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("c-arm64", 200), base, blobNode("l-arm64", 12, 1000, "application/octet-stream"))
	riscv := manifestNode("riscv", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("c-riscv", 200), blobNode("l-riscv", 13, 1000, "application/octet-stream"))
	// The generically typed index is found by its JSON mediaType.
	i1 := indexNode("I1", oci.MediaTypeImageIndex, "", amd, arm)
	i2 := indexNode("I2", oci.MediaTypeDockerManifestList, oci.MediaTypeDockerManifestList, arm, riscv)
	other := blobNode("other", 14, 3000, "application/octet-stream")
	union := closureSize(i1) + closureSize(i2) - closureSize(arm)
	s := openStore(t, dir, union+other.size()-1)
	pull(t, s, i1)
	pull(t, s, i2)
	all := slices.Concat(closure(i1), closure(i2))
	checkInvariant(t, s, all)
	if got := storedOf(s, all...); strings.Contains(got, "0") {
		t.Fatalf("stored = %s before any eviction", got)
	}

	fetch(t, s, other)
	checkStore(t, s, dir)
	checkInvariant(t, s, all)
	// I1, amd64, c-amd64, base, l-amd64, arm64, c-arm64, l-arm64 | I2, arm64, c-arm64, base, l-arm64, riscv, c-riscv, l-riscv
	if got := storedOf(s, closure(i1)...) + "|" + storedOf(s, closure(i2)...); got != "00010111|11111111" {
		t.Fatalf("stored = %s, want I1 and amd64 evicted, arm64 kept whole for I2", got)
	}
}

// TestUsingContentProtectsImage: reading a config or layer of image A, or
// downloading a missing one, makes A recently used.
func TestUsingContentProtectsImage(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		use  func(t *testing.T, s *Store, a *node)
	}{
		{"get layer", func(t *testing.T, s *Store, a *node) { get(t, s, a.refs[2]) }},
		{"get config", func(t *testing.T, s *Store, a *node) { get(t, s, a.refs[0]) }},
		{"get manifest", func(t *testing.T, s *Store, a *node) { get(t, s, a) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			a, b, shared := twoImages()
			c := manifestNode("C", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("cC", 200), blobNode("uC", 4, 2500, "application/octet-stream"))
			s := openStore(t, dir, closureSize(a)+closureSize(b)-shared.size()+1000)
			pull(t, s, a)
			pull(t, s, b)
			tc.use(t, s, a)
			pull(t, s, c)
			checkStore(t, s, dir)
			if stored(s, b) || !stored(s, a) || !stored(s, c) {
				t.Fatalf("stored A %v, B %v, C %v; want B evicted", stored(s, a), stored(s, b), stored(s, c))
			}
			checkInvariant(t, s, slices.Concat(closure(a), closure(b), closure(c)))
		})
	}
}

// TestDownloadOfImageContentTouchesImage: starting to download content a
// stored manifest references (here: deleted, then fetched again) is using
// that image.
func TestDownloadOfImageContentTouchesImage(t *testing.T) {
	t.Parallel()
	a, b, _ := twoImages()
	s := openStore(t, t.TempDir(), 1<<20)
	pull(t, s, a)
	pull(t, s, b)
	oldest := func() digest.Digest {
		s.mu.Lock()
		defer s.mu.Unlock()
		d, _, _ := s.g.lru.GetOldest()
		return d
	}
	if oldest() != a.dgst {
		t.Fatal("A is not the least recently used image")
	}
	ua := a.refs[2]
	if err := s.Delete(ua.dgst); err != nil {
		t.Fatal(err)
	}
	w, err := s.Create(ua.dgst, ua.size(), "")
	if err != nil {
		t.Fatal(err)
	}
	if oldest() != b.dgst {
		t.Fatal("Create of A's layer did not make A recently used")
	}
	if err := writeChunks(w, ua.data, 500, 0); err != nil {
		t.Fatal(err)
	}
	get(t, s, b)
	if _, err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if oldest() != b.dgst {
		t.Fatal("Commit of A's layer did not make A recently used")
	}
	checkGraph(t, s)
	checkInvariant(t, s, slices.Concat(closure(a), closure(b)))
}

// TestSoleRoot: which image, if any, using a piece of content refreshes.
func TestSoleRoot(t *testing.T) {
	t.Parallel()
	a, b, shared := twoImages()
	common := blobNode("common", 60, 500, "application/octet-stream")
	m1 := manifestNode("m1", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("c1", 200), common)
	m2 := manifestNode("m2", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("c2", 200), common)
	m3 := manifestNode("m3", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("c3", 200), blobNode("l3", 61, 500, ""))
	i1 := indexNode("i1", oci.MediaTypeImageIndex, oci.MediaTypeImageIndex, m1, m2)
	i2 := indexNode("i2", oci.MediaTypeImageIndex, oci.MediaTypeImageIndex, m2, m3)
	s := openStore(t, t.TempDir(), 1<<20)
	for _, n := range []*node{a, b, i1, i2} {
		pull(t, s, n)
	}
	tests := []struct {
		name string
		n    *node
		want *node // nil: none
	}{
		{"config of one image", a.refs[0], a},
		{"layer of one image", a.refs[2], a},
		{"layer shared by two images", shared, nil},
		{"the image itself", a, nil},
		{"manifest of one index", m1, i1},
		{"config under one index", m1.refs[0], i1},
		{"layer shared within one index", common, nil}, // m2 is also in i2
		{"manifest in two indexes", m2, nil},
		{"layer under the second index only", m3.refs[1], i2},
	}
	for _, tc := range tests {
		s.mu.Lock()
		got, ok := s.g.soleRoot(tc.n.dgst)
		s.mu.Unlock()
		want := digest.Digest("")
		if tc.want != nil {
			want = tc.want.dgst
		}
		if ok != (tc.want != nil) || got != want {
			t.Errorf("%s: soleRoot = %s, %v; want %s", tc.name, got, ok, want)
		}
	}
	// Once i2 is gone, the layer m1 and m2 share belongs to i1 alone.
	if err := s.Delete(i2.dgst); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	got, ok := s.g.soleRoot(common.dgst)
	s.mu.Unlock()
	if !ok || got != i1.dgst {
		t.Fatalf("after deleting i2: soleRoot(common) = %s, %v; want i1", got, ok)
	}
}

// TestSharedLayerMovesNoImage: reading a layer two images share says
// nothing about which is in use, so LRU order among them is kept.
func TestSharedLayerMovesNoImage(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b, shared := twoImages()
	c := manifestNode("C", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("cC", 200), blobNode("uC", 4, 2500, "application/octet-stream"))
	s := openStore(t, dir, closureSize(a)+closureSize(b)-shared.size()+1000)
	pull(t, s, a)
	pull(t, s, b)
	get(t, s, shared)
	pull(t, s, c)
	if stored(s, a) || !stored(s, b) || !stored(s, shared) {
		t.Fatalf("stored A %v, B %v, S %v; want A (the LRU image) evicted", stored(s, a), stored(s, b), stored(s, shared))
	}
}

// TestLooseBlobsPlainLRU: blobs no stored manifest references are evicted
// in plain LRU order among the images.
func TestLooseBlobsPlainLRU(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, _, _ := twoImages()
	l1 := blobNode("L1", 20, 1000, "application/octet-stream")
	l2 := blobNode("L2", 21, 1000, "application/octet-stream")
	l3 := blobNode("L3", 22, 1000, "application/octet-stream")
	s := openStore(t, dir, closureSize(a)+2000)
	fetch(t, s, l1)
	pull(t, s, a)
	fetch(t, s, l2)
	// Full. L3 needs room: L1 is the oldest.
	fetch(t, s, l3)
	if got := storedOf(s, l1, l2, l3) + storedOf(s, closure(a)...); got != "0111111" {
		t.Fatalf("stored L1 L2 L3 A... = %s, want L1 evicted", got)
	}
	// Now A is the oldest: the next loose blob takes the whole image.
	l4 := blobNode("L4", 23, 1000, "application/octet-stream")
	fetch(t, s, l4)
	if got := storedOf(s, l2, l3, l4) + storedOf(s, closure(a)...); got != "1110000" {
		t.Fatalf("stored L2 L3 L4 A... = %s, want A evicted whole", got)
	}
	checkStore(t, s, dir)
}

// TestContentBeforeManifestLinked: a blob stored loose before any manifest
// names it is linked when the manifest arrives (and leaves the plain LRU);
// one stored after its manifest is linked as it lands.
func TestContentBeforeManifestLinked(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, _, _ := twoImages()
	cfg, layer := a.refs[0], a.refs[1]
	s := openStore(t, dir, 1<<20)
	fetch(t, s, layer)
	isRoot := func(n *node) bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.g.isRoot(n.dgst) && s.g.lru.Contains(n.dgst)
	}
	if !isRoot(layer) {
		t.Fatal("a loose layer is not an eviction candidate")
	}
	fetch(t, s, a) // the manifest, after one of its layers
	if isRoot(layer) {
		t.Fatal("the layer is still loose after its manifest was stored")
	}
	fetch(t, s, cfg) // after its manifest
	if isRoot(cfg) || !isRoot(a) {
		t.Fatalf("config root %v, manifest root %v", isRoot(cfg), isRoot(a))
	}
	checkGraph(t, s)
	// Deleting the manifest makes its content loose again.
	if err := s.Delete(a.dgst); err != nil {
		t.Fatal(err)
	}
	if !isRoot(layer) || !isRoot(cfg) {
		t.Fatal("content of a deleted manifest is not loose")
	}
	checkGraph(t, s)
}

func TestClassify(t *testing.T) {
	t.Parallel()
	_, l1 := blob(30, 10)
	_, l2 := blob(31, 10)
	_, cfg := blob(32, 10)
	_, self := blob(33, 10)
	doc := func(v any) []byte {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	m := func(mt string, layers ...digest.Digest) []byte {
		tm := testManifest{SchemaVersion: 2, MediaType: mt, Config: &testDescriptor{Digest: cfg}}
		for _, l := range layers {
			tm.Layers = append(tm.Layers, testDescriptor{Digest: l})
		}
		return doc(tm)
	}
	tests := []struct {
		name      string
		mediaType string
		data      []byte
		kind      refKind
		refs      []digest.Digest
	}{
		{"oci manifest", oci.MediaTypeImageManifest, m(oci.MediaTypeImageManifest, l1, l2), kindManifest, []digest.Digest{cfg, l1, l2}},
		{"docker manifest, parameters", oci.MediaTypeDockerManifest + "; charset=utf-8", m(oci.MediaTypeDockerManifest, l1), kindManifest, []digest.Digest{cfg, l1}},
		{"manifest without mediaType field", oci.MediaTypeImageManifest, m("", l1), kindManifest, []digest.Digest{cfg, l1}},
		{"duplicate layers", oci.MediaTypeImageManifest, m(oci.MediaTypeImageManifest, l1, l1, cfg), kindManifest, []digest.Digest{cfg, l1}},
		{"self reference dropped", oci.MediaTypeImageManifest, m(oci.MediaTypeImageManifest, self), kindManifest, []digest.Digest{cfg}},
		{"oci index", oci.MediaTypeImageIndex, doc(testManifest{Manifests: []testDescriptor{{Digest: l1}, {Digest: l2}}}), kindIndex, []digest.Digest{l1, l2}},
		{"docker list", oci.MediaTypeDockerManifestList, doc(testManifest{Manifests: []testDescriptor{{Digest: l2}}}), kindIndex, []digest.Digest{l2}},
		{"index ignores layers", oci.MediaTypeImageIndex, m(oci.MediaTypeImageIndex, l1), kindIndex, nil},
		{"generic type, JSON mediaType", "", m(oci.MediaTypeImageManifest, l1), kindManifest, []digest.Digest{cfg, l1}},
		{"octet-stream, JSON mediaType index", "application/octet-stream", doc(testManifest{MediaType: oci.MediaTypeImageIndex, Manifests: []testDescriptor{{Digest: l1}}}), kindIndex, []digest.Digest{l1}},
		{"generic, leading whitespace", "application/json", append([]byte("\n\t  "), m(oci.MediaTypeDockerManifest, l2)...), kindManifest, []digest.Digest{cfg, l2}},
		{"generic, no mediaType field", "", m("", l1), kindOpaque, nil},
		{"config blob", "application/octet-stream", doc(map[string]any{"architecture": "amd64", "mediaType": "application/vnd.oci.image.config.v1+json"}), kindOpaque, nil},
		{"subject is not a reference", oci.MediaTypeImageManifest, doc(testManifest{MediaType: oci.MediaTypeImageManifest, Config: &testDescriptor{Digest: cfg}, Subject: &testDescriptor{Digest: l2}}), kindManifest, []digest.Digest{cfg}},
		{"invalid digests skipped", oci.MediaTypeImageManifest, []byte(`{"config":{"digest":"sha256:abc"},"layers":[{"digest":"md5:00"},{"digest":"` + string(l1) + `"},{}]}`), kindManifest, []digest.Digest{l1}},
		{"sha512 layer skipped", oci.MediaTypeImageManifest, []byte(`{"layers":[{"digest":"sha512:` + strings.Repeat("ab", 64) + `"}]}`), kindManifest, []digest.Digest{}},
		{"garbage", oci.MediaTypeImageManifest, []byte("\x00\x01 not json"), kindOpaque, nil},
		{"truncated", oci.MediaTypeImageManifest, m(oci.MediaTypeImageManifest, l1)[:40], kindOpaque, nil},
		{"wrong field types", oci.MediaTypeImageManifest, []byte(`{"layers":"sha256:` + l1.Encoded() + `"}`), kindOpaque, nil},
		{"array", oci.MediaTypeImageIndex, []byte(`[1,2]`), kindOpaque, nil},
		{"schema1", "application/vnd.docker.distribution.manifest.v1+prettyjws", m("", l1), kindOpaque, nil},
		{"layer media type", "application/vnd.oci.image.layer.v1.tar+gzip", m(oci.MediaTypeImageManifest, l1), kindOpaque, nil},
		{"gzip blob", "application/octet-stream", []byte{0x1f, 0x8b, 8, 0, 0}, kindOpaque, nil},
		{"whitespace only", "", []byte("   "), kindOpaque, nil},
		{"empty", oci.MediaTypeImageManifest, nil, kindOpaque, nil},
		{"too large", oci.MediaTypeImageManifest, append(m(oci.MediaTypeImageManifest, l1), bytes.Repeat([]byte(" "), maxManifestSize)...), kindOpaque, nil},
		{"largest parsed", oci.MediaTypeImageManifest, func() []byte {
			b := m(oci.MediaTypeImageManifest, l1)
			return append(b, bytes.Repeat([]byte(" "), maxManifestSize-len(b))...)
		}(), kindManifest, []digest.Digest{cfg, l1}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			kind, refs, err := classify(self, tc.mediaType, int64(len(tc.data)), bytes.NewReader(tc.data))
			if err != nil {
				t.Fatal(err)
			}
			want := slices.Clone(tc.refs)
			slices.Sort(want)
			if kind != tc.kind || !slices.Equal(refs, want) {
				t.Fatalf("classify = %v %v, want %v %v", kind, refs, tc.kind, want)
			}
			// The record round-trips.
			k2, r2, err := decodeRefs(encodeRefs(kind, refs))
			if err != nil || k2 != kind || len(r2) != len(refs) || (len(refs) > 0 && !slices.Equal(r2, refs)) {
				t.Fatalf("decodeRefs(encodeRefs) = %v %v %v", k2, r2, err)
			}
		})
	}
}

func TestClassifyReadError(t *testing.T) {
	t.Parallel()
	_, dgst := blob(34, 10)
	_, _, err := classify(dgst, oci.MediaTypeImageManifest, 100, bytes.NewReader([]byte("{}")))
	if err == nil {
		t.Fatal("a short read was not reported")
	}
}

func TestDecodeRefsRejects(t *testing.T) {
	t.Parallel()
	_, d := blob(35, 10)
	good := encodeRefs(kindManifest, []digest.Digest{d})
	for name, b := range map[string][]byte{
		"short":         good[:3],
		"version":       append([]byte{9}, good[1:]...),
		"kind":          append([]byte{1, 7}, good[2:]...),
		"count":         good[:len(good)-1],
		"opaque w/refs": append([]byte{1, 0}, good[2:]...),
	} {
		if _, _, err := decodeRefs(b); err == nil {
			t.Errorf("%s: decodeRefs accepted %x", name, b)
		}
	}
}

// TestParseFailureStoredOpaque: a manifest that does not parse is stored,
// served and evicted like any loose blob.
func TestParseFailureStoredOpaque(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openStore(t, dir, 3000)
	garbage := []byte(`{"layers": [ this is not json`)
	gd := digest.FromBytes(garbage)
	if err := s.Put(gd, oci.MediaTypeImageManifest, garbage); err != nil {
		t.Fatal(err)
	}
	s.mu.Lock()
	e := s.g.items[gd]
	kind, refs, classified, root := e.kind, e.refs, e.classified, s.g.lru.Contains(gd)
	s.mu.Unlock()
	if kind != kindOpaque || refs != nil || !classified || !root {
		t.Fatalf("garbage manifest: kind %v refs %v classified %v candidate %v", kind, refs, classified, root)
	}
	readEntry(t, s, gd, garbage)
	filler := blobNode("filler", 40, 3000-len(garbage), "application/octet-stream")
	fetch(t, s, filler)
	fetch(t, s, blobNode("next", 41, 10, "application/octet-stream"))
	if _, err := s.Stat(gd); !errors.Is(err, ErrNotFound) || !stored(s, filler) {
		t.Fatalf("garbage manifest: Stat %v, filler stored %v; want the manifest evicted alone (plain LRU)", err, stored(s, filler))
	}
	checkStore(t, s, dir)
}

// refRecords reads the store's ref/ records.
func refRecords(t testing.TB, s *Store) map[digest.Digest]refRecord {
	t.Helper()
	recs, bad, err := loadRefs(s.db)
	if err != nil || len(bad) > 0 {
		t.Fatalf("loadRefs: %v, %d bad", err, len(bad))
	}
	return recs
}

// TestReferencesSurviveRestart: the references and the image grouping are
// the same after Close and Open; eviction after the restart still takes
// whole images.
func TestReferencesSurviveRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b, shared := twoImages()
	c := manifestNode("C", oci.MediaTypeImageManifest, oci.MediaTypeImageManifest, configNode("cC", 200), blobNode("uC", 4, 2500, "application/octet-stream"))
	max := closureSize(a) + closureSize(b) - shared.size() + 1000
	s := openStore(t, dir, max)
	pull(t, s, a)
	pull(t, s, b)
	recs := refRecords(t, s)
	if r := recs[a.dgst]; r.kind != kindManifest || len(r.refs) != 3 {
		t.Fatalf("ref record of A = %+v", r)
	}
	if r, ok := recs[shared.dgst]; !ok || r.kind != kindOpaque {
		t.Fatalf("ref record of a small generic layer = %+v, %v; want opaque", r, ok)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir, max)
	checkStore(t, s, dir)
	s.mu.Lock()
	refs, sharedParents := s.g.items[a.dgst].refs, slices.Clone(s.g.parents[shared.dgst])
	s.mu.Unlock()
	want := []digest.Digest{a.refs[0].dgst, a.refs[1].dgst, a.refs[2].dgst}
	slices.Sort(want)
	slices.Sort(sharedParents)
	wantParents := []digest.Digest{a.dgst, b.dgst}
	slices.Sort(wantParents)
	if !slices.Equal(refs, want) || !slices.Equal(sharedParents, wantParents) {
		t.Fatalf("after restart: A refs %v (want %v), parents of S %v (want %v)", refs, want, sharedParents, wantParents)
	}
	pull(t, s, c)
	if got := storedOf(s, closure(a)...) + "|" + storedOf(s, closure(b)...); got != "0010|1111" {
		t.Fatalf("stored after restart and eviction = %s, want A evicted as a unit", got)
	}
	checkStore(t, s, dir)
}

// TestOlderStoreClassifiedAtOpen: a store written before references were
// recorded (no ref/ records) is read once at Open; stale ref/ records of
// entries an older version removed are dropped; a lowered budget at Open
// evicts whole images.
func TestOlderStoreClassifiedAtOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	a, b, shared := twoImages()
	s := openStore(t, dir, 1<<20)
	pull(t, s, a)
	pull(t, s, b)
	get(t, s, a) // A is now the more recent image
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	// What an older version leaves: no ref/ records, and one for an entry
	// it removed.
	db, err := openIndex(filepath.Join(dir, indexDirName), s.log, lockSettle)
	if err != nil {
		t.Fatal(err)
	}
	_, gone := blob(50, 10)
	if err := db.DropPrefix([]byte(refKeyPrefix)); err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(txn *badger.Txn) error {
		return txn.Set(refKey(gone), encodeRefs(kindOpaque, nil))
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// B no longer fits beside A.
	s = openStore(t, dir, closureSize(a)+closureSize(b)-shared.size()-1)
	checkStore(t, s, dir)
	if got := storedOf(s, closure(a)...) + "|" + storedOf(s, closure(b)...); got != "1111|0010" {
		t.Fatalf("stored = %s, want B (the LRU image) evicted whole at Open", got)
	}
	recs := refRecords(t, s)
	if _, ok := recs[gone]; ok {
		t.Fatal("stale ref record kept")
	}
	if r := recs[a.dgst]; r.kind != kindManifest || len(r.refs) != 3 {
		t.Fatalf("A not classified at Open: %+v", r)
	}
	if st := s.Stats(); st.Evictions != 3 {
		t.Fatalf("Stats = %+v, want B, cB and uB evicted", st)
	}
}

// imagePool is a set of synthetic images for the property tests: layers
// (some shared), manifests of one config and 1–3 layers, indexes of two
// manifests, and loose blobs no manifest references.
type imagePool struct {
	roots []*node // what a pull starts from: manifests and indexes
	loose []*node // blobs pulled on their own: pool layers and unrelated blobs
	all   []*node
}

func newImagePool(rng *rand.Rand, seed uint64) *imagePool {
	p := &imagePool{}
	generic := []string{"application/octet-stream", "", "application/vnd.oci.image.layer.v1.tar+gzip"}
	var layers []*node
	for i := range 14 {
		layers = append(layers, blobNode(fmt.Sprintf("layer%d", i), seed<<8+uint64(i), 300+rng.IntN(2700), generic[rng.IntN(len(generic))]))
	}
	var manifests []*node
	for i := range 10 {
		cfg := configNode(fmt.Sprintf("config%d", i), 150+rng.IntN(400))
		ls := make([]*node, 1+rng.IntN(3))
		for j := range ls {
			ls[j] = layers[rng.IntN(len(layers))] // shared between images at random
		}
		mt, stored := oci.MediaTypeImageManifest, oci.MediaTypeImageManifest
		switch rng.IntN(3) {
		case 1:
			mt, stored = oci.MediaTypeDockerManifest, oci.MediaTypeDockerManifest
		case 2:
			stored = "" // found by the JSON mediaType
		}
		manifests = append(manifests, manifestNode(fmt.Sprintf("image%d", i), mt, stored, cfg, ls...))
	}
	p.roots = append(p.roots, manifests...)
	for i := range 4 {
		a := rng.IntN(len(manifests))
		b := (a + 1 + rng.IntN(len(manifests)-1)) % len(manifests)
		p.roots = append(p.roots, indexNode(fmt.Sprintf("index%d", i), oci.MediaTypeImageIndex, oci.MediaTypeImageIndex, manifests[a], manifests[b]))
	}
	p.loose = append(p.loose, layers...)
	for i := range 6 {
		p.loose = append(p.loose, blobNode(fmt.Sprintf("loose%d", i), seed<<8+100+uint64(i), 200+rng.IntN(2800), "application/octet-stream"))
	}
	garbage := []byte(fmt.Sprintf(`{"mediaType":%q,"layers":[{"digest":"sha256:%s"}`, oci.MediaTypeImageManifest, strings.Repeat("0", 64)))
	p.loose = append(p.loose, &node{name: "garbage-manifest", data: garbage, dgst: digest.FromBytes(garbage), mediaType: oci.MediaTypeImageManifest, kind: kindOpaque})
	seen := map[digest.Digest]bool{}
	for _, r := range slices.Concat(p.roots, p.loose) {
		for _, n := range closure(r) {
			if !seen[n.dgst] {
				seen[n.dgst] = true
				p.all = append(p.all, n)
			}
		}
	}
	return p
}

// graphSnapshot is the references of every stored entry.
func graphSnapshot(s *Store) map[digest.Digest][]digest.Digest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[digest.Digest][]digest.Digest, len(s.g.items))
	for d, e := range s.g.items {
		out[d] = e.refs
	}
	return out
}

// TestImageEvictionProperty drives random pulls of whole images, loose
// blobs, reads, pins and unpins, purges and restarts (some with another
// budget) under a small MaxSize and checks after every step: the bound
// (only pinned content alone may pass it, after a restart with a lowered
// budget), the accounting against the files and the index, the graph and
// the pinned set, the invariant (every stored manifest or index has
// everything it references: pullable whole with upstream down), that
// every pinned image is stored whole and intact, that an image that fits
// beside the pins is stored whole right after it was pulled, and that a
// purge removes exactly what it reports, nothing pinned.
func TestImageEvictionProperty(t *testing.T) {
	t.Parallel()
	steps := 200
	if testing.Short() {
		steps = 50
	}
	for _, seed := range []uint64{1, 2, 3, 20250101, 0xdecafbad} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			t.Parallel()
			rng := rand.New(rand.NewPCG(seed, 0x5eed))
			pool := newImagePool(rng, seed)
			const baseMax = 12_000
			dir := t.TempDir()
			s := openStore(t, dir, baseMax)
			var counts [10]int
			var total Stats // summed over the runs between restarts
			addStats := func(st Stats) {
				total.Commits += st.Commits
				total.Evictions += st.Evictions
				total.EvictedBytes += st.EvictedBytes
				total.Hits += st.Hits
				total.Purged += st.Purged
				total.Discarded += st.Discarded
			}
			pinned := map[digest.Digest]*node{} // the pins, as the test made them
			// Manifests that may be incomplete: pulled when one of their
			// blobs did not fit beside the pins, so it was not kept.
			mayLack := map[digest.Digest]bool{}
			var stepTimes []time.Time
			for step := range steps {
				stepTimes = append(stepTimes, time.Now())
				var what string
				switch op := rng.IntN(100); {
				case op < 45:
					r := pool.roots[rng.IntN(len(pool.roots))]
					what = "pull " + r.name
					counts[0]++
					room := s.MaxSize() - s.Stats().PinnedBytes
					fits := closureSize(r) <= room
					for _, n := range closure(r) {
						if slices.ContainsFunc(n.refs, func(c *node) bool { return c.size() > room }) {
							mayLack[n.dgst] = true
						}
					}
					pull(t, s, r)
					if fits {
						for _, n := range closure(r) {
							if !stored(s, n) {
								t.Fatalf("step %d (%s): %s not stored after the pull of an image that fits", step, what, n.name)
							}
						}
					}
				case op < 60:
					n := pool.loose[rng.IntN(len(pool.loose))]
					what = "pull loose " + n.name
					counts[1]++
					fetch(t, s, n)
				case op < 74:
					n := pool.all[rng.IntN(len(pool.all))]
					what = "get " + n.name
					counts[2]++
					get(t, s, n)
				case op < 80:
					r := pool.roots[rng.IntN(len(pool.roots))]
					what = "pin " + r.name
					counts[4]++
					whole := !strings.Contains(storedOf(s, closure(r)...), "0")
					err := s.Pin(r.dgst, r.name)
					switch {
					case whole && err != nil:
						t.Fatalf("step %d (%s): Pin of a whole image: %v", step, what, err)
					case !whole && !errors.Is(err, ErrIncomplete):
						t.Fatalf("step %d (%s): Pin of an incomplete image: %v, want ErrIncomplete", step, what, err)
					case whole:
						pinned[r.dgst] = r
					}
				case op < 84:
					r := pool.roots[rng.IntN(len(pool.roots))]
					what = "unpin " + r.name
					counts[5]++
					err := s.Unpin(r.dgst)
					if _, ok := pinned[r.dgst]; ok != (err == nil) || !ok && !errors.Is(err, ErrNotFound) {
						t.Fatalf("step %d (%s): Unpin = %v, pinned %v", step, what, err, ok)
					}
					delete(pinned, r.dgst)
				case op < 89:
					// An operator purges an image or a loose blob (not
					// content of a stored image, which would leave it
					// incomplete as Delete does).
					cands := slices.Concat(pool.roots, pool.loose)
					n := cands[rng.IntN(len(cands))]
					s.mu.Lock()
					isStored := s.g.has(n.dgst)
					root, isPinned := s.g.isRoot(n.dgst), s.g.isPinned(n.dgst)
					s.mu.Unlock()
					if !root {
						continue
					}
					what = "purge " + n.name
					counts[6]++
					before := storedSet(t, s)
					removed, err := s.Purge(n.dgst)
					switch {
					case !isStored:
						if !errors.Is(err, ErrNotFound) {
							t.Fatalf("step %d (%s): %v, want ErrNotFound", step, what, err)
						}
					case isPinned:
						if !errors.Is(err, ErrPinned) {
							t.Fatalf("step %d (%s): %v, want ErrPinned", step, what, err)
						}
					case err != nil:
						t.Fatal(err)
					}
					checkRemoved(t, s, before, removed, closure(n))
				case op < 92:
					cutoff := time.Now().Add(time.Hour)
					if rng.IntN(4) > 0 {
						cutoff = stepTimes[rng.IntN(len(stepTimes))]
					}
					what = "purge unused before " + cutoff.Format(time.RFC3339Nano)
					counts[7]++
					before := storedSet(t, s)
					removed, err := s.PurgeUnused(cutoff)
					if err != nil {
						t.Fatal(err)
					}
					checkRemoved(t, s, before, removed, pool.all)
					s.mu.Lock()
					for _, d := range s.g.lru.Keys() {
						if la := timeFromNanos(s.g.items[d].lastAccess); la.Before(cutoff) {
							t.Errorf("step %d (%s): %s, used %s, left", step, what, d, la.Format(time.RFC3339Nano))
						}
					}
					s.mu.Unlock()
				default:
					max := []int64{baseMax, baseMax, baseMax * 3 / 4, baseMax * 5 / 4, baseMax / 4}[rng.IntN(5)]
					what = fmt.Sprintf("restart with MaxSize %d", max)
					counts[3]++
					before := graphSnapshot(s)
					lowered := max < s.MaxSize()
					addStats(s.Stats())
					if err := s.Close(); err != nil {
						t.Fatal(err)
					}
					s = openStore(t, dir, max)
					if after := graphSnapshot(s); !lowered && !mapsEqual(before, after) {
						t.Fatalf("step %d (%s): the reference graph changed across the restart", step, what)
					}
					if s.Stats().Evictions > 0 {
						counts[8]++
					}
					if s.Size() > s.MaxSize() {
						counts[9]++
					}
				}
				if t.Failed() {
					t.Fatalf("step %d (%s) failed", step, what)
				}
				checkStore(t, s, dir)
				checkInvariantExcept(t, s, pool.all, mayLack)
				pins, err := s.Pins()
				if err != nil {
					t.Fatal(err)
				}
				if len(pins) != len(pinned) {
					t.Fatalf("step %d (%s): %d pins, the test made %d", step, what, len(pins), len(pinned))
				}
				for _, pi := range pins {
					n, ok := pinned[pi.Digest]
					if !ok || pi.Bytes != closureSize(n) {
						t.Fatalf("step %d (%s): pin %+v, made %v, want %d bytes", step, what, pi, ok, closureSize(n))
					}
					checkWhole(t, s, n)
				}
			}
			addStats(s.Stats())
			t.Logf("seed %d: %d pulls, %d loose blobs, %d gets, %d pins, %d unpins, %d purges, %d purges of unused, %d restarts (%d evicting at Open, %d over budget from pins); "+
				"%d commits, %d hits, %d evictions (%d bytes), %d purged, %d discarded",
				seed, counts[0], counts[1], counts[2], counts[4], counts[5], counts[6], counts[7], counts[3], counts[8], counts[9],
				total.Commits, total.Hits, total.Evictions, total.EvictedBytes, total.Purged, total.Discarded)
			if total.Evictions == 0 {
				t.Fatal("nothing was evicted: the budget is too large for the test")
			}
		})
	}
}

// storedSet returns the digests stored now.
func storedSet(t testing.TB, s *Store) map[digest.Digest]bool {
	t.Helper()
	entries, err := s.Entries()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[digest.Digest]bool, len(entries))
	for _, e := range entries {
		out[e.Digest] = true
	}
	return out
}

// checkRemoved checks a purge: what it reports was stored, was not
// pinned, is among allowed and is gone; everything else stored before
// still is.
func checkRemoved(t testing.TB, s *Store, before map[digest.Digest]bool, removed []Info, allowed []*node) {
	t.Helper()
	ok := map[digest.Digest]bool{}
	for _, n := range allowed {
		ok[n.dgst] = true
	}
	gone := map[digest.Digest]bool{}
	for _, r := range removed {
		if !before[r.Digest] || r.Pinned || !ok[r.Digest] || gone[r.Digest] {
			t.Fatalf("purge removed %+v: stored before %v, allowed %v, twice %v", r, before[r.Digest], ok[r.Digest], gone[r.Digest])
		}
		gone[r.Digest] = true
	}
	after := storedSet(t, s)
	for d := range before {
		if after[d] == gone[d] {
			t.Fatalf("%s: stored after the purge %v, reported removed %v", d, after[d], gone[d])
		}
	}
	if len(after) != len(before)-len(gone) {
		t.Fatalf("%d stored after a purge of %d out of %d", len(after), len(gone), len(before))
	}
}

func mapsEqual(a, b map[digest.Digest][]digest.Digest) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !slices.Equal(v, w) {
			return false
		}
	}
	return true
}

// TestImageEvictionConcurrent pulls images from several goroutines at once
// under a small budget, with the access-time flusher running: Size never
// passes MaxSize, and once quiet the graph is consistent and every stored
// manifest is complete (each pull stores its content after its manifest,
// and content a stored manifest references only goes with it).
func TestImageEvictionConcurrent(t *testing.T) {
	t.Parallel()
	const maxSize = 15_000
	dir := t.TempDir()
	s, err := Open(Options{Dir: dir, MaxSize: maxSize, AccessFlushInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	pool := newImagePool(rand.New(rand.NewPCG(7, 7)), 7)
	stop := make(chan struct{})
	watch := make(chan error, 1)
	go func() {
		defer close(watch)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if size := s.Size(); size > maxSize {
				watch <- fmt.Errorf("Size %d > MaxSize %d", size, maxSize)
				return
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(g), 99))
			for range 25 {
				var err error
				if rng.IntN(4) == 0 {
					err = fetchErr(s, pool.loose[rng.IntN(len(pool.loose))])
				} else {
					err = pullErr(s, pool.roots[rng.IntN(len(pool.roots))])
				}
				if err != nil {
					errs <- fmt.Errorf("goroutine %d: %w", g, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	close(stop)
	if err := <-watch; err != nil {
		t.Fatal(err)
	}
	checkStore(t, s, dir)
	checkInvariant(t, s, pool.all)
	if st := s.Stats(); st.Evictions == 0 {
		t.Fatalf("no evictions: %+v", st)
	}
}
