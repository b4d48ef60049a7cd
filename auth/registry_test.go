package auth_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ecr-mirror/ecr-mirror/auth"
	"github.com/ecr-mirror/ecr-mirror/internal/testwait"
)

// bearerEnv is a Bearer-protected registry, its realm, and a client
// through a RegistryTransport with an injected clock.
type bearerEnv struct {
	realm  *tokenServer
	reg    *testRegistry
	clock  *fakeClock
	client *http.Client
}

func newBearerEnv(t *testing.T, realm *tokenServer, login auth.Login) *bearerEnv {
	t.Helper()
	e := &bearerEnv{realm: realm, reg: newTestRegistry(t, realm, "", ""), clock: newFakeClock()}
	log, _ := secretFreeLogs(t, "s3cret")
	e.client = &http.Client{Transport: auth.NewRegistryTransport(e.reg.host(), ownTransport(t),
		auth.RegistryOptions{Login: login, Logger: log, Now: e.clock.Now})}
	return e
}

func (e *bearerEnv) pull(t *testing.T, repo string) {
	t.Helper()
	status, body := get(t, e.client, e.reg.URL+"/v2/"+repo+"/manifests/latest")
	if status != http.StatusOK || body != "manifest of "+repo {
		t.Fatalf("GET %s manifest = %d %q, want 200 and its manifest", repo, status, body)
	}
}

func TestRegistryTransportFetchesOneAnonymousTokenPerRepositoryScope(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name        string
		accessToken bool
		expiresIn   int
		lifetime    time.Duration
	}{
		{name: "token and expires_in", expiresIn: 300, lifetime: 300 * time.Second},
		{name: "access_token and expires_in", accessToken: true, expiresIn: 600, lifetime: 600 * time.Second},
		{name: "no expires_in means 60s", lifetime: 60 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			realm := newTokenServer(t, nil)
			realm.accessToken, realm.expiresIn = tc.accessToken, tc.expiresIn
			e := newBearerEnv(t, realm, nil)

			for range 5 {
				e.pull(t, "app")
			}
			if n := len(realm.seen()); n != 1 {
				t.Fatalf("5 pulls of one repository fetched %d tokens, want 1", n)
			}
			if n := e.reg.unauthorizedCount(); n != 1 {
				t.Errorf("registry answered %d 401s, want only the first challenge", n)
			}
			e.pull(t, "other")
			seen := realm.seen()
			if len(seen) != 2 || !slices.Equal(seen[1].scopes, []string{"repository:other:pull"}) {
				t.Fatalf("after a second repository the realm saw %+v, want a second fetch for repository:other:pull", seen)
			}
			if n := e.reg.unauthorizedCount(); n != 1 {
				t.Errorf("the second repository's token was not fetched ahead: %d 401s", n)
			}
			for _, r := range seen {
				if r.authorization != "" || r.service != e.reg.host() {
					t.Errorf("anonymous token request carried Authorization %q / service %q", r.authorization, r.service)
				}
			}

			e.clock.Advance(tc.lifetime * 8 / 10) // still fresh
			e.pull(t, "app")
			if n := len(realm.seen()); n != 2 {
				t.Fatalf("a token 80%% through its life was refetched: %d fetches", n)
			}
			e.clock.Advance(tc.lifetime * 2 / 10) // expired
			e.pull(t, "app")
			if n := len(realm.seen()); n != 3 {
				t.Fatalf("an expired token was not refetched: %d fetches, want 3", n)
			}
		})
	}
}

func TestRegistryTransportAsksPushScopeAndReplaysBodies(t *testing.T) {
	t.Parallel()
	body := []byte(`{"schemaVersion":2}`)
	for _, tc := range []struct {
		name       string
		replayable bool
		wantStatus int
		wantBodies []string // bodies of the registry's PUTs
	}{
		{name: "replayable body is sent again", replayable: true, wantStatus: http.StatusCreated, wantBodies: []string{string(body), string(body)}},
		{name: "spent body gets the 401", wantStatus: http.StatusUnauthorized, wantBodies: []string{string(body)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			realm := newTokenServer(t, nil)
			e := newBearerEnv(t, realm, nil)
			var rd io.Reader = bytes.NewReader(body)
			if !tc.replayable {
				rd = io.NopCloser(rd) // http.NewRequest sets no GetBody for it
			}
			req, err := http.NewRequest(http.MethodPut, e.reg.URL+"/v2/app/manifests/v1", rd)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.wantStatus {
				t.Fatalf("PUT = %d %q, want %d", resp.StatusCode, got, tc.wantStatus)
			}
			var bodies []string
			for _, r := range e.reg.seen() {
				bodies = append(bodies, r.body)
			}
			if !slices.Equal(bodies, tc.wantBodies) {
				t.Errorf("registry got PUT bodies %q, want %q", bodies, tc.wantBodies)
			}
			if seen := realm.seen(); len(seen) != 1 || !slices.Equal(seen[0].scopes, []string{"repository:app:pull,push"}) {
				t.Errorf("realm saw %+v, want one fetch for repository:app:pull,push", seen)
			}
		})
	}
}

func TestRegistryTransportPresentsConfiguredLogin(t *testing.T) {
	t.Parallel()
	realm := newTokenServer(t, map[string]string{"alice": "s3cret"})
	realm.loginRequired = true
	reg := newTestRegistry(t, realm, "", "")
	dc, err := auth.LoadDockerConfig(writeDockerConfig(t, authsConfig(reg.host(), "alice", "s3cret")), nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: dc.Transport(reg.host(), ownTransport(t))}
	for _, repo := range []string{"app", "app", "lib"} {
		if status, body := get(t, client, reg.URL+"/v2/"+repo+"/manifests/latest"); status != http.StatusOK {
			t.Fatalf("GET %s = %d %s", repo, status, body)
		}
	}
	seen := realm.seen()
	if len(seen) != 2 {
		t.Fatalf("realm saw %d token requests, want 2 (one per repository)", len(seen))
	}
	for _, r := range seen {
		if r.authorization != "Basic "+b64("alice:s3cret") {
			t.Errorf("realm got Authorization %q, want alice's login", r.authorization)
		}
	}
}

func TestRegistryTransportBasicChallenge(t *testing.T) {
	t.Parallel()
	reg := newTestRegistry(t, nil, "bob", "s3cret")
	for _, tc := range []struct {
		name       string
		config     string
		wantStatus int
		wantHits   []int // registry requests after each of two pulls
	}{
		{name: "login from auths", config: authsConfig(reg.host(), "bob", "s3cret"), wantStatus: http.StatusOK, wantHits: []int{2, 3}},
		{name: "wrong password", config: authsConfig(reg.host(), "bob", "guess"), wantStatus: http.StatusUnauthorized, wantHits: []int{2, 3}},
		{name: "no login for this registry", config: authsConfig("other.example", "bob", "s3cret"), wantStatus: http.StatusUnauthorized, wantHits: []int{1, 2}},
		{name: "no config file", wantStatus: http.StatusUnauthorized, wantHits: []int{1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Not parallel: the subtests share reg's request log.
			path := ""
			if tc.config != "" {
				path = writeDockerConfig(t, tc.config)
			}
			dc, err := auth.LoadDockerConfig(path, nil)
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Transport: dc.Transport(reg.host(), ownTransport(t))}
			before := len(reg.seen())
			for i, want := range tc.wantHits {
				status, body := get(t, client, reg.URL+"/v2/app/manifests/latest")
				if status != tc.wantStatus {
					t.Fatalf("pull %d = %d %s, want %d", i+1, status, body, tc.wantStatus)
				}
				if status == http.StatusUnauthorized && body != unauthorizedBody {
					t.Errorf("the registry's 401 body was not passed on: %q", body)
				}
				if got := len(reg.seen()) - before; got != want {
					t.Errorf("after pull %d the registry saw %d requests, want %d", i+1, got, want)
				}
			}
		})
	}
}

func TestRegistryTransportPassesOnRefusedLoginWithoutLooping(t *testing.T) {
	t.Parallel()
	realm := newTokenServer(t, map[string]string{"alice": "s3cret"})
	reg := newTestRegistry(t, realm, "", "")
	log, _ := secretFreeLogs(t, "wrong-pw")
	dc, err := auth.LoadDockerConfig(writeDockerConfig(t, authsConfig(reg.host(), "alice", "wrong-pw")), log)
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	var refusals atomic.Int64
	onFetch := func(err error) {
		if _, ok := errors.AsType[*auth.RefusedError](err); ok {
			refusals.Add(1)
		}
	}
	client := &http.Client{Transport: auth.NewRegistryTransport(reg.host(), ownTransport(t),
		auth.RegistryOptions{Login: dc.Login(reg.host()), Logger: log, Now: clock.Now, OnTokenFetch: onFetch})}
	pull := func(repo string) {
		t.Helper()
		status, body := get(t, client, reg.URL+"/v2/"+repo+"/manifests/latest")
		if status != http.StatusUnauthorized || body != unauthorizedBody {
			t.Fatalf("pull of %s with a refused login = %d %q, want the registry's 401", repo, status, body)
		}
	}
	for _, repo := range []string{"app", "app", "lib"} {
		pull(repo)
	}
	if n := len(reg.seen()); n != 3 {
		t.Errorf("registry saw %d requests for 3 pulls, want 3: a refused login is never retried", n)
	}
	if n := len(realm.seen()); n != 1 {
		t.Errorf("realm saw %d requests within a minute of refusing the login, want 1", n)
	}
	clock.Advance(time.Minute)
	pull("app")
	if n := len(realm.seen()); n != 2 {
		t.Errorf("realm saw %d requests, want the login presented again after a minute (2)", n)
	}
	if n := refusals.Load(); n != 2 {
		t.Errorf("OnTokenFetch heard of %d refusals, want 2", n)
	}
}

func TestRegistryTransportRedirectCarriesNoAuthorization(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		bearer bool
	}{{name: "bearer token", bearer: true}, {name: "basic login"}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cdn := noAuthCDN(t)
			var realm *tokenServer
			if tc.bearer {
				realm = newTokenServer(t, map[string]string{"bob": "s3cret"})
			}
			reg := newTestRegistry(t, realm, "bob", "s3cret")
			reg.redirectTo(cdn.URL)
			dc, err := auth.LoadDockerConfig(writeDockerConfig(t, authsConfig(reg.host(), "bob", "s3cret")), nil)
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Transport: dc.Transport(reg.host(), ownTransport(t))}
			for range 2 { // the first answers a challenge, the second goes ahead
				status, body := get(t, client, reg.URL+"/v2/app/blobs/sha256:abc")
				if status != http.StatusOK || body != "blob bytes" {
					t.Fatalf("blob GET = %d %q, want the redirect target's bytes", status, body)
				}
			}
			if last := reg.seen()[len(reg.seen())-1]; last.authorization == "" {
				t.Errorf("the registry itself got no credentials: the test proves nothing")
			}
		})
	}
}

func TestTokenRealmGetsOnlyItsRegistrysLogin(t *testing.T) {
	t.Parallel()
	// One realm, on a host of its own, serves three registries.
	realm := newTokenServer(t, map[string]string{"a-user": "a-pass", "b-user": "b-pass"})
	regs := map[string]*testRegistry{}
	auths := map[string]map[string]string{}
	for _, name := range []string{"a", "b", "anon"} {
		regs[name] = newTestRegistry(t, realm, "", "")
		if name != "anon" {
			auths[regs[name].host()] = map[string]string{"auth": b64(name + "-user:" + name + "-pass")}
		}
	}
	config, err := json.Marshal(map[string]any{"auths": auths})
	if err != nil {
		t.Fatal(err)
	}
	dc, err := auth.LoadDockerConfig(writeDockerConfig(t, string(config)), nil)
	if err != nil {
		t.Fatalf("config %s: %v", config, err)
	}
	base := ownTransport(t)
	for _, name := range []string{"a", "b", "anon", "a"} {
		reg := regs[name]
		client := &http.Client{Transport: dc.Transport(reg.host(), base)}
		if status, body := get(t, client, reg.URL+"/v2/app/manifests/latest"); status != http.StatusOK {
			t.Fatalf("registry %s: GET = %d %s", name, status, body)
		}
	}
	want := map[string]string{
		regs["a"].host():    "Basic " + b64("a-user:a-pass"),
		regs["b"].host():    "Basic " + b64("b-user:b-pass"),
		regs["anon"].host(): "",
	}
	seen := realm.seen()
	if len(seen) != 4 {
		t.Fatalf("realm saw %d requests, want 4", len(seen))
	}
	for _, r := range seen {
		if r.authorization != want[r.service] {
			t.Errorf("realm got Authorization %q for service %s, want %q", r.authorization, r.service, want[r.service])
		}
	}
}

func TestRegistryTransportUnreachableRealmIsACredentialsError(t *testing.T) {
	t.Parallel()
	realm := newTokenServer(t, nil)
	reg := newTestRegistry(t, realm, "", "")
	realm.Close() // the challenge names a realm that no longer answers
	client := &http.Client{Transport: auth.NewRegistryTransport(reg.host(), ownTransport(t), auth.RegistryOptions{})}
	_, err := client.Get(reg.URL + "/v2/app/manifests/latest")
	var ce *auth.CredentialsError
	if !errors.As(err, &ce) || ce.Host != reg.host() {
		t.Fatalf("GET with the realm down: error %v, want a *auth.CredentialsError for %s", err, reg.host())
	}
}

func TestRegistryTransportLeavesOtherHostsAlone(t *testing.T) {
	t.Parallel()
	realm := newTokenServer(t, nil)
	reg := newTestRegistry(t, realm, "", "")
	other := newTestRegistry(t, realm, "", "")
	client := &http.Client{Transport: auth.NewRegistryTransport(reg.host(), ownTransport(t), auth.RegistryOptions{})}
	get(t, client, reg.URL+"/v2/app/manifests/latest") // learns the realm, holds a token
	status, _ := get(t, client, other.URL+"/v2/app/manifests/latest")
	if status != http.StatusUnauthorized {
		t.Errorf("another host's challenge was answered (%d): the transport must only serve its registry", status)
	}
	for _, r := range other.seen() {
		if r.authorization != "" {
			t.Errorf("another host got Authorization %q", r.authorization)
		}
	}
}

func TestRegistryTransportMergesConcurrentTokenFetches(t *testing.T) {
	t.Parallel()
	realm := newTokenServer(t, nil)
	e := newBearerEnv(t, realm, nil)
	e.pull(t, "first") // the registry's challenge is known from here on
	realm.mu.Lock()
	realm.hold = make(chan struct{})
	realm.mu.Unlock()

	const pulls = 16
	done := make(chan struct{}, pulls)
	for range pulls {
		go func() {
			defer func() { done <- struct{}{} }()
			resp, err := e.client.Get(e.reg.URL + "/v2/busy/manifests/latest")
			if err != nil {
				t.Errorf("GET: %v", err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET = %d, want 200", resp.StatusCode)
			}
		}()
	}
	testwait.Until(t, "the realm to be asked for the busy repository", func() bool { return len(realm.seen()) >= 2 })
	close(realm.hold)
	for range pulls {
		<-done
	}
	if n := len(realm.seen()); n != 2 {
		t.Errorf("%d concurrent pulls of a new repository made %d token fetches, want 1", pulls, n-1)
	}
	if n := e.reg.unauthorizedCount(); n != 1 {
		t.Errorf("registry answered %d 401s, want only the first repository's challenge", n)
	}
}

func TestRegistryTransportExchangesAnIdentityToken(t *testing.T) {
	t.Parallel()
	realm := newTokenServer(t, map[string]string{"<identity>": "id-s3cret"})
	realm.accessToken = true
	reg := newTestRegistry(t, realm, "", "")
	dc, err := auth.LoadDockerConfig(writeDockerConfig(t, `{"auths":{"`+reg.host()+`":{"identitytoken":"id-s3cret"}}}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: dc.Transport(reg.host(), ownTransport(t))}
	if status, body := get(t, client, reg.URL+"/v2/app/manifests/latest"); status != http.StatusOK {
		t.Fatalf("GET = %d %s, want 200 with a token for the identity token", status, body)
	}
	seen := realm.seen()
	if len(seen) != 1 || seen[0].method != http.MethodPost || seen[0].refreshToken != "id-s3cret" || seen[0].authorization != "" ||
		!slices.Equal(seen[0].scopes, []string{"repository:app:pull"}) || seen[0].service != reg.host() {
		t.Fatalf("realm saw %+v, want one OAuth2 refresh-token POST for repository:app:pull", seen)
	}
}

func TestRegistryTransportRenewsATokenRefusedWithoutAChallenge(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, method string
		status       int
		wantRenewal  bool
	}{
		{name: "ECR Public's 400 DENIED to a GET", method: http.MethodGet, status: http.StatusBadRequest, wantRenewal: true},
		{name: "a 400 to a HEAD", method: http.MethodHead, status: http.StatusBadRequest, wantRenewal: true},
		{name: "a 403 is a permission matter", method: http.MethodGet, status: http.StatusForbidden},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			realm := newTokenServer(t, nil)
			e := newBearerEnv(t, realm, nil)
			e.reg.refuseBadTokens(tc.status)
			e.pull(t, "app")
			realm.revoke() // the registry no longer takes the cached token

			req, _ := http.NewRequest(tc.method, e.reg.URL+"/v2/app/manifests/latest", nil)
			resp, err := e.client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			want, fetches := tc.status, 1
			if tc.wantRenewal {
				want, fetches = http.StatusOK, 2
			}
			if resp.StatusCode != want || len(realm.seen()) != fetches {
				t.Errorf("%s with a refused token = %d after %d token fetches, want %d after %d",
					tc.method, resp.StatusCode, len(realm.seen()), want, fetches)
			}
		})
	}
}

// roundTripFunc is an in-memory base transport.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestLoginIsSentToPlainHTTPRealmsNever(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		realm     string
		wantLogin bool
	}{
		{realm: "https://auth.example/token", wantLogin: true},
		{realm: "http://auth.example/token"},
		{realm: "http://10.0.0.7/token"},
	} {
		t.Run(tc.realm, func(t *testing.T) {
			t.Parallel()
			var mu sync.Mutex
			var realmAuth []string
			base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
				answer := func(status int, body string, h http.Header) (*http.Response, error) {
					if h == nil {
						h = http.Header{}
					}
					return &http.Response{StatusCode: status, Header: h, Body: io.NopCloser(strings.NewReader(body)), Request: r}, nil
				}
				if r.URL.Host == "reg.example" {
					if r.Header.Get("Authorization") == "Bearer granted" {
						return answer(http.StatusOK, "manifest", nil)
					}
					return answer(http.StatusUnauthorized, unauthorizedBody,
						http.Header{"Www-Authenticate": {`Bearer realm="` + tc.realm + `",service="reg.example"`}})
				}
				mu.Lock()
				realmAuth = append(realmAuth, r.Header.Get("Authorization"))
				mu.Unlock()
				return answer(http.StatusOK, `{"token":"granted"}`, nil)
			})
			dc, err := auth.LoadDockerConfig(writeDockerConfig(t, authsConfig("reg.example", "alice", "s3cret")), nil)
			if err != nil {
				t.Fatal(err)
			}
			client := &http.Client{Transport: dc.Transport("reg.example", base)}
			if status, body := get(t, client, "https://reg.example/v2/app/manifests/latest"); status != http.StatusOK {
				t.Fatalf("GET = %d %s", status, body)
			}
			want := ""
			if tc.wantLogin {
				want = "Basic " + b64("alice:s3cret")
			}
			if len(realmAuth) != 1 || realmAuth[0] != want {
				t.Errorf("realm %s got Authorization %q, want [%q]", tc.realm, realmAuth, want)
			}
		})
	}
}

func TestBasicLoginOverPlainHTTPIsSentWithAWarning(t *testing.T) {
	t.Parallel()
	want := "Basic " + b64("alice:s3cret")
	base := roundTripFunc(func(r *http.Request) (*http.Response, error) {
		resp := &http.Response{StatusCode: http.StatusOK, Header: http.Header{}, Body: io.NopCloser(strings.NewReader("manifest")), Request: r}
		if r.Header.Get("Authorization") != want {
			resp.StatusCode = http.StatusUnauthorized
			resp.Header.Set("WWW-Authenticate", `Basic realm="lab"`)
		}
		return resp, nil
	})
	dc, err := auth.LoadDockerConfig(writeDockerConfig(t, authsConfig("lab.example:5000", "alice", "s3cret")), nil)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := secretFreeLogs(t, "s3cret")
	client := &http.Client{Transport: auth.NewRegistryTransport("lab.example:5000", base, auth.RegistryOptions{Login: dc.Login("lab.example:5000"), Logger: log})}
	for range 3 {
		if status, body := get(t, client, "http://lab.example:5000/v2/app/manifests/latest"); status != http.StatusOK {
			t.Fatalf("GET = %d %s, want 200: the operator chose a plain-http upstream", status, body)
		}
	}
	if n := strings.Count(logs.String(), "plain http"); n != 1 {
		t.Errorf("plain-http login warned %d times, want once:\n%s", n, logs.String())
	}
}
