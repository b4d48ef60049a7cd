package admin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"syscall"

	"github.com/ecr-mirror/ecr-mirror/internal/imageclient"
	"github.com/ecr-mirror/ecr-mirror/registry"
)

// ErrNotRunning is returned by Dial when no mirror serves the directory's
// admin socket: open the store directly instead. Check it with errors.Is.
var ErrNotRunning = errors.New("admin: no running mirror")

// Client runs the cache operations on a running mirror, through its admin
// socket.
type Client struct {
	path string
	http *http.Client
}

var _ Cache = (*Client)(nil)

// Dial connects to the admin socket in the cache directory dir. It
// returns an error wrapping ErrNotRunning when there is no socket, or only
// one left by a mirror that died.
func Dial(ctx context.Context, dir string) (*Client, error) {
	path := filepath.Join(dir, SocketName)
	if _, err := os.Stat(path); errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w", dir, ErrNotRunning)
	}
	c := &Client{path: path, http: &http.Client{Transport: socketTransport(path)}}
	resp, err := c.do(ctx, http.MethodGet, pathPing, "", nil)
	if errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%s: %w (its socket is left over)", dir, ErrNotRunning)
	}
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", path, err)
	}
	resp.Body.Close()
	return c, nil
}

// RegistryClient is a client of the registry API that a running mirror
// serves on the admin socket in the cache directory dir: requests to any
// host go to the socket.
func RegistryClient(dir string) *http.Client {
	return &http.Client{Transport: socketTransport(filepath.Join(dir, SocketName))}
}

// PullThroughSocket is the Fetcher of a running mirror's Service: it
// pulls an image whole (with its referrers when asked) through the
// registry API the mirror serves on its admin socket in dir.
func PullThroughSocket(dir string) Fetcher {
	return func(ctx context.Context, ref registry.Reference, withReferrers bool) (Fetched, error) {
		c := RegistryClient(dir)
		defer c.CloseIdleConnections()
		img, err := imageclient.PullWhole(ctx, c, ref, withReferrers)
		if err != nil {
			return Fetched{}, err
		}
		return Fetched{Digest: img.Top.Digest, Size: img.Size(), Referrers: img.ReferrerRoots()}, nil
	}
}

// socketTransport sends every request to the unix socket at path.
func socketTransport(path string) *http.Transport {
	var d net.Dialer
	return &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			short, done, err := shortPath(path)
			if err != nil {
				return nil, err
			}
			defer done()
			return d.DialContext(ctx, "unix", short)
		},
		DisableCompression: true, // blobs are hashed byte for byte
	}
}

// Close releases the client's idle connections.
func (c *Client) Close() { c.http.CloseIdleConnections() }

func (c *Client) do(ctx context.Context, method, path, contentType string, body io.Reader) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://ecr-mirror"+path, body)
	if err != nil {
		return nil, err
	}
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	return c.http.Do(req)
}

// call sends in as JSON (unless body is given) and decodes the answer
// into out, or returns the operation's error.
func (c *Client) call(ctx context.Context, method, path string, in any, body io.Reader, out any) error {
	contentType := "application/x-tar"
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body, contentType = bytes.NewReader(b), "application/json"
	}
	resp, err := c.do(ctx, method, path, contentType, body)
	if err != nil {
		return fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return answerError(resp)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin socket %s: reading the answer: %w", c.path, err)
	}
	return nil
}

// answerError turns a failed operation's answer into its error.
func answerError(resp *http.Response) error {
	var e errorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return errors.New(e.Error)
	}
	return fmt.Errorf("admin socket: %s: %s", resp.Status, bytes.TrimSpace(b))
}

// List implements Cache.
func (c *Client) List(ctx context.Context) (*Listing, error) {
	var l Listing
	if err := c.call(ctx, http.MethodGet, pathList, nil, nil, &l); err != nil {
		return nil, err
	}
	return &l, nil
}

// Verify implements Cache; progress is called as the mirror reports it.
func (c *Client) Verify(ctx context.Context, repair bool, progress Progress) (*VerifyReport, error) {
	path := pathVerify
	if repair {
		path += "?repair=true"
	}
	resp, err := c.do(ctx, http.MethodPost, path, "", nil)
	if err != nil {
		return nil, fmt.Errorf("admin socket %s: %w", c.path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, answerError(resp)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	for sc.Scan() {
		var line streamLine
		if err := json.Unmarshal(sc.Bytes(), &line); err != nil {
			return nil, fmt.Errorf("admin socket %s: reading the answer: %w", c.path, err)
		}
		switch {
		case line.Error != "":
			return nil, errors.New(line.Error)
		case line.Result != nil:
			var rep VerifyReport
			if err := json.Unmarshal(line.Result, &rep); err != nil {
				return nil, fmt.Errorf("admin socket %s: reading the answer: %w", c.path, err)
			}
			return &rep, nil
		case progress != nil:
			progress(line.Done, line.Total)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("admin socket %s: reading the answer: %w", c.path, err)
	}
	return nil, fmt.Errorf("admin socket %s: the mirror ended the answer without a result", c.path)
}

// Pin implements Cache.
func (c *Client) Pin(ctx context.Context, image string, opts PinOptions) (*PinReport, error) {
	var rep PinReport
	if err := c.call(ctx, http.MethodPost, pathPin, imageRequest{Image: image, Referrers: opts.Referrers}, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Unpin implements Cache.
func (c *Client) Unpin(ctx context.Context, image string) (*PinReport, error) {
	var rep PinReport
	if err := c.call(ctx, http.MethodPost, pathUnpin, imageRequest{Image: image}, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Purge implements Cache.
func (c *Client) Purge(ctx context.Context, req PurgeRequest) (*PurgeReport, error) {
	var rep PurgeReport
	if err := c.call(ctx, http.MethodPost, pathPurge, req, nil, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Import implements Cache: the archive streams to the mirror, which
// verifies and admits it.
func (c *Client) Import(ctx context.Context, r io.Reader) (*ImportReport, error) {
	var rep ImportReport
	if err := c.call(ctx, http.MethodPost, pathImport, nil, io.NopCloser(r), &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}
