package fakeecr

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

// Counters is a snapshot of what the fake has been asked since it started or
// since ResetCounters. Registry counts include requests answered with 404 or
// a fault, but not those refused for want of a valid token.
type Counters struct {
	// TokenRequests counts calls to the token API (with Options.Bearer, to
	// the registry token endpoint), whatever their outcome; TokensIssued
	// counts those that returned a token.
	TokenRequests, TokensIssued int64

	// ManifestGetByTag, ManifestGetByDigest and ManifestHead count manifest
	// requests (HEAD by tag or digest).
	ManifestGetByTag, ManifestGetByDigest, ManifestHead int64
	// BlobGet counts blob GETs on the registry (answered with 307 to S3);
	// BlobHead counts blob HEADs.
	BlobGet, BlobHead int64
	// TagsList counts tags/list requests; Referrers counts referrers
	// requests.
	TagsList, Referrers int64
	// Unauthorized counts 401 answers (no or unknown token); Denied counts
	// 403 answers (expired token).
	Unauthorized, Denied int64

	// S3Get and S3RangeGet count S3 GETs with a valid presigned URL, per blob,
	// without and with a Range header S3 honoured (416s included). Never nil.
	S3Get, S3RangeGet map[digest.Digest]int64
	// S3Head counts S3 HEADs with a valid presigned URL.
	S3Head int64
	// S3BytesSent counts body bytes S3 wrote, error bodies included.
	S3BytesSent int64
	// S3BlobBytes counts the body bytes S3 wrote per blob, cut-short
	// bodies included (what a download cost). Never nil.
	S3BlobBytes map[digest.Digest]int64
	// S3AuthRejected counts S3 requests refused with 400 InvalidArgument
	// because they carried an Authorization header.
	S3AuthRejected int64
	// S3SignatureRejected counts S3 requests refused with 403: no, a bad or
	// an expired presigned signature.
	S3SignatureRejected int64

	// Faults counts requests a Fault acted on; Dropped counts connections
	// dropped by FaultDown or SetDown.
	Faults, Dropped int64

	// Requests is the log of the latest requests (Options.RequestLogSize),
	// oldest first.
	Requests []Request
}

// Request is one request as the fake saw and answered it.
type Request struct {
	Time     time.Time // arrival, by the wall clock
	Endpoint Endpoint
	Method   string
	Path     string
	Query    string // raw query
	Accept   string // Accept values, joined with ", " when there are several
	Range    string
	// Authorization tells whether the request carried an Authorization header.
	Authorization bool
	// Referer is the request's Referer header ("" when it had none): a
	// client following redirects may send one hop's URL to the next.
	Referer string
	// UserAgent is the request's User-Agent header ("" when it had none).
	UserAgent string
	// Status is the status answered, 0 when the connection was dropped (a
	// truncated body keeps its 200 or 206).
	Status int
	// Bytes is the number of body bytes written.
	Bytes int64
}

// counters is the live form of Counters; per-blob S3 counts live on the blobs.
type counters struct {
	tokenRequests, tokensIssued                         atomic.Int64
	manifestGetByTag, manifestGetByDigest, manifestHead atomic.Int64
	blobGet, blobHead, tagsList, referrers              atomic.Int64
	unauthorized, denied                                atomic.Int64
	s3Head, s3BytesSent, s3AuthRejected                 atomic.Int64
	s3SignatureRejected                                 atomic.Int64
	faults, dropped                                     atomic.Int64
}

// Counters returns a snapshot of the counters and the request log.
func (s *Server) Counters() Counters {
	c := &s.ctr
	out := Counters{
		TokenRequests:       c.tokenRequests.Load(),
		TokensIssued:        c.tokensIssued.Load(),
		ManifestGetByTag:    c.manifestGetByTag.Load(),
		ManifestGetByDigest: c.manifestGetByDigest.Load(),
		ManifestHead:        c.manifestHead.Load(),
		BlobGet:             c.blobGet.Load(),
		BlobHead:            c.blobHead.Load(),
		TagsList:            c.tagsList.Load(),
		Referrers:           c.referrers.Load(),
		Unauthorized:        c.unauthorized.Load(),
		Denied:              c.denied.Load(),
		S3Get:               make(map[digest.Digest]int64),
		S3RangeGet:          make(map[digest.Digest]int64),
		S3Head:              c.s3Head.Load(),
		S3BytesSent:         c.s3BytesSent.Load(),
		S3BlobBytes:         make(map[digest.Digest]int64),
		S3AuthRejected:      c.s3AuthRejected.Load(),
		S3SignatureRejected: c.s3SignatureRejected.Load(),
		Faults:              c.faults.Load(),
		Dropped:             c.dropped.Load(),
		Requests:            s.reqLog.snapshot(),
	}
	s.store.mu.RLock()
	for dgst, b := range s.store.blobs {
		if n := b.s3Full.Load(); n > 0 {
			out.S3Get[dgst] = n
		}
		if n := b.s3Ranged.Load(); n > 0 {
			out.S3RangeGet[dgst] = n
		}
		if n := b.s3Bytes.Load(); n > 0 {
			out.S3BlobBytes[dgst] = n
		}
	}
	s.store.mu.RUnlock()
	return out
}

// ResetCounters zeroes every counter and empties the request log.
func (s *Server) ResetCounters() {
	c := &s.ctr
	for _, v := range []*atomic.Int64{
		&c.tokenRequests, &c.tokensIssued,
		&c.manifestGetByTag, &c.manifestGetByDigest, &c.manifestHead,
		&c.blobGet, &c.blobHead, &c.tagsList, &c.referrers, &c.unauthorized, &c.denied,
		&c.s3Head, &c.s3BytesSent, &c.s3AuthRejected, &c.s3SignatureRejected,
		&c.faults, &c.dropped,
	} {
		v.Store(0)
	}
	s.store.mu.RLock()
	for _, b := range s.store.blobs {
		b.s3Full.Store(0)
		b.s3Ranged.Store(0)
		b.s3Bytes.Store(0)
	}
	s.store.mu.RUnlock()
	s.reqLog.reset()
}

// requestLog is a ring of the latest requests.
type requestLog struct {
	mu   sync.Mutex
	buf  []Request // fixed size; empty when the log is off
	next int       // where the next request goes
	full bool      // buf has wrapped
}

func (l *requestLog) add(r Request) {
	if len(l.buf) == 0 {
		return
	}
	l.mu.Lock()
	l.buf[l.next] = r
	l.next++
	if l.next == len(l.buf) {
		l.next, l.full = 0, true
	}
	l.mu.Unlock()
}

// snapshot returns the logged requests, oldest first.
func (l *requestLog) snapshot() []Request {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.full {
		return append([]Request(nil), l.buf[:l.next]...)
	}
	out := make([]Request, 0, len(l.buf))
	out = append(out, l.buf[l.next:]...)
	return append(out, l.buf[:l.next]...)
}

func (l *requestLog) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	clear(l.buf)
	l.next, l.full = 0, false
}
