package clientconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
)

const stallTimeout = time.Minute

// bodyHandler serves body: from the file at path through
// http.ServeContent (sendfile over plain HTTP/1), or, with stream set,
// by Write calls of 1 MiB. It sends the request's context cause on
// causes when done.
func bodyHandler(path string, body []byte, stream bool, causes chan<- error) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() { causes <- context.Cause(r.Context()) }()
		if stream {
			w.Header().Set("Content-Length", strconv.Itoa(len(body)))
			for p := body; len(p) > 0; {
				n := min(len(p), 1<<20)
				if _, err := w.Write(p[:n]); err != nil {
					return
				}
				p = p[n:]
			}
			return
		}
		f, err := os.Open(path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		defer f.Close()
		http.ServeContent(w, r, "", time.Time{}, f)
	})
}

// watchCase is one way a response reaches the client.
type watchCase struct {
	name        string
	tls, stream bool
}

var watchCases = []watchCase{
	{name: "HTTP/1 file", tls: false, stream: false},
	{name: "HTTP/1 stream", tls: false, stream: true},
	{name: "HTTP/2 file", tls: true, stream: false},
	{name: "HTTP/2 stream", tls: true, stream: true},
}

// getWatched serves the file at path (holding body) as tc says, behind a
// watchdog on a fake clock, and GETs it; the handler's context's cause
// arrives on causes when it ends. The body is closed at cleanup.
func getWatched(t *testing.T, tc watchCase, path string, body []byte) (*Watchdog, *clockwork.FakeClock, chan error, *http.Response) {
	t.Helper()
	clk := clockwork.NewFakeClock()
	wd, err := NewWatchdog(stallTimeout, clk, nil)
	if err != nil {
		t.Fatal(err)
	}
	causes := make(chan error, 1)
	s := startServer(t, wd.Wrap(bodyHandler(path, body, tc.stream, causes)), nil, tc.tls)
	resp, err := s.client.Get(s.url("/blob"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	return wd, clk, causes, resp
}

// A client that takes the headers and then reads nothing is cut once a
// write has waited the timeout: its handler's context ends with
// ErrStalled and the client sees the body fail short of its end.
func TestStuckClientIsCut(t *testing.T) {
	t.Parallel()
	for _, tc := range watchCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path, body := randomFile(t, 1, 32<<20)
			wd, clk, causes, resp := getWatched(t, tc, path, body)
			if tc.tls != (resp.ProtoMajor == 2) {
				t.Fatalf("served over %s", resp.Proto)
			}
			// A write is under way until the client reads: once it has
			// waited the timeout, the sweep cuts it.
			for wd.Sweep() == 0 {
				clk.Advance(stallTimeout)
				time.Sleep(5 * time.Millisecond)
			}
			if cause := <-causes; !errors.Is(cause, ErrStalled) {
				t.Errorf("the handler's context ended with %v, want ErrStalled", cause)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			if err == nil || n >= int64(len(body)) {
				t.Fatalf("the stuck client then read %d of %d bytes, err %v; want the body cut", n, len(body), err)
			}
			if got := wd.Cuts(); got != 1 {
				t.Errorf("Cuts() = %d, want 1", got)
			}
		})
	}
}

// A client that keeps taking bytes, however long the whole body takes, is
// never cut: the clock moves by three quarters of the timeout each time
// the writes under way have all started since it last moved.
func TestSlowClientIsNeverCut(t *testing.T) {
	t.Parallel()
	for _, tc := range watchCases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path, body := randomFile(t, 2, 16<<20)
			wd, clk, causes, resp := getWatched(t, tc, path, body)
			var got bytes.Buffer
			buf := make([]byte, 32<<10)
			advances := 0
			for {
				n, err := resp.Body.Read(buf)
				got.Write(buf[:n])
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("after %d bytes and %d advances: %v", got.Len(), advances, err)
				}
				if wd.startedSince(clk.Now()) {
					clk.Advance(stallTimeout * 3 / 4)
					advances++
					if cut := wd.Sweep(); cut != 0 {
						t.Fatalf("a sweep after %d advances cut %d responses of a client that reads", advances, cut)
					}
				}
			}
			if !bytes.Equal(got.Bytes(), body) {
				t.Fatalf("read %d bytes, want the %d of the body", got.Len(), len(body))
			}
			if advances < 4 {
				t.Fatalf("the clock moved only %d times", advances)
			}
			if cause := <-causes; cause != nil {
				t.Errorf("the handler's context ended with %v", cause)
			}
			t.Logf("%d bytes read over %v of the watchdog's clock (timeout %v)", got.Len(), time.Duration(advances)*stallTimeout*3/4, stallTimeout)
		})
	}
}

// startedSince reports whether every write under way started at now or
// later: moving the clock by less than the timeout then cuts nothing.
func (wd *Watchdog) startedSince(now time.Time) bool {
	wd.mu.Lock()
	defer wd.mu.Unlock()
	for r := range wd.active {
		if since := r.since.Load(); since != 0 && since < now.UnixNano() {
			return false
		}
	}
	return true
}

// readFromRecorder is a ResponseWriter with io.ReaderFrom that records
// the readers it is given.
type readFromRecorder struct {
	*httptest.ResponseRecorder
	readers []*io.LimitedReader
}

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	lr, ok := src.(*io.LimitedReader)
	if !ok {
		return 0, errors.New("not a LimitedReader")
	}
	r.readers = append(r.readers, &io.LimitedReader{R: lr.R, N: lr.N})
	return io.Copy(r.ResponseRecorder, lr)
}

// Files reach the server's io.ReaderFrom (its sendfile) in pieces of at
// most ChunkSize, each a LimitedReader of the file itself, whether the
// handler hands over the file or a LimitedReader of it.
func TestReadFromPassesFilesInChunks(t *testing.T) {
	t.Parallel()
	path, body := randomFile(t, 3, 3*ChunkSize+123)
	tests := []struct {
		name  string
		src   func(f *os.File) io.Reader
		start int64
		want  int
	}{
		{name: "file", src: func(f *os.File) io.Reader { return f }, want: len(body)},
		{name: "limited", src: func(f *os.File) io.Reader { return io.LimitReader(f, 2*ChunkSize+7) }, want: 2*ChunkSize + 7},
		{name: "limited from an offset", start: 100, src: func(f *os.File) io.Reader { return io.LimitReader(f, ChunkSize) }, want: ChunkSize},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if _, err := f.Seek(tc.start, io.SeekStart); err != nil {
				t.Fatal(err)
			}
			wd, err := NewWatchdog(stallTimeout, clockwork.NewFakeClock(), nil)
			if err != nil {
				t.Fatal(err)
			}
			rec := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
			rw := &response{ResponseWriter: rec, wd: wd}
			n, err := rw.ReadFrom(tc.src(f))
			if err != nil || n != int64(tc.want) {
				t.Fatalf("ReadFrom = %d, %v; want %d", n, err, tc.want)
			}
			if !bytes.Equal(rec.Body.Bytes(), body[tc.start:tc.start+int64(tc.want)]) {
				t.Fatal("the bytes written are not the file's")
			}
			for i, lr := range rec.readers {
				if lr.R != f || lr.N > ChunkSize {
					t.Errorf("piece %d: a LimitedReader of %T, %d bytes; want of the file, at most %d", i, lr.R, lr.N, ChunkSize)
				}
			}
			if want := (tc.want + ChunkSize - 1) / ChunkSize; len(rec.readers) < want {
				t.Errorf("%d pieces, want at least %d", len(rec.readers), want)
			}
		})
	}
}

func TestNewWatchdogRefusesNonPositiveTimeout(t *testing.T) {
	t.Parallel()
	for _, d := range []time.Duration{0, -time.Second} {
		if _, err := NewWatchdog(d, nil, nil); err == nil {
			t.Errorf("NewWatchdog(%v) accepted", d)
		}
	}
}

// A sweep that finds a write stale just as its handler returns cuts
// nothing: the server's writer may already serve the next request.
func TestNoCutAfterTheHandlerReturned(t *testing.T) {
	t.Parallel()
	clk := clockwork.NewFakeClock()
	wd, err := NewWatchdog(stallTimeout, clk, nil)
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	rw := &response{ResponseWriter: rec, wd: wd, rc: http.NewResponseController(rec),
		cancel: func(error) { t.Error("the context of a finished request was cancelled") }, req: httptest.NewRequest("GET", "/", nil)}
	rw.serve(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}), rw.req)
	rw.since.Store(clk.Now().UnixNano() + 1) // a write seen as under way
	wd.track(rw, true)
	clk.Advance(2 * stallTimeout)
	if cut := wd.Sweep(); cut != 0 || wd.Cuts() != 0 {
		t.Fatalf("Sweep cut %d (Cuts %d) after the handler returned", cut, wd.Cuts())
	}
}
