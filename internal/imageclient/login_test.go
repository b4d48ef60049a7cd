package imageclient

import (
	"encoding/base64"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/opencontainers/go-digest"

	"github.com/ecr-mirror/ecr-mirror/internal/oci"
)

// fakeKeychain answers every lookup with cfg (nil: anonymous) or err,
// and records the registries looked up.
type fakeKeychain struct {
	cfg *authn.AuthConfig
	err error

	mu     sync.Mutex
	looked []string
}

func (k *fakeKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	k.mu.Lock()
	k.looked = append(k.looked, r.RegistryStr())
	k.mu.Unlock()
	if k.err != nil {
		return nil, k.err
	}
	if k.cfg == nil {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(*k.cfg), nil
}

func (k *fakeKeychain) lookups() []string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.looked
}

// Ping logs in only when the registry asks, with the login given or the
// keychain's for the registry's host (looked up only then); a login
// missing or refused is a LoginError naming the registry and the user,
// never the password.
func TestPingLogsInWhenAsked(t *testing.T) {
	t.Parallel()
	const user, password = "alice", "s3cret-pw"
	tests := []struct {
		name        string
		noLogin     bool // the registry asks for none
		login       *Login
		keychain    *fakeKeychain
		wantErr     string // "": logged in
		wantLookups int
	}{
		{name: "no login asked: the keychain is not read", noLogin: true, keychain: &fakeKeychain{err: errors.New("helper broken")}},
		{name: "the keychain's user and password", keychain: &fakeKeychain{cfg: &authn.AuthConfig{Username: user, Password: password}}, wantLookups: 1},
		{name: "the keychain's auth", keychain: &fakeKeychain{cfg: &authn.AuthConfig{Auth: base64.StdEncoding.EncodeToString([]byte(user + ":" + password))}}, wantLookups: 1},
		{name: "a login given wins over the keychain", login: &Login{Username: user, Password: password, Source: "--username"}, keychain: &fakeKeychain{}},
		{name: "the keychain's wrong password", keychain: &fakeKeychain{cfg: &authn.AuthConfig{Username: user, Password: "nope-pw"}}, wantLookups: 1,
			wantErr: ` refused the login of user "alice" (from the Docker config): wrong user name or password`},
		{name: "a wrong password given", login: &Login{Username: user, Password: "nope-pw", Source: "--username"},
			wantErr: ` refused the login of user "alice" (from --username): wrong user name or password`},
		{name: "no login anywhere", keychain: &fakeKeychain{}, wantLookups: 1, wantErr: " asks for a login, and none is given for it"},
		{name: "no keychain", wantErr: " asks for a login, and none is given for it"},
		{name: "a broken credential helper", keychain: &fakeKeychain{err: errors.New("docker-credential-x: not found")}, wantLookups: 1,
			wantErr: " asks for a login, and reading one for it failed: the Docker config's login for 127.0.0.1:"},
		{name: "an identity token", keychain: &fakeKeychain{cfg: &authn.AuthConfig{IdentityToken: "tok-123"}}, wantLookups: 1,
			wantErr: "is a token; the mirror takes a user name and password"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			reg := newRegistry(t)
			if !tt.noLogin {
				reg.requireLogin(user, password)
			}
			top := reg.image("team/app", "v1", oci.MediaTypeImageManifest, 10)
			opts := Options{Concurrency: 2, Login: tt.login}
			if tt.keychain != nil {
				opts.Keychain = tt.keychain
			}
			c, err := Dial(reg.srv.URL, false, opts)
			if err != nil {
				t.Fatal(err)
			}
			err = c.Ping(t.Context())
			if tt.keychain != nil {
				if got := tt.keychain.lookups(); len(got) != tt.wantLookups || (len(got) > 0 && got[0] != c.Host()) {
					t.Errorf("keychain looked up %q, want %s %d times", got, c.Host(), tt.wantLookups)
				}
			}
			if tt.wantErr != "" {
				var le *LoginError
				if !errors.As(err, &le) || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), reg.srv.URL+" ") {
					t.Fatalf("Ping = %v, want a LoginError naming %s: %q", err, reg.srv.URL, tt.wantErr)
				}
				if strings.Contains(err.Error(), "pw") || strings.Contains(err.Error(), "tok-123") {
					t.Errorf("the error shows a secret: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Ping = %v", err)
			}
			img, err := c.Warm(t.Context(), mustParse(t, "team/app:v1"), nil)
			if err != nil || img.Top.Digest != top.Digest {
				t.Fatalf("Warm after the login = %v, %v", img, err)
			}
		})
	}
}

// The login goes to the registry's host only: a blob redirected to
// another host (ECR's S3) gets no Authorization.
func TestLoginIsNeverSentToAnotherHost(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var elsewhere []string
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		elsewhere = append(elsewhere, req.Header.Get("Authorization"))
		mu.Unlock()
		w.Write([]byte("blob"))
	}))
	t.Cleanup(other.Close)
	reg := newRegistry(t)
	reg.requireLogin("alice", "pw")
	blob := oci.Descriptor{Digest: digest.FromString("blob"), Size: 4}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !reg.loginRefused(w, req) {
			http.Redirect(w, req, other.URL+"/bucket/blob", http.StatusTemporaryRedirect)
		}
	}))
	t.Cleanup(front.Close)
	c, err := Dial(front.URL, false, Options{Concurrency: 1, Login: &Login{Username: "alice", Password: "pw", Source: "--username"}})
	if err != nil {
		t.Fatal(err)
	}
	body, err := c.OpenBlob(t.Context(), "team/app", blob)
	if err != nil {
		t.Fatal(err)
	}
	body.Close()
	mu.Lock()
	defer mu.Unlock()
	if len(elsewhere) != 1 || elsewhere[0] != "" {
		t.Errorf("the other host saw Authorization %q, want one request without", elsewhere)
	}
	reg.mu.Lock()
	defer reg.mu.Unlock()
	if len(reg.authorizations) != 1 || !strings.HasPrefix(reg.authorizations[0], "Basic ") {
		t.Errorf("the registry saw Authorization %q, want Basic", reg.authorizations)
	}
}
