// Package registry speaks the OCI distribution API: pulls, and pushes
// passed to a backend that implements Pusher.
//
// It parses and validates every request (repository names, tags, digests,
// Range headers), dispatches it to a Backend, and writes the answer: content
// with the right Content-Type, Content-Length, Docker-Content-Digest, ETag and
// Range handling, or an OCI error body. It knows nothing about where content
// comes from; package proxy implements Backend.
package registry
