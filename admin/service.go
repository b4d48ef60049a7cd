package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Cache is what the cache commands do, on a running mirror (Client) or on
// a stopped mirror's store (Service).
type Cache interface {
	// List describes the store: entries, tags seen, pins and totals.
	List(ctx context.Context) (*Listing, error)
	// Verify rehashes every entry; with repair it removes the bad ones.
	// progress, when set, is called with the bytes done and the total.
	Verify(ctx context.Context, repair bool, progress Progress) (*VerifyReport, error)
	// Pin keeps an image whole in the store and never evicts it.
	Pin(ctx context.Context, image string, opts PinOptions) (*PinReport, error)
	// Unpin makes a pinned image evictable again.
	Unpin(ctx context.Context, image string) (*PinReport, error)
	// Purge removes content while the mirror serves.
	Purge(ctx context.Context, req PurgeRequest) (*PurgeReport, error)
	// Import admits an OCI image-layout archive read from r, verified.
	Import(ctx context.Context, r io.Reader) (*ImportReport, error)
}

// Progress is told the work done so far and the whole, in bytes.
type Progress func(done, total int64)

// Fetcher pulls an image whole (every platform; with withReferrers, its
// referrers too) through the mirror into its store.
type Fetcher func(ctx context.Context, ref registry.Reference, withReferrers bool) (Fetched, error)

// Fetched is what a Fetcher pulled.
type Fetched struct {
	Digest digest.Digest // of the image's top manifest or index
	Size   int64         // the bytes of all its content, referrers' included
	// Referrers are the digests of the image's referrers (signatures,
	// SBOMs...) and of theirs, which nothing in the image references.
	Referrers []digest.Digest
}

// Service runs the cache operations on a store.
type Service struct {
	store    *cache.Store
	fetch    Fetcher
	registry string // the upstream imported images belong to
	now      func() time.Time
	shared   SharedPins // nil: no shared tier
}

// SharedPins are the pins of the shared blob tier (SHARED_STORE), which
// its sweep never deletes; *sharedstore.Store implements it.
type SharedPins interface {
	// PutPin records that the image dgst is pinned, under names.
	PutPin(ctx context.Context, dgst digest.Digest, names []string) error
	// DeletePin removes the pin of dgst.
	DeletePin(ctx context.Context, dgst digest.Digest) error
}

// NewService returns a Service on store. fetch, when set (the running
// mirror), lets Pin fetch what an image lacks and resolve tags upstream;
// without it (a stopped mirror) Pin takes what the store holds.
// registry is the host of the upstream registry imported images belong
// to; "" when unknown, which the mirror's main upstream accepts.
func NewService(store *cache.Store, fetch Fetcher, registry string) *Service {
	return &Service{store: store, fetch: fetch, registry: registry, now: time.Now}
}

var _ Cache = (*Service)(nil)

// Listing is the answer of List.
type Listing struct {
	Entries   []Entry     `json:"entries"`
	Tags      []Tag       `json:"tags"`
	Referrers []Referrers `json:"referrers"`
	Pins      []Pin       `json:"pins"`
	Totals    Totals      `json:"totals"`
}

// Entry is one stored manifest, index or blob.
type Entry struct {
	Digest     digest.Digest `json:"digest"`
	Kind       string        `json:"kind"` // index, manifest or blob
	MediaType  string        `json:"mediaType"`
	Size       int64         `json:"size"`
	LastAccess time.Time     `json:"lastAccess"`
	Pinned     bool          `json:"pinned"`
}

// Tag is the last answer recorded for a tag: by ECR, or by an import.
type Tag struct {
	// Registry is the upstream's host; "" for the main upstream's records
	// on a stopped mirror that does not know its host.
	Registry   string        `json:"registry"`
	Repository string        `json:"repository"`
	Tag        string        `json:"tag"`
	Digest     digest.Digest `json:"digest"`
	MediaType  string        `json:"mediaType"`
	Checked    time.Time     `json:"checked"`
	Stored     bool          `json:"stored"` // the manifest is in the store
}

// Referrers is the last referrers answer recorded for a subject in a
// repository, with one filter and page.
type Referrers struct {
	Repository   string        `json:"repository"` // registry/name, or name for the main upstream
	Subject      digest.Digest `json:"subject"`
	ArtifactType string        `json:"artifactType,omitempty"`
	Page         string        `json:"page,omitempty"`
	Manifests    int           `json:"manifests"` // how many referrers it lists
	Fallback     bool          `json:"fallback"`  // built from the tag schema
	Checked      time.Time     `json:"checked"`
}

// Pin is a pinned image.
type Pin struct {
	Digest digest.Digest `json:"digest"`
	Names  []string      `json:"names"`
	Bytes  int64         `json:"bytes"`
	Pinned time.Time     `json:"pinned"`
}

// Totals sums up a Listing.
type Totals struct {
	Entries     int   `json:"entries"`
	Manifests   int   `json:"manifests"` // image manifests and indexes
	Blobs       int   `json:"blobs"`
	Bytes       int64 `json:"bytes"`
	PinnedBytes int64 `json:"pinnedBytes"`
	MaxBytes    int64 `json:"maxBytes"`
}

// List implements Cache.
func (s *Service) List(ctx context.Context) (*Listing, error) {
	infos, err := s.store.Entries()
	if err != nil {
		return nil, err
	}
	tags, err := s.store.Tags()
	if err != nil {
		return nil, err
	}
	refs, err := s.store.Referrers()
	if err != nil {
		return nil, err
	}
	pins, err := s.store.Pins()
	if err != nil {
		return nil, err
	}
	out := &Listing{Entries: []Entry{}, Tags: []Tag{}, Referrers: []Referrers{}, Pins: []Pin{}, Totals: Totals{MaxBytes: s.store.MaxSize()}}
	for _, r := range refs {
		out.Referrers = append(out.Referrers, Referrers{Repository: r.Key.Repo.String(), Subject: r.Key.Subject,
			ArtifactType: r.Key.ArtifactType, Page: r.Key.Page, Manifests: r.Manifests, Fallback: r.Fallback, Checked: r.Checked.UTC()})
	}
	stored := make(map[digest.Digest]bool, len(infos))
	for _, in := range infos {
		stored[in.Digest] = true
		out.Entries = append(out.Entries, Entry{Digest: in.Digest, Kind: in.Kind, MediaType: in.MediaType,
			Size: in.Size, LastAccess: in.LastAccess.UTC(), Pinned: in.Pinned})
		out.Totals.Entries++
		out.Totals.Bytes += in.Size
		if in.Kind == "blob" {
			out.Totals.Blobs++
		} else {
			out.Totals.Manifests++
		}
		if in.Pinned {
			out.Totals.PinnedBytes += in.Size
		}
	}
	seen := map[string]bool{}
	for _, t := range tags {
		// One line per tag and manifest: records for several Accept
		// values that name the same manifest say the same thing.
		reg := cmp.Or(t.Registry, s.registry) // no host: the main upstream's
		key := reg + "/" + t.Repo + ":" + t.Tag + "@" + t.Digest.String()
		if seen[key] {
			continue
		}
		seen[key] = true
		out.Tags = append(out.Tags, Tag{Registry: reg, Repository: t.Repo, Tag: t.Tag, Digest: t.Digest, MediaType: t.MediaType,
			Checked: t.Checked.UTC(), Stored: stored[t.Digest]})
	}
	for _, p := range pins {
		out.Pins = append(out.Pins, Pin{Digest: p.Digest, Names: p.Names, Bytes: p.Bytes, Pinned: p.Pinned.UTC()})
	}
	return out, nil
}

// VerifyReport is the answer of Verify.
type VerifyReport struct {
	Entries  int           `json:"entries"`
	Bytes    int64         `json:"bytes"`
	Bad      []BadEntry    `json:"bad"`
	Removed  []string      `json:"removed"`
	Duration time.Duration `json:"duration"`
}

// BadEntry is an entry whose file does not hash to its digest.
type BadEntry struct {
	Digest digest.Digest `json:"digest"`
	Error  string        `json:"error"`
}

// Verify implements Cache.
func (s *Service) Verify(ctx context.Context, repair bool, progress Progress) (*VerifyReport, error) {
	infos, err := s.store.Entries()
	if err != nil {
		return nil, err
	}
	var total int64
	for _, in := range infos {
		total += in.Size
	}
	start := s.now()
	rep := &VerifyReport{Bad: []BadEntry{}, Removed: []string{}}
	var done int64
	for _, in := range infos {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("verify interrupted after %d of %d entries: %w", rep.Entries, len(infos), err)
		}
		err := s.store.Verify(in.Digest)
		done += in.Size
		if progress != nil {
			progress(done, total)
		}
		if errors.Is(err, cache.ErrNotFound) {
			continue // gone meanwhile: evicted or purged
		}
		rep.Entries++
		rep.Bytes += in.Size
		if err == nil {
			continue
		}
		rep.Bad = append(rep.Bad, BadEntry{Digest: in.Digest, Error: err.Error()})
		if !repair {
			continue
		}
		if err := s.store.Delete(in.Digest); err != nil && !errors.Is(err, cache.ErrNotFound) {
			return rep, fmt.Errorf("removing bad entry %s: %w", in.Digest, err)
		}
		rep.Removed = append(rep.Removed, in.Digest.String())
	}
	rep.Duration = s.now().Sub(start)
	return rep, nil
}

// PinOptions are the options of Pin.
type PinOptions struct {
	// Referrers pins the image's referrers too, each with a pin of its
	// own named ReferrerPinName(image): a referrer names its subject, the
	// subject does not reference it, so the image's pin does not hold
	// it. It needs a running mirror, which lists them upstream.
	Referrers bool `json:"referrers,omitempty"`
}

// ReferrerPinName is the name of the pins of image's referrers
// (PinOptions.Referrers). Unpinning image unpins them, unless another
// pinned image still names them.
func ReferrerPinName(image string) string { return referrerPinPrefix + image }

const referrerPinPrefix = "referrer of "

// PinReport is the answer of Pin and Unpin.
type PinReport struct {
	Image  string        `json:"image"`
	Digest digest.Digest `json:"digest"`
	Bytes  int64         `json:"bytes"`
	// Fetched says the running mirror pulled the image before pinning.
	Fetched bool `json:"fetched"`
	// Referrers are the referrers pinned (or unpinned) with the image.
	Referrers []digest.Digest `json:"referrers,omitempty"`
}

// Pin implements Cache. On a running mirror the image is pulled whole
// first (its tag revalidated upstream); on a stopped one it must already
// be whole in the store, and a tag is resolved from the store's records.
// With opts.Referrers (a running mirror only) its referrers are pulled
// and pinned too.
func (s *Service) Pin(ctx context.Context, image string, opts PinOptions) (*PinReport, error) {
	ref, err := registry.ParseReference(image)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", image, err)
	}
	if opts.Referrers && s.fetch == nil {
		return nil, fmt.Errorf("pin %s with its referrers: only a running mirror can, as it lists them upstream", ref)
	}
	rep := &PinReport{Image: ref.String()}
	var f Fetched
	for attempt := 0; ; attempt++ {
		discarded := s.store.Stats().Discarded
		if s.fetch != nil {
			if f, err = s.fetch(ctx, ref, opts.Referrers); err != nil {
				return nil, fmt.Errorf("pin %s: fetching it: %w", ref, err)
			}
			rep.Fetched = true
		} else if f.Digest, err = s.resolve(ref); err != nil {
			return nil, fmt.Errorf("pin %s: %w", ref, err)
		}
		rep.Digest = f.Digest
		err = s.pinImage(ctx, f, ref.String(), discarded)
		// Content can be evicted between the fetch and the pin: the pin
		// then finds the image incomplete, and a second fetch completes it.
		if errors.Is(err, cache.ErrIncomplete) && s.fetch != nil && attempt == 0 {
			continue
		}
		break
	}
	if err != nil {
		return nil, s.pinError(ref, f.Size, err)
	}
	rep.Bytes = s.pinnedBytes(rep.Digest)
	rep.Referrers = f.Referrers
	if err := s.sharePins(ctx, append([]digest.Digest{rep.Digest}, f.Referrers...)); err != nil {
		return rep, fmt.Errorf("pin %s: pinned in this mirror's cache, but not in the shared store (pin again): %w", ref, err)
	}
	return rep, nil
}

// sharePins writes the pins of dgsts, with their names, to the shared
// tier, if there is one.
func (s *Service) sharePins(ctx context.Context, dgsts []digest.Digest) error {
	if s.shared == nil {
		return nil
	}
	pins, err := s.store.Pins()
	if err != nil {
		return err
	}
	for _, d := range dgsts {
		var names []string
		if i := slices.IndexFunc(pins, func(p cache.PinInfo) bool { return p.Digest == d }); i >= 0 {
			names = pins[i].Names
		}
		if err := s.shared.PutPin(ctx, d, names); err != nil {
			return err
		}
	}
	return nil
}

// unsharePins removes the shared tier's pins of dgsts, if there is one.
func (s *Service) unsharePins(ctx context.Context, dgsts []digest.Digest) error {
	if s.shared == nil {
		return nil
	}
	var errs []error
	for _, d := range dgsts {
		errs = append(errs, s.shared.DeletePin(ctx, d))
	}
	return errors.Join(errs...)
}

// pinImage pins the image f names as name, then each of its referrers
// as ReferrerPinName(name); discarded is the store's Stats().Discarded
// before the fetch.
func (s *Service) pinImage(ctx context.Context, f Fetched, name string, discarded int64) error {
	if err := s.pinFetched(ctx, f.Digest, name, discarded); err != nil {
		return err
	}
	for _, d := range f.Referrers {
		if err := s.pinFetched(ctx, d, ReferrerPinName(name), discarded); err != nil {
			return fmt.Errorf("referrer %s: %w", d, err)
		}
	}
	return nil
}

// pinError is the error of a Pin of ref, size bytes, that failed with err.
func (s *Service) pinError(ref registry.Reference, size int64, err error) error {
	switch {
	case errors.Is(err, cache.ErrIncomplete) && s.fetch != nil:
		// Fetched twice and still incomplete: the store could not keep
		// it beside the pinned content.
		if pinned := s.store.Stats().PinnedBytes; size+pinned > s.store.MaxSize() {
			return fmt.Errorf("pin %s: its %d bytes and the %d bytes pinned already exceed CACHE_MAX_SIZE (%d bytes): %w",
				ref, size, pinned, s.store.MaxSize(), cache.ErrPinTooLarge)
		}
		return fmt.Errorf("pin %s: %w", ref, err)
	case errors.Is(err, cache.ErrIncomplete):
		return fmt.Errorf("pin %s: %w; pin on the running mirror fetches what is missing", ref, err)
	}
	return fmt.Errorf("pin %s: %w", ref, err)
}

// commitWait bounds how long Pin waits for fetched content to be
// committed: a client gets the last byte of a download once it is
// verified, and the store indexes it a moment later.
const commitWait = 5 * time.Second

// pinFetched pins dgst; after a fetch it waits for the downloads just
// read to land in the store, unless the store has discarded content
// since the fetch began (its Stats().Discarded was discarded): content
// that did not fit beside the pins never lands, and the caller says so
// at once instead of after commitWait.
func (s *Service) pinFetched(ctx context.Context, dgst digest.Digest, name string, discarded int64) error {
	deadline := s.now().Add(commitWait)
	for wait := 5 * time.Millisecond; ; wait = min(2*wait, 200*time.Millisecond) {
		err := s.store.Pin(dgst, name)
		if !errors.Is(err, cache.ErrIncomplete) || s.fetch == nil || s.now().After(deadline) ||
			s.store.Stats().Discarded > discarded {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(wait):
		}
	}
}

// Unpin implements Cache. A tag names the pin made under that name, or
// else the image its newest record names.
func (s *Service) Unpin(ctx context.Context, image string) (*PinReport, error) {
	ref, err := registry.ParseReference(image)
	if err != nil {
		return nil, fmt.Errorf("image %q: %w", image, err)
	}
	dgst := ref.Dgst
	if dgst == "" {
		pins, err := s.store.Pins()
		if err != nil {
			return nil, err
		}
		for _, p := range pins {
			if slices.Contains(p.Names, ref.String()) {
				dgst = p.Digest
			}
		}
		if dgst == "" {
			if dgst, err = s.resolve(ref); err != nil {
				return nil, fmt.Errorf("unpin %s: %w", ref, err)
			}
		}
	}
	rep := &PinReport{Image: ref.String(), Digest: dgst, Bytes: s.pinnedBytes(dgst)}
	if err := s.store.Unpin(dgst); err != nil {
		if errors.Is(err, cache.ErrNotFound) {
			return nil, fmt.Errorf("unpin %s: %s is not pinned", ref, dgst)
		}
		return nil, fmt.Errorf("unpin %s: %w", ref, err)
	}
	if rep.Referrers, err = s.unpinOrphanReferrers(); err != nil {
		return rep, fmt.Errorf("unpin %s: its referrers: %w", ref, err)
	}
	if err := s.unsharePins(ctx, append([]digest.Digest{dgst}, rep.Referrers...)); err != nil {
		return rep, fmt.Errorf("unpin %s: unpinned in this mirror's cache, but still pinned in the shared store (unpin again): %w", ref, err)
	}
	return rep, nil
}

// unpinOrphanReferrers unpins the pins made only as referrers of images
// (ReferrerPinName) none of which is pinned any more, and returns their
// digests.
func (s *Service) unpinOrphanReferrers() ([]digest.Digest, error) {
	pins, err := s.store.Pins()
	if err != nil {
		return nil, err
	}
	orphans := orphanReferrers(pins)
	for i, d := range orphans {
		if err := s.store.Unpin(d); err != nil && !errors.Is(err, cache.ErrNotFound) {
			return orphans[:i], err
		}
	}
	return orphans, nil
}

// orphanReferrers picks, of pins, those whose every name is
// ReferrerPinName of an image no pin is named by any more.
func orphanReferrers(pins []cache.PinInfo) []digest.Digest {
	pinned := map[string]bool{}
	for _, p := range pins {
		for _, n := range p.Names {
			if !strings.HasPrefix(n, referrerPinPrefix) {
				pinned[n] = true
			}
		}
	}
	var out []digest.Digest
	for _, p := range pins {
		if len(p.Names) == 0 || slices.ContainsFunc(p.Names, func(n string) bool {
			image, ok := strings.CutPrefix(n, referrerPinPrefix)
			return !ok || pinned[image]
		}) {
			continue // pinned for itself, or as a referrer of a pinned image
		}
		out = append(out, p.Digest)
	}
	return out
}

func (s *Service) pinnedBytes(dgst digest.Digest) int64 {
	pins, err := s.store.Pins()
	if err != nil {
		return 0
	}
	for _, p := range pins {
		if p.Digest == dgst {
			return p.Bytes
		}
	}
	return 0
}

// resolve returns the digest ref names in the store: its digest, or the
// manifest its tag's newest record names, of any upstream, or of the one
// ref's name starts with (ghcr.io/acme/tool:v1).
func (s *Service) resolve(ref registry.Reference) (digest.Digest, error) {
	if ref.Dgst != "" {
		return ref.Dgst, nil
	}
	tags, err := s.store.Tags()
	if err != nil {
		return "", err
	}
	var newest cache.TagInfo
	for _, t := range tags {
		named := t.Repo == ref.Name || t.Registry != "" && t.Registry+"/"+t.Repo == ref.Name
		if named && t.Tag == ref.Tag && t.Checked.After(newest.Checked) {
			newest = t
		}
	}
	if newest.Digest == "" {
		return "", fmt.Errorf("the cache has no record of tag %s: name the image by digest", ref)
	}
	return newest.Digest, nil
}

// PurgeRequest says what Purge removes: exactly one of its fields is set.
type PurgeRequest struct {
	// Image is repo:tag, repo@sha256:<hex> or a bare sha256:<hex>.
	Image string `json:"image,omitempty"`
	// OlderThan removes the images not used for this long.
	OlderThan time.Duration `json:"olderThan,omitempty"`
	// All removes every image that is not pinned.
	All bool `json:"all,omitempty"`
}

// PurgeReport is the answer of Purge.
type PurgeReport struct {
	Removed []Entry `json:"removed"`
	Bytes   int64   `json:"bytes"`
	// TagsForgotten counts the tag records dropped because the manifest
	// they name is gone.
	TagsForgotten int `json:"tagsForgotten"`
	// ReferrersForgotten counts the referrers records dropped with their
	// subject (with --all, every one whose subject is not kept).
	ReferrersForgotten int `json:"referrersForgotten"`
	// PinnedKept counts the pinned images left in place.
	PinnedKept int `json:"pinnedKept"`
}

// Purge implements Cache. Removing an entry unlinks its file: a client
// already reading it reads it whole.
func (s *Service) Purge(ctx context.Context, req PurgeRequest) (*PurgeReport, error) {
	set := 0
	for _, b := range []bool{req.Image != "", req.OlderThan != 0, req.All} {
		if b {
			set++
		}
	}
	if set != 1 {
		return nil, errors.New("purge: give exactly one of an image, a digest, an age or all")
	}
	if req.OlderThan < 0 {
		return nil, fmt.Errorf("purge: age %v is negative", req.OlderThan)
	}
	var removed []cache.Info
	var err error
	switch {
	case req.Image != "":
		removed, err = s.purgeImage(req.Image)
	case req.OlderThan > 0:
		removed, err = s.store.PurgeUnused(s.now().Add(-req.OlderThan))
	default:
		// Later than any access time the store can hold now.
		removed, err = s.store.PurgeUnused(s.now().Add(time.Hour))
	}
	rep := &PurgeReport{Removed: []Entry{}}
	for _, in := range removed {
		rep.Removed = append(rep.Removed, Entry{Digest: in.Digest, Kind: in.Kind, MediaType: in.MediaType, Size: in.Size, LastAccess: in.LastAccess.UTC()})
		rep.Bytes += in.Size
	}
	if err != nil {
		return rep, err
	}
	if rep.TagsForgotten, err = s.forgetDanglingTags(); err != nil {
		return rep, err
	}
	if rep.ReferrersForgotten, err = s.forgetReferrers(removed, req.All); err != nil {
		return rep, err
	}
	pins, err := s.store.Pins()
	if err != nil {
		return rep, err
	}
	rep.PinnedKept = len(pins)
	return rep, nil
}

func (s *Service) purgeImage(image string) ([]cache.Info, error) {
	var ref registry.Reference
	if strings.HasPrefix(image, string(digest.SHA256)+":") {
		d, err := registry.ParseDigest(image)
		if err != nil {
			return nil, fmt.Errorf("purge: %w", err)
		}
		ref = registry.Reference{Dgst: d}
	} else {
		var err error
		if ref, err = registry.ParseReference(image); err != nil {
			return nil, fmt.Errorf("purge: image %q: %w", image, err)
		}
	}
	dgst, err := s.resolve(ref)
	if err != nil {
		return nil, fmt.Errorf("purge %s: %w", image, err)
	}
	removed, err := s.store.Purge(dgst)
	switch {
	case errors.Is(err, cache.ErrPinned):
		return nil, fmt.Errorf("purge %s: %w: unpin it first", image, err)
	case errors.Is(err, cache.ErrNotFound):
		return nil, fmt.Errorf("purge %s: %s is not in the cache", image, dgst)
	case err != nil:
		return nil, fmt.Errorf("purge %s: %w", image, err)
	}
	return removed, nil
}

// forgetReferrers drops the referrers records of the subjects removed,
// and with all those of every subject not in the store any more: they
// went with their image.
func (s *Service) forgetReferrers(removed []cache.Info, all bool) (int, error) {
	gone := make(map[digest.Digest]bool, len(removed))
	for _, in := range removed {
		gone[in.Digest] = true
	}
	return s.store.DeleteReferrers(func(subject digest.Digest) bool {
		if gone[subject] {
			return true
		}
		_, err := s.store.Stat(subject)
		return all && errors.Is(err, cache.ErrNotFound)
	})
}

// forgetDanglingTags drops the records of the tags none of whose
// recorded manifests is stored any more: they could serve nothing while
// ECR is down.
func (s *Service) forgetDanglingTags() (int, error) {
	tags, err := s.store.Tags()
	if err != nil {
		return 0, err
	}
	type tagName struct {
		repo cache.Repo
		tag  string
	}
	live := map[tagName]bool{}
	for _, t := range tags {
		k := tagName{cache.Repo{Registry: t.Registry, Name: t.Repo}, t.Tag}
		if _, err := s.store.Stat(t.Digest); err == nil {
			live[k] = true
		} else if !live[k] {
			live[k] = false
		}
	}
	n := 0
	for k, ok := range live {
		if ok {
			continue
		}
		m, err := s.store.DeleteTags(k.repo, k.tag)
		if err != nil {
			return n, err
		}
		n += m
	}
	return n, nil
}
