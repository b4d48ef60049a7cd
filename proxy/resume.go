package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/ecr-mirror/ecr-mirror/cache"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// Resuming a download.
//
// A blob's upstream body that stops short (a reset, an unexpected EOF, or
// no byte for the stall timeout) is resumed with "Range: bytes=<received>-",
// up to Options.Retries times per download, with exponential backoff and
// jitter. Each resumption asks the registry again, so ECR answers with a
// fresh redirect: a presigned URL that has expired since the first request
// is never reused. The bytes go on into the same cache.Writer (same temp
// file, same running hash), so every client following the download sees
// one uninterrupted body.
//
// An answer is only used if it continues exactly where the download
// stopped: a 206 whose Content-Range starts at the offset and runs to the
// end of an object of the known size. Anything else (a 200 that ignores
// the Range, a 206 elsewhere) could only be spliced in if nothing was
// written yet; then the download restarts from zero, otherwise it fails,
// since clients already have bytes. A digest mismatch at the end is never
// resumed: Commit fails the download, as without resumption.

// Backoff between resumptions: the first waits about resumeBackoff, each
// next twice as long, up to resumeBackoffMax.
const (
	resumeBackoff    = 100 * time.Millisecond
	resumeBackoffMax = 5 * time.Second
)

// resumePolicy says how often, and how patiently, downloads are resumed.
type resumePolicy struct {
	retries             int // resumptions per download; 0: none
	backoff, maxBackoff time.Duration
}

func newResumePolicy(retries int) resumePolicy {
	return resumePolicy{retries: max(retries, 0), backoff: resumeBackoff, maxBackoff: resumeBackoffMax}
}

// delay is the wait before resumption n (from 1): the backoff doubled n-1
// times, capped, of which a random half ("equal jitter"), so downloads cut
// by the same outage do not come back in step.
func (r resumePolicy) delay(n int) time.Duration {
	d := r.backoff
	for i := 1; i < n && d < r.maxBackoff; i++ {
		d *= 2
	}
	if d = min(d, r.maxBackoff); d <= 0 {
		return 0
	}
	return d/2 + rand.N(d/2+1)
}

// attempt is one upstream response whose body feeds a download.
type attempt struct {
	resp   *http.Response
	ctx    context.Context         // the request's; canceled with errStalled on a stall
	cancel context.CancelCauseFunc // cancels ctx
	stall  *stallReader            // on resp.Body
	body   io.Reader               // what is copied: stall, possibly limited
}

// close ends the attempt's request.
func (a *attempt) close() {
	a.stall.stop()
	a.resp.Body.Close()
	a.cancel(nil)
}

// copyResuming copies a download's upstream body into w through the
// bandwidth cap, resuming it when it stops short, then commits w. It ends
// every attempt it is given or makes.
func (p *Proxy) copyResuming(w *cache.Writer, a *attempt, t target) error {
	buf := p.bufs.Get().(*[]byte)
	defer p.bufs.Put(buf)
	chunk := (*buf)[:min(len(*buf), p.limit.chunk)]
	resumes := 0
	for a != nil { // until the body ends, or nothing is missing
		n, upErr, storeErr := p.copyAttempt(w, a, chunk)
		if cause := context.Cause(a.ctx); upErr != nil && errors.Is(cause, errStalled) {
			upErr = cause
		}
		a.close()
		p.stats.UpstreamBytes.Add(n)
		if storeErr != nil { // the store failed (disk full, ...)
			w.Abort(storeErr)
			return &registry.Error{Code: registry.CodeUnavailable,
				Message: fmt.Sprintf("the mirror could not store %s", w.Digest()), Internal: storeErr.Error()}
		}
		if upErr == nil {
			break
		}
		err := transportError(http.MethodGet, t.path(), upErr)
		if t.kind != kindBlob || p.bg.Err() != nil {
			// Manifests come whole from the registry, and are small.
			w.Abort(err)
			return err
		}
		if a, err = p.resumeDownload(w, t, &resumes, err); err != nil {
			w.Abort(err)
			return err
		}
	}
	// A digest mismatch fails here, and is never resumed: bytes already
	// went out to clients.
	if _, err := w.Commit(); err != nil {
		return err
	}
	return nil
}

// copyAttempt copies one upstream body into w, reading at most len(buf)
// bytes at once and taking each read from the bandwidth cap. It returns
// the bytes copied and why it stopped: both errors nil at the body's end,
// upErr when upstream failed, storeErr when w did.
func (p *Proxy) copyAttempt(w *cache.Writer, a *attempt, buf []byte) (n int64, upErr, storeErr error) {
	for {
		m, rerr := a.body.Read(buf)
		if m > 0 {
			if _, err := w.Write(buf[:m]); err != nil {
				return n, nil, err
			}
			n += int64(m)
			// After the write, so followers get these bytes while the
			// cap holds back the next ones.
			if err := p.limit.wait(a.ctx, m); err != nil && rerr == nil {
				rerr = err
			}
		}
		switch {
		case rerr == io.EOF:
			return n, nil, nil
		case rerr != nil:
			return n, rerr, nil
		}
	}
}

// resumeDownload asks upstream for the rest of a download cut short, as
// often as the policy allows, and returns the attempt that continues it (nil
// when nothing is missing), or the error that ends it. cause is why the
// download stopped; resumes counts the download's resumptions so far.
func (p *Proxy) resumeDownload(w *cache.Writer, t target, resumes *int, cause error) (*attempt, error) {
	for {
		offset, size := w.Written(), w.Size()
		if size >= 0 && offset == size {
			return nil, nil // cut after the last byte: Commit verifies it
		}
		if *resumes >= p.resume.retries {
			if p.resume.retries > 0 {
				cause = fmt.Errorf("gave up after %d resumptions: %w", *resumes, cause)
			}
			return nil, cause
		}
		*resumes++
		p.stats.Resumes.Add(1)
		wait := p.resume.delay(*resumes)
		p.log.Warn("upstream body cut short; resuming", "digest", w.Digest(), "path", t.path(),
			"offset", offset, "size", size, "resumption", *resumes, "retries", p.resume.retries,
			"backoff", wait, "error", cause)
		if err := sleepCtx(p.bg, wait); err != nil {
			return nil, err
		}
		a, retry, err := p.reopen(t, offset, size, true)
		if err == nil {
			return a, nil
		}
		if !retry {
			return nil, err
		}
		cause = err
	}
}

// reopen requests blob t again from offset (with a Range header when
// ranged), through the registry, and checks that the answer continues the
// download. retry tells whether a failure is worth another resumption:
// upstream unreachable, failing or throttling is; an answer at the wrong
// offset once bytes are written, or a refusal (403, 404), is not.
func (p *Proxy) reopen(t target, offset, size int64, ranged bool) (a *attempt, retry bool, err error) {
	ctx, cancel := context.WithCancelCause(p.bg)
	// The stall clock covers the wait for the headers too: a resumption
	// that gets no answer is just another stall.
	stall := newStallWatch(p.stallClock, p.stallTimeout, cancel)
	h := t.accept.Clone()
	if h == nil {
		h = http.Header{}
	}
	if ranged {
		h.Set("Range", fmt.Sprintf("bytes=%d-", offset))
	}
	resp, err := p.up.do(ctx, http.MethodGet, t.path(), h, kindBlob, http.StatusOK, http.StatusPartialContent)
	if err != nil {
		stall.stop()
		if c := context.Cause(ctx); errors.Is(c, errStalled) {
			err = transportError(http.MethodGet, t.path(), c)
		}
		cancel(nil)
		return nil, transient(err), err
	}
	stall.r = resp.Body
	a = &attempt{resp: resp, ctx: ctx, cancel: cancel, stall: stall, body: stall}
	bad := continues(resp, offset, size)
	if bad == nil {
		return a, false, nil
	}
	a.close()
	if offset == 0 && ranged {
		// Nothing was written, so nothing reached a client: start over
		// without a Range (a 200 with the whole body is what is wanted).
		p.log.Warn("upstream answered a resumption from byte 0 with another range; restarting", "path", t.path(), "answer", bad)
		return p.reopen(t, 0, size, false)
	}
	return nil, false, registry.Errorf(registry.CodeUnavailable,
		"upstream did not resume %s at byte %d: %v", t.path(), offset, bad).WithStatus(http.StatusBadGateway)
}

// continues checks that resp carries a blob of size bytes (-1: unknown)
// from offset to its end: a 206 with a matching Content-Range, or, from 0
// only, a 200 with the whole blob.
func continues(resp *http.Response, offset, size int64) error {
	switch resp.StatusCode {
	case http.StatusOK:
		if offset != 0 {
			return errors.New("200 with the whole blob, ignoring the Range")
		}
		if size >= 0 && resp.ContentLength != size {
			return fmt.Errorf("200 with %d bytes, not %d", resp.ContentLength, size)
		}
		return nil
	case http.StatusPartialContent:
		cr := resp.Header.Get("Content-Range")
		span, total, err := parseContentRange(cr)
		switch {
		case err != nil:
			return fmt.Errorf("206: %w", err)
		case span.Start != offset:
			return fmt.Errorf("206 from byte %d (Content-Range %q)", span.Start, cr)
		case size >= 0 && total != size:
			return fmt.Errorf("206 of an object of %d bytes, not %d (Content-Range %q)", total, size, cr)
		case total >= 0 && span.Start+span.Length != total:
			return fmt.Errorf("206 that stops short of the end (Content-Range %q)", cr)
		case resp.ContentLength >= 0 && resp.ContentLength != span.Length:
			return fmt.Errorf("206 of %d bytes with Content-Range %q", resp.ContentLength, cr)
		}
		return nil
	}
	return fmt.Errorf("status %d", resp.StatusCode)
}

// transient reports whether an upstream failure may pass: ECR or S3
// unreachable, too slow, failing (5xx) or throttling (429).
func transient(err error) bool {
	var rerr *registry.Error
	if !errors.As(err, &rerr) {
		return false
	}
	return rerr.Code == registry.CodeUnavailable || rerr.Code == registry.CodeTooManyRequests
}

// sleepCtx waits d, or returns ctx's error if it ends first.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
