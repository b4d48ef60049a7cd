package proxy

import (
	"net/http"

	"github.com/opencontainers/go-digest"
)

// kind is what an upstream request is for. It picks the code of a 404
// without an OCI body, the media type assumed when upstream names none,
// and UpstreamEvent.Kind.
type kind string

// The kinds of upstream requests.
const (
	kindBlob      kind = "blob"
	kindManifest  kind = "manifest"
	kindTags      kind = "tags"
	kindReferrers kind = "referrers"
	kindUpload    kind = "upload"
)

// target is content asked of upstream: a blob or a manifest, by
// reference, in a repository, with the Accept header it is asked with.
// One value travels from the request through a download's start, fill
// and resumptions.
type target struct {
	repo   string      // the upstream repository
	ref    string      // a digest, or a manifest's tag
	kind   kind        // kindBlob or kindManifest
	accept http.Header // Accept to send; nil: none (blobs)
	// upstreamOnly skips the shared tier: the download after a corrupt
	// shared object (refetch) must not read it again.
	upstreamOnly bool
	// noPeers skips the peers: a peer's request (WithPeerRequest) is
	// answered from here, never passed on to another peer.
	noPeers bool
}

// blobTarget is repo's blob dgst.
func blobTarget(repo string, dgst digest.Digest) target {
	return target{repo: repo, ref: dgst.String(), kind: kindBlob}
}

// manifestTarget is repo's manifest ref (a digest or a tag), asked with
// accept.
func manifestTarget(repo, ref string, accept http.Header) target {
	return target{repo: repo, ref: ref, kind: kindManifest, accept: accept}
}

// path is t's request path below /v2/: <repo>/blobs/<ref> or
// <repo>/manifests/<ref>.
func (t target) path() string {
	if t.kind == kindManifest {
		return t.repo + "/manifests/" + t.ref
	}
	return t.repo + "/blobs/" + t.ref
}
