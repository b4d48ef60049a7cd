// Package registry speaks the OCI distribution API: pulls, tag lists, the
// referrers API for a backend that implements ReferrersLister, and pushes
// passed to a backend that implements Pusher.
//
// It parses and validates every request (repository names, tags, digests,
// Range headers), dispatches it to a Backend, and writes the answer: content
// with the right Content-Type, Content-Length, Docker-Content-Digest, ETag and
// Range handling, or an OCI error body. A blob URL answers with the same
// headers whether the backend had the blob or fetched it (Accept-Ranges
// included), and a Range under an If-Range other than the blob's ETag is
// dropped before the backend sees it, so hit and miss agree; P2P engines
// in front of the mirror rely on both (README "Behind a P2P engine"). A read of a manifest reference that
// is neither a tag nor a digest is 404 MANIFEST_UNKNOWN, as the spec's
// conformance suite expects. It knows nothing about where content comes
// from; package proxy implements Backend.
//
// A mirror may have several upstreams (namespace.go): Namespaces.Resolve
// says which upstream and repository a request's name and registry (ns=,
// or the listener's) mean, and the handler sends it to that upstream's
// Backend (WithUpstreams; the default upstream's is NewHandler's). A
// listener of one ECR pull-through prefix (WithRepositoryPrefix) serves
// names that come with no registry from under that prefix (UnderPrefix).
// Only a backend that implements Pusher takes pushes.
package registry
