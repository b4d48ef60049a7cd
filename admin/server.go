package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/ecr-mirror/ecr-mirror/cache"
)

// SocketName is the admin socket's file name inside CACHE_DIR.
const SocketName = "admin.sock"

// The admin API's paths. Under /v2/ the socket also serves the registry
// API, without client access control: only the mirror's own user can
// connect.
const (
	pathPing   = "/admin/v1/ping"
	pathList   = "/admin/v1/cache"
	pathVerify = "/admin/v1/verify"
	pathPin    = "/admin/v1/pin"
	pathUnpin  = "/admin/v1/unpin"
	pathPurge  = "/admin/v1/purge"
	pathImport = "/admin/v1/import"
)

// Listen creates the admin socket in dir, readable and writable by the
// mirror's user only, replacing a socket left by a mirror that died (the
// caller holds dir's store lock, so no live mirror owns it). The socket
// is created in a private directory and renamed into place, so it is
// never reachable with looser permissions. Closing the listener removes
// the socket.
func Listen(dir string) (net.Listener, error) {
	path := filepath.Join(dir, SocketName)
	private, err := os.MkdirTemp(dir, ".admin-")
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	defer os.RemoveAll(private)
	tmp := filepath.Join(private, SocketName)
	bindPath, done, err := shortPath(tmp)
	if err != nil {
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: bindPath, Net: "unix"})
	done()
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	ln.SetUnlinkOnClose(false) // it is unlinked under its final name below
	if err := os.Chmod(tmp, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		ln.Close()
		return nil, fmt.Errorf("admin socket: %w", err)
	}
	return &socketListener{Listener: ln, path: path}, nil
}

type socketListener struct {
	net.Listener
	path string
}

// Addr is the socket's path.
func (l *socketListener) Addr() net.Addr { return &net.UnixAddr{Name: l.path, Net: "unix"} }

// maxSocketPath is the longest path a unix socket address holds (108
// bytes with the terminating NUL on Linux).
const maxSocketPath = 107

// shortPath returns a path to bind or dial the socket at path by: path
// itself, or, when it is too long for a socket address, the same file
// through /proc/self/fd and an open descriptor of its directory. done
// closes that descriptor once the bind or connect is over.
func shortPath(path string) (short string, done func(), err error) {
	if len(path) <= maxSocketPath {
		return path, func() {}, nil
	}
	dir, err := os.Open(filepath.Dir(path))
	if err != nil {
		return "", nil, err
	}
	short = fmt.Sprintf("/proc/self/fd/%d/%s", dir.Fd(), filepath.Base(path))
	return short, func() { dir.Close() }, nil
}

func (l *socketListener) Close() error {
	err := l.Listener.Close()
	if rerr := os.Remove(l.path); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// NewServer is a running mirror's admin socket in dir (Listen) and its
// server: the cache commands on store, pulling what "cache pin" lacks
// through api, the registry API it serves beside them (NewHandler);
// registry is the host imports belong to (NewService). Pins and unpins
// reach shared too, the shared tier's pins, unless it is nil.
func NewServer(dir string, store *cache.Store, registry string, api http.Handler, shared SharedPins, log *slog.Logger) (*http.Server, net.Listener, error) {
	ln, err := Listen(dir)
	if err != nil {
		return nil, nil, err
	}
	svc := NewService(store, PullThroughSocket(dir), registry)
	svc.shared = shared
	srv := &http.Server{Handler: NewHandler(svc, api, log), ReadHeaderTimeout: 30 * time.Second,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	return srv, ln, nil
}

// NewHandler serves svc's operations, and api (the registry API, which
// Pin's fetches use) under /v2/.
func NewHandler(svc *Service, api http.Handler, log *slog.Logger) http.Handler {
	h := &handler{svc: svc, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+pathPing, func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET "+pathList, h.list)
	mux.HandleFunc("POST "+pathVerify, h.verify)
	mux.HandleFunc("POST "+pathPin, h.imageOp("pin", func(ctx context.Context, req imageRequest) (*PinReport, error) {
		return svc.Pin(ctx, req.Image, PinOptions{Referrers: req.Referrers})
	}))
	mux.HandleFunc("POST "+pathUnpin, h.imageOp("unpin", func(ctx context.Context, req imageRequest) (*PinReport, error) {
		return svc.Unpin(ctx, req.Image)
	}))
	mux.HandleFunc("POST "+pathPurge, h.purge)
	mux.HandleFunc("POST "+pathImport, h.importArchive)
	if api != nil {
		mux.Handle("/v2/", api)
	}
	return mux
}

type handler struct {
	svc *Service
	log *slog.Logger
}

// errorBody is the body of a failed operation.
type errorBody struct {
	Error string `json:"error"`
}

// streamLine is one line of a streamed answer (verify): progress lines,
// then one line with the result or the error.
type streamLine struct {
	Done   int64           `json:"done,omitempty"`
	Total  int64           `json:"total,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
	Error  string          `json:"error,omitempty"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// reply writes an operation's result, or its error with the result so
// far (a purge that failed halfway says what it removed).
func (h *handler) reply(w http.ResponseWriter, r *http.Request, op string, v any, err error) {
	if err != nil {
		h.log.Warn("admin operation failed", "op", op, "error", err)
		writeJSON(w, http.StatusUnprocessableEntity, errorBody{Error: err.Error()})
		return
	}
	h.log.Info("admin operation", "op", op)
	writeJSON(w, http.StatusOK, v)
}

func (h *handler) list(w http.ResponseWriter, r *http.Request) {
	l, err := h.svc.List(r.Context())
	h.reply(w, r, "list", l, err)
}

func (h *handler) verify(w http.ResponseWriter, r *http.Request) {
	repair, _ := strconv.ParseBool(r.URL.Query().Get("repair"))
	w.Header().Set("Content-Type", "application/x-ndjson")
	enc := json.NewEncoder(w)
	flusher, _ := w.(http.Flusher)
	var last time.Time
	rep, err := h.svc.Verify(r.Context(), repair, func(done, total int64) {
		if now := time.Now(); now.Sub(last) >= 200*time.Millisecond || done == total {
			last = now
			enc.Encode(streamLine{Done: done, Total: total})
			if flusher != nil {
				flusher.Flush()
			}
		}
	})
	if err != nil {
		h.log.Warn("admin operation failed", "op", "verify", "error", err)
		enc.Encode(streamLine{Error: err.Error()})
		return
	}
	b, err := json.Marshal(rep)
	if err != nil {
		enc.Encode(streamLine{Error: err.Error()})
		return
	}
	h.log.Info("admin operation", "op", "verify", "entries", rep.Entries, "bad", len(rep.Bad), "removed", len(rep.Removed))
	enc.Encode(streamLine{Result: b})
}

// imageRequest is the body of pin and unpin.
type imageRequest struct {
	Image string `json:"image"`
	// Referrers is PinOptions.Referrers, for pin.
	Referrers bool `json:"referrers,omitempty"`
}

// imageOp serves an operation on one image: pin or unpin.
func (h *handler) imageOp(name string, op func(context.Context, imageRequest) (*PinReport, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req imageRequest
		if !decode(w, r, &req) {
			return
		}
		rep, err := op(r.Context(), req)
		h.reply(w, r, name+" "+req.Image, rep, err)
	}
}

func (h *handler) purge(w http.ResponseWriter, r *http.Request) {
	var req PurgeRequest
	if !decode(w, r, &req) {
		return
	}
	rep, err := h.svc.Purge(r.Context(), req)
	if err != nil && rep != nil && len(rep.Removed) > 0 {
		err = fmt.Errorf("%w (after removing %d entries)", err, len(rep.Removed))
	}
	h.reply(w, r, "purge", rep, err)
}

func (h *handler) importArchive(w http.ResponseWriter, r *http.Request) {
	rep, err := h.svc.Import(r.Context(), r.Body)
	h.reply(w, r, "import", rep, err)
}

// decode reads a small JSON request body into v, or answers 400.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{Error: "bad request body: " + err.Error()})
		return false
	}
	return true
}
