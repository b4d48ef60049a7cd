// Package proxy is the pull-through flow behind the registry handler.
//
// Content by digest is immutable, so the local store is asked first: a hit
// is served from disk with no upstream request. A miss starts one download
// per digest (a flight) on a context of its own, so a client hanging up
// does not abort it. The download writes into a cache.Writer, which hashes
// the bytes and, only when they match the digest, commits them to the
// store. Every client asking for that digest while it downloads, the first
// one included, reads from the flight's temp file as bytes land; the
// writer holds the last byte back until the digest is verified, so no
// client ever receives a complete body with wrong bytes.
//
// Tags are mutable: every manifest request by tag asks upstream which
// digest the tag names, and the body comes from the store when it holds
// that digest. Requests for one tag (and the same manifest types) that
// arrive while its lookup is under way join it rather than send their
// own: one upstream request answers them all (taglookup.go, on the
// reusable lookups table of lookups.go, which runs each lookup on a
// context of its own). Each answer is recorded; while upstream cannot be
// reached, a recent enough record is served instead (Options.StaleIfError),
// and with Options.TagFreshness a record younger than that is served
// without asking at all.
//
// The referrers API is handled like tags (referrers.go): always asked
// upstream, each answer recorded per repository, subject, artifactType
// filter and page and served stale on the same conditions, the manifests
// it lists linked to the repository. The mirror applies the artifactType
// filter when upstream did not, and answers from the tag schema (the
// sha256-<hex> tag's index, or an empty list) when upstream has no
// referrers API. Served stale, a filtered first page with no record of
// its own is the whole list's record, filtered; records made for the
// main upstream (an import into a stopped mirror) count as this
// upstream's, as links do.
//
// What a request asks of upstream travels as one target value (target.go:
// repository, reference, kind, Accept) from Blob and Manifest through a
// download's start and fill (flight.go) to its resumptions (resume.go).
//
// A download cut short is resumed with Range where it stopped (resume.go),
// every upstream body read shares one token bucket (ratelimit.go), and
// pushes pass through to ECR, their content admitted as it goes by
// (push.go: one uploadCall per upload request, a function per method).
// A Proxy serves one upstream registry; a mirror with several upstreams
// runs one Proxy per upstream over the same store: content is shared by
// digest, while links and tag records are kept per upstream host
// (Options.Upstream), those written without a host belonging to the
// main upstream (Options.MainUpstream). Proxies given one Shared share
// the download cap, the token bucket and the downloads in flight, so a
// digest asked for through two upstreams is downloaded once.
// With a shared blob tier (Options.SharedStore, sharedtier.go), a local
// miss reads the tier before upstream, in the same flight and through the
// same cache.Writer, so the digest is verified before anything is kept;
// an object that does not match is deleted from the tier and the digest
// downloaded again from upstream (refetch). A repository
// not linked to the digest is confirmed upstream first, as for local
// content. What is downloaded from upstream is written to the tier after
// commit, in the background, a bounded number at once. When the tier
// also implements SharedMeta (sharedmeta.go), new links, tag records and
// referrers records go there too (the same answer at most once per
// sharedRecordInterval), and are read only when ECR cannot answer: a
// link there confirms a repository whose HEAD got no answer, and a
// record there is a stale answer under StaleIfError, so a replica with
// an empty store serves offline what the cluster has seen, a HEAD by
// digest included (headOrTiers: fetched through a flight, as a GET).
// With peers (Options.Peers, peertier.go), a miss the shared tier lacks
// is asked of the digest's owner among the replicas next, in the same
// flight and writer; what the owner sends is linked (its proxy confirmed
// the repository) and not written to the shared tier (the owner does
// that). An owner that fails is passed by: the shared tier again, then
// upstream; a body cut short goes on from upstream by Range. A request
// marked WithPeerRequest (the owner's side) never asks a peer itself, nor
// joins a download that is asking one, so peers cannot loop or wait on
// each other. With a shared tier or peers, a GET by tag whose
// manifest is not stored fetches it by the digest the HEAD named, through
// a flight (taglookup.go byDigest), so the cluster downloads it once.
// Each manifest answered is told to Options.UsedManifest, which records
// its use in the tier for the sweep that keeps the tier under its bound.
// The proxy reaches its store only through the Store interface
// (store.go: Blobs, Links, Tags), which *cache.Store implements.
// Upload sessions' staging files and the tee that copies a body as
// upstream reads it live in uploads.go.
package proxy
