// Package sharedstore is the shared blob tier: content by digest kept in
// an S3-compatible bucket (AWS S3, Ceph RGW, MinIO, versitygw...) that
// several mirror replicas read and write, so that a digest one replica
// downloaded from ECR is read from the bucket by the others.
//
// Objects are named by digest under an optional prefix:
//
//	<prefix>/blobs/sha256/<hex>   content, written once (put.go)
//	<prefix>/used/<hex>           empty: a replica served manifest <hex>
//	                              (its LastModified is the last use)
//	<prefix>/pins/<hex>           {"names":[...]}: image <hex> is pinned
//
// An object is written once, from content already verified and committed
// to a replica's local store: a conditional create (If-None-Match: *), so
// that two replicas writing the same digest never both write it (the
// second gets 412, which is success: the content is there), multipart
// above a part size, each part read from the local file as it is sent,
// never the whole blob in memory. Readers verify what they read (the
// proxy tees it through a cache.Writer, which checks the digest) and
// delete an object that does not match.
//
// Beside the blobs, the metadata a replica needs to serve offline
// (meta.go), small objects under the same prefix:
//
//	<prefix>/links/<registry>/<repo>/sha256/<hex>      empty: ECR holds the digest in repo
//	<prefix>/tags/<registry>/<repo>/<tag>/<hex>        JSON tag record; hex: sha256 of the normalised Accept
//	<prefix>/referrers/<registry>/<repo>/sha256/<subject hex>/<hex>
//	                                                   JSON referrers record; hex: sha256 of filter and page
//
// Every name in a key is validated first (registry host, the
// distribution spec's repository and tag grammar: no "..", no leading
// "/"), so no input names a key outside its place. Links are written
// once (conditional create); tag and referrers records are replaced by
// a newer answer, never by an older one written late (read first: not
// atomic, but a write that waited in a queue cannot roll a tag back).
// What is read back is untrusted: read up to a bound, decoded strictly
// (no unknown field, nothing after the record), validated, and
// otherwise refused with ErrMalformed. The proxy reads
// them only when ECR cannot answer (proxy/sharedmeta.go).
//
// The bucket's size is bounded by a sweep (sweep.go, its policy in the
// pure function plan of policy.go): when the blobs exceed the bound, it
// deletes the blobs no manifest references, oldest first, then whole
// images least recently used first (the newest of their manifests'
// used/ records and objects), never a pinned image nor an object younger
// than a grace period. It reads each manifest once (manifests.go), those
// with use records or pins first, and remembers what it references:
// digests never change, and what a known manifest names as its config or
// a layer is never read. Each of its requests is bounded
// (SweepOptions.RequestTimeout): a bucket that never answers fails the
// sweep, which deletes nothing then. Replicas record
// use through Usage (usage.go), at most once per manifest per interval,
// in the background. Records are in records.go.
//
// The store knows neither HTTP clients nor the local cache: the proxy
// reaches it through a small interface (proxy.SharedBlobs). Errors name
// the bucket and key, never credentials.
package sharedstore
