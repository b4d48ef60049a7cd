package fakeecr

import (
	"context"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"
)

// FaultMode is a way for the fake to misbehave.
type FaultMode int

// Fault modes. "Body" modes act on response bodies: S3's blob bodies and the
// registry's manifest bodies.
const (
	// FaultNone is no fault; SetFault with it clears a fault.
	FaultNone FaultMode = iota
	// FaultTruncate (body) sends the full Content-Length header but only
	// Fault.After bytes of the body, then (after Fault.Delay, and once
	// Fault.Hold is closed) closes the connection. Since the
	// body is the range asked for, a ranged request is cut Fault.After
	// bytes past its start: After a quarter of a blob with Times 3 cuts a
	// client that resumes where it stopped at 25%, 50% and 75%.
	FaultTruncate
	// FaultCorrupt (body) sends a body of the right length with its middle
	// byte flipped.
	FaultCorrupt
	// FaultDown closes the connection without answering (a reset), on the
	// registry and on S3 unless Fault.Endpoint narrows it.
	FaultDown
	// FaultSlow (body) waits Fault.Delay before the headers, then sends the
	// body at Fault.Rate bytes per second.
	FaultSlow
	// FaultStatus answers Fault.Status with the endpoint's kind of error
	// body: the registry's by default, S3's with Endpoint EndpointS3.
	// With Fault.Delay or Fault.Hold set it first waits for them, HEADs
	// included (an answer that fails after the clients have joined).
	FaultStatus
	// FaultStall (body) sends the headers and Fault.After bytes of the
	// body, then nothing more: the connection stays open until the client
	// gives up (then it is closed), or, with Fault.Delay or Fault.Hold
	// set, until Delay has passed or Hold is closed, when the rest of the
	// body follows (a pause).
	FaultStall
	// FaultIgnoreRange (S3, ranged GETs only) answers a Range request with
	// 200 and the whole object, as a server that does not do ranges.
	FaultIgnoreRange
	// FaultWrongRange (S3, ranged GETs only) answers a Range request with a
	// 206 for another range: one starting Fault.After bytes (default 1)
	// before the start asked for, or after it when the start is too near
	// the object's beginning. Its Content-Range says which range it is.
	FaultWrongRange
	// FaultRedirect answers 307 Temporary Redirect to Fault.Location
	// instead of the content: on the registry by default (a blob GET
	// then never reaches S3), on S3 with Endpoint EndpointS3. It stands
	// for an upstream that is hostile, misrouted or behind odd proxies.
	FaultRedirect
	// FaultDelay answers as usual, HEADs included, after waiting
	// Fault.Delay and then until Fault.Hold is closed (or the client
	// gives up): upstream latency over a WAN, or an answer held until a
	// test has every client waiting for it. On the registry by default.
	FaultDelay

	lastFaultMode = FaultDelay
)

// String returns the mode's name, e.g. "truncate".
func (m FaultMode) String() string {
	switch m {
	case FaultNone:
		return "none"
	case FaultTruncate:
		return "truncate"
	case FaultCorrupt:
		return "corrupt"
	case FaultDown:
		return "down"
	case FaultSlow:
		return "slow"
	case FaultStatus:
		return "status"
	case FaultStall:
		return "stall"
	case FaultIgnoreRange:
		return "ignore-range"
	case FaultWrongRange:
		return "wrong-range"
	case FaultRedirect:
		return "redirect"
	case FaultDelay:
		return "delay"
	}
	return "FaultMode(" + strconv.Itoa(int(m)) + ")"
}

// Fault describes how the fake misbehaves for a digest. Faults act only on
// requests for content the fake has (never on 401s or 404s).
type Fault struct {
	// Mode is what goes wrong.
	Mode FaultMode
	// Times is how many requests the fault hits before it clears itself
	// (or gives way to Then); 0 means until SetFault clears it.
	Times int
	// Endpoint narrows the fault to EndpointRegistry or EndpointS3. Empty means:
	// body modes wherever the body is sent (S3 for blobs, the registry for
	// manifests), FaultDown on both, FaultStatus on the registry.
	Endpoint Endpoint
	// Status is FaultStatus's status code. Default 500; for SetTokenFault,
	// 400 (AWS's ThrottlingException).
	Status int
	// Code and Message override the error body's code (or AWS __type) and
	// message; by default they suit Status, e.g. 429 TOOMANYREQUESTS
	// "Rate exceeded", S3 503 SlowDown.
	Code, Message string
	// After is how many body bytes FaultTruncate and FaultStall send.
	// Default (0) half the body; negative: none; at most the body's length
	// minus one. FaultWrongRange uses it as the shift of the range.
	After int64
	// Rate is FaultSlow's speed in bytes per second. Default 64 KiB/s.
	Rate int64
	// Delay is how long FaultSlow and FaultDelay (and FaultStatus, when
	// set) wait before sending the headers, how long FaultStall pauses
	// (0: until the client gives up), and how long FaultTruncate waits
	// between its last byte and the cut.
	Delay time.Duration
	// Hold, when set, holds FaultDelay's and FaultStatus's answer until
	// it is closed, and FaultTruncate's and FaultStall's body open
	// after their After bytes (and after Delay) until it is closed or the
	// client gives up: then the truncated body is cut and the stalled one
	// sends the rest. A test closes it once what it waits for has
	// happened (say, every client has joined the download), instead of
	// hoping that a Delay was long enough.
	Hold <-chan struct{}
	// Location is where FaultRedirect points, sent as is: any URL,
	// relative or absolute, any scheme.
	Location string
	// Then, when set, takes this fault's place once Times requests have
	// met it (Times must be positive), e.g. a truncated body, then a
	// resumption that is answered with the wrong range.
	Then *Fault
}

// faultKey keys the fault table: a digest ("" for all), or the token API.
type faultKey struct {
	dgst  digest.Digest
	token bool
}

type faultEntry struct {
	f    Fault
	left int // requests left to hit; 0 means unlimited
}

// faultTable holds the active faults. n lets requests skip the lock when
// there are none, which is the usual case.
type faultTable struct {
	n  atomic.Int32
	mu sync.Mutex
	m  map[faultKey]*faultEntry
}

func (t *faultTable) set(k faultKey, f Fault) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if f.Mode <= FaultNone || f.Mode > lastFaultMode {
		delete(t.m, k)
	} else {
		t.m[k] = &faultEntry{f: f, left: max(f.Times, 0)}
	}
	t.n.Store(int32(len(t.m)))
}

// take returns the fault to apply to a request for dgst at endpoint at,
// whose response has a body when body is true and is a range of the content
// when ranged is true, and counts it against Times. A fault for dgst itself
// wins over one for all digests.
func (t *faultTable) take(dgst digest.Digest, at Endpoint, body, ranged bool) (Fault, bool) {
	if t.n.Load() == 0 {
		return Fault{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, k := range [2]faultKey{{dgst: dgst}, {}} {
		if e := t.m[k]; e != nil && e.f.appliesAt(at, body, ranged) {
			return t.consumeLocked(k, e), true
		}
	}
	return Fault{}, false
}

// takeToken returns the token API's fault, if any.
func (t *faultTable) takeToken() (Fault, bool) {
	if t.n.Load() == 0 {
		return Fault{}, false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	k := faultKey{token: true}
	if e := t.m[k]; e != nil && e.f.appliesAt(EndpointToken, false, false) {
		return t.consumeLocked(k, e), true
	}
	return Fault{}, false
}

func (t *faultTable) consumeLocked(k faultKey, e *faultEntry) Fault {
	if e.left > 0 {
		if e.left--; e.left == 0 {
			if next := e.f.Then; next != nil && next.Mode > FaultNone && next.Mode <= lastFaultMode {
				t.m[k] = &faultEntry{f: *next, left: max(next.Times, 0)}
			} else {
				delete(t.m, k)
			}
			t.n.Store(int32(len(t.m)))
		}
	}
	return e.f
}

// appliesAt reports whether f acts on a response at endpoint at, with or
// without a body, to a request for a range of the content or not.
func (f Fault) appliesAt(at Endpoint, body, ranged bool) bool {
	if at == EndpointToken {
		return f.Mode == FaultDown || f.Mode == FaultStatus || f.Mode == FaultSlow
	}
	switch f.Mode {
	case FaultTruncate, FaultCorrupt, FaultSlow, FaultStall:
		return body && (f.Endpoint == "" || f.Endpoint == at)
	case FaultIgnoreRange, FaultWrongRange:
		return body && ranged && at == EndpointS3 && (f.Endpoint == "" || f.Endpoint == at)
	case FaultDown:
		return f.Endpoint == "" || f.Endpoint == at
	case FaultStatus, FaultRedirect, FaultDelay:
		return f.Endpoint == at || f.Endpoint == "" && at == EndpointRegistry
	}
	return false
}

// SetFault makes requests for digest dgst misbehave as f says; dgst "" means
// every digest (a fault for a specific digest wins). Fault{} (FaultNone)
// clears the fault.
func (s *Server) SetFault(dgst digest.Digest, f Fault) {
	s.faults.set(faultKey{dgst: dgst}, f)
}

// SetTokenFault makes GetAuthorizationToken misbehave: FaultStatus answers
// an AWS error (default 400 ThrottlingException "Rate exceeded"), FaultDown
// drops the connection, FaultSlow waits Fault.Delay. Other modes do nothing.
// Fault{} clears it.
func (s *Server) SetTokenFault(f Fault) {
	s.faults.set(faultKey{token: true}, f)
}

// ClearFaults removes every fault, including the token API's.
func (s *Server) ClearFaults() {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	clear(s.faults.m)
	s.faults.n.Store(0)
}

// applyFault applies the parts of f that act before the response headers:
// it drops the connection, answers an error status, or waits. It reports
// whether the response is finished. Body modes are left to writeBody.
func (s *Server) applyFault(w http.ResponseWriter, r *http.Request, f Fault, at Endpoint) bool {
	if f.Mode == FaultNone {
		return false
	}
	s.ctr.faults.Add(1)
	switch f.Mode {
	case FaultDown:
		s.ctr.dropped.Add(1)
		dropConnection(w)
		return true
	case FaultStatus:
		if sleepCtx(r.Context(), f.Delay) && f.held(r.Context()) {
			writeFaultStatus(w, r, f, at)
		}
		return true
	case FaultDelay:
		return !sleepCtx(r.Context(), f.Delay) || !f.held(r.Context())
	case FaultSlow:
		return !sleepCtx(r.Context(), f.Delay)
	case FaultRedirect:
		w.Header()["Location"] = []string{f.Location}
		w.WriteHeader(http.StatusTemporaryRedirect)
		return true
	}
	return false
}

// writeFaultStatus answers f.Status with an error body in at's dialect.
func writeFaultStatus(w http.ResponseWriter, r *http.Request, f Fault, at Endpoint) {
	status, code, msg := f.Status, f.Code, f.Message
	if status < 100 || status > 599 {
		status = http.StatusInternalServerError
		if at == EndpointToken {
			status = http.StatusBadRequest
		}
	}
	var defCode, defMsg string
	switch at {
	case EndpointToken:
		switch {
		case status == http.StatusBadRequest || status == http.StatusTooManyRequests:
			defCode, defMsg = "ThrottlingException", "Rate exceeded"
		default:
			defCode, defMsg = "ServerException", "fake ECR fault"
		}
	case EndpointS3:
		switch status {
		case http.StatusServiceUnavailable:
			defCode, defMsg = "SlowDown", "Please reduce your request rate."
		case http.StatusForbidden:
			defCode, defMsg = "AccessDenied", "Access Denied"
		default:
			defCode, defMsg = "InternalError", "We encountered an internal error. Please try again."
		}
	default:
		switch status {
		case http.StatusTooManyRequests:
			defCode, defMsg = codeTooManyRequests, "Rate exceeded"
		case http.StatusForbidden:
			defCode, defMsg = codeDenied, "fake ECR fault"
		default:
			defCode, defMsg = codeUnknown, "fake ECR fault: HTTP "+strconv.Itoa(status)
		}
	}
	if code == "" {
		code = defCode
	}
	if msg == "" {
		msg = defMsg
	}
	switch at {
	case EndpointToken:
		writeAWSError(w, status, code, msg)
	case EndpointS3:
		writeS3Error(w, r, status, s3Error{Code: code, Message: msg})
	default:
		writeOCIError(w, status, code, msg)
	}
}

// writeBody writes a response body after the headers, applying f's body
// mode. Without one it is a single Write of body.
func writeBody(w http.ResponseWriter, r *http.Request, body []byte, f Fault) {
	switch f.Mode {
	case FaultTruncate:
		n := f.cut(len(body))
		_, _ = w.Write(body[:n])
		_ = http.NewResponseController(w).Flush()
		sleepCtx(r.Context(), f.Delay)
		f.held(r.Context())
		// The sanctioned way to cut a response short: net/http closes the
		// connection and logs nothing.
		panic(http.ErrAbortHandler)
	case FaultCorrupt:
		if len(body) == 0 {
			return
		}
		i := len(body) / 2
		if _, err := w.Write(body[:i]); err != nil {
			return
		}
		if _, err := w.Write([]byte{^body[i]}); err != nil {
			return
		}
		_, _ = w.Write(body[i+1:])
	case FaultSlow:
		writeSlow(r.Context(), w, body, f.Rate)
	case FaultStall:
		n := f.cut(len(body))
		if _, err := w.Write(body[:n]); err != nil {
			return
		}
		_ = http.NewResponseController(w).Flush()
		// A pause (Delay, then Hold) ends with the rest of the body.
		if (f.Delay > 0 || f.Hold != nil) && sleepCtx(r.Context(), f.Delay) && f.held(r.Context()) {
			_, _ = w.Write(body[n:])
			return
		}
		<-r.Context().Done() // the client gave up, or the fake is closing
		panic(http.ErrAbortHandler)
	default:
		_, _ = w.Write(body)
	}
}

// held waits until f.Hold is closed (true) or ctx ends (false); without
// a Hold it returns true at once.
func (f Fault) held(ctx context.Context) bool {
	if f.Hold == nil {
		return true
	}
	select {
	case <-f.Hold:
		return true
	case <-ctx.Done():
		return false
	}
}

// cut is how many of size body bytes FaultTruncate and FaultStall send:
// After, by default half; none when After is negative; never all.
func (f Fault) cut(size int) int {
	n := f.After
	switch {
	case n < 0:
		n = 0
	case n == 0:
		n = int64(size) / 2
	}
	return int(max(min(n, int64(size)-1), 0))
}

// writeSlow writes body at rate bytes per second (default 64 KiB/s), in
// chunks of about a twentieth of a second, until done or ctx ends.
func writeSlow(ctx context.Context, w http.ResponseWriter, body []byte, rate int64) {
	if rate <= 0 {
		rate = 64 << 10
	}
	rc := http.NewResponseController(w)
	chunk := max(rate/20, 1)
	start := time.Now()
	for off := int64(0); off < int64(len(body)); {
		end := min(off+chunk, int64(len(body)))
		if _, err := w.Write(body[off:end]); err != nil {
			return
		}
		_ = rc.Flush()
		off = end
		due := time.Duration(float64(off) / float64(rate) * float64(time.Second))
		if !sleepCtx(ctx, due-time.Since(start)) {
			return
		}
	}
}
