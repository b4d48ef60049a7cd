package peers

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"
)

// Headers of a signed peer request.
const (
	headerTime      = "X-Ecr-Mirror-Peer-Time"
	headerSignature = "X-Ecr-Mirror-Peer-Signature"
	// headerInstance names the process that sent a request, so that a
	// replica that does not find itself among PEERS and asks itself is
	// told at once (Server), not left waiting on its own download.
	headerInstance = "X-Ecr-Mirror-Peer-Instance"
)

// SignatureWindow is how far a request's time may be from the
// receiver's clock, either way.
const SignatureWindow = time.Minute

// MinSecretLength is the shortest PEER_SECRET accepted.
const MinSecretLength = 16

// Signer signs peer requests and checks their signatures.
type Signer struct {
	secret   []byte
	clock    clockwork.Clock
	instance string // random, one per process
}

// NewSigner signs with secret; clock nil: the real clock.
func NewSigner(secret string, clock clockwork.Clock) *Signer {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Signer{secret: []byte(secret), clock: clock, instance: rand.Text()}
}

// fromSelf reports whether r was signed by this Signer's process.
func (s *Signer) fromSelf(r *http.Request) bool { return r.Header.Get(headerInstance) == s.instance }

// Sign adds the time and the signature to r.
func (s *Signer) Sign(r *http.Request) {
	ts := strconv.FormatInt(s.clock.Now().Unix(), 10)
	r.Header.Set(headerTime, ts)
	r.Header.Set(headerSignature, s.mac(r.Method, r.URL.RequestURI(), ts))
	r.Header.Set(headerInstance, s.instance)
}

// Verify checks r's signature and that its time is within the window.
// Its errors are for the receiver's log, not for the sender.
func (s *Signer) Verify(r *http.Request) error {
	ts, sig := r.Header.Get(headerTime), r.Header.Get(headerSignature)
	if ts == "" || sig == "" {
		return errors.New("not signed")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("malformed time %q", ts)
	}
	if d := s.clock.Now().Sub(time.Unix(sec, 0)); d > SignatureWindow || d < -SignatureWindow {
		return fmt.Errorf("signed %v away from this replica's clock, over %v", d.Round(time.Second), SignatureWindow)
	}
	if !hmac.Equal([]byte(sig), []byte(s.mac(r.Method, r.URL.RequestURI(), ts))) {
		return errors.New("wrong signature (another PEER_SECRET?)")
	}
	return nil
}

// mac is the hex HMAC-SHA256 of method, request URI and time.
func (s *Signer) mac(method, uri, ts string) string {
	h := hmac.New(sha256.New, s.secret)
	h.Write([]byte(method + "\n" + uri + "\n" + ts))
	return hex.EncodeToString(h.Sum(nil))
}
