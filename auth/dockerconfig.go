package auth

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/docker/cli/cli/config"
	"github.com/docker/cli/cli/config/configfile"
	"github.com/google/go-containerregistry/pkg/authn"
)

// DockerConfigSetting names the setting that points at the Docker config
// file, for messages.
const DockerConfigSetting = "UPSTREAM_DOCKER_CONFIG"

// dockerHubRegistry is the host Docker Hub's registry API answers on.
const dockerHubRegistry = "registry-1.docker.io"

// loginCacheTime is how long a registry's resolved credentials are reused
// before the config file's store or helper is asked again.
const loginCacheTime = 5 * time.Minute

// DockerConfig holds the registry credentials of a Docker config.json:
// its "auths", and the credential helpers it names ("credHelpers" per
// registry, "credsStore" for the rest), run as docker-credential-<name>
// from PATH through go-containerregistry's authn. The zero path gives
// anonymous access only. It is safe for concurrent use.
type DockerConfig struct {
	path string
	log  *slog.Logger

	mu   sync.Mutex             // serialises lookups: docker/cli's ConfigFile is not documented as safe for concurrent use
	file *configfile.ConfigFile // nil: anonymous only
}

// LoadDockerConfig reads the Docker config.json at path; "" means no file
// (every registry is used anonymously). Helpers are not run until a
// registry asks for credentials, but each one named must be on PATH. The
// error names UPSTREAM_DOCKER_CONFIG and the file. A nil logger discards.
func LoadDockerConfig(path string, log *slog.Logger) (*DockerConfig, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &DockerConfig{path: path, log: log}
	if path == "" {
		return d, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", DockerConfigSetting, err)
	}
	defer f.Close()
	if fi, err := f.Stat(); err == nil && fi.IsDir() {
		return nil, fmt.Errorf("%s: %s is a directory, not a Docker config.json", DockerConfigSetting, path)
	}
	cf, err := config.LoadFromReader(f)
	if err != nil {
		// The decoding errors name offsets and fields, never the secrets.
		return nil, fmt.Errorf("%s: %s is not a valid Docker config.json: %w", DockerConfigSetting, path, err)
	}
	if err := checkHelpers(cf); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", DockerConfigSetting, path, err)
	}
	d.file = cf
	return d, nil
}

// checkHelpers makes sure every credential helper the file names can be
// run, so that a config.json copied from a desktop ("credsStore":
// "desktop") fails at startup rather than on every pull.
func checkHelpers(cf *configfile.ConfigFile) error {
	helpers := map[string]string{}
	if cf.CredentialsStore != "" {
		helpers[cf.CredentialsStore] = "credsStore"
	}
	for host, h := range cf.CredentialHelpers {
		helpers[h] = "credHelpers of " + host
	}
	for _, name := range slices.Sorted(maps.Keys(helpers)) {
		if _, err := exec.LookPath("docker-credential-" + name); err != nil {
			return fmt.Errorf("credential helper docker-credential-%s (%s) cannot be run: %w", name, helpers[name], err)
		}
	}
	return nil
}

// String names the file, never its logins.
func (d *DockerConfig) String() string {
	if d.path == "" {
		return "docker-config(none: anonymous)"
	}
	return "docker-config(" + d.path + ")"
}

// LogValue implements slog.LogValuer as String does.
func (d *DockerConfig) LogValue() slog.Value { return slog.StringValue(d.String()) }

// Transport returns the RegistryTransport for registryHost (host[:port])
// over base, presenting this config's credentials for that host only.
func (d *DockerConfig) Transport(registryHost string, base http.RoundTripper) http.RoundTripper {
	return NewRegistryTransport(registryHost, base, RegistryOptions{
		Login: d.Login(registryHost), Logger: d.log.With("registry", registryHost)})
}

// Login returns the Login for registryHost: the config's entry for it
// (Docker Hub's hosts share the "https://index.docker.io/v1/" key), asked
// again at most every 5 minutes so that rotated helper credentials are
// picked up. Without a config file it is anonymous.
func (d *DockerConfig) Login(registryHost string) Login {
	if d.file == nil {
		return nil
	}
	kc := authn.RefreshingKeychain(fileKeychain{d: d}, loginCacheTime)
	var (
		mu   sync.Mutex
		auth authn.Authenticator
	)
	return func(ctx context.Context) (authn.AuthConfig, error) {
		mu.Lock()
		defer mu.Unlock()
		if auth == nil {
			a, err := authn.Resolve(ctx, kc, registryName(registryHost))
			if err != nil {
				return authn.AuthConfig{}, err
			}
			auth = a
		}
		c, err := authn.Authorization(ctx, auth)
		if err != nil {
			return authn.AuthConfig{}, fmt.Errorf("%s %s: credentials for %s: %w", DockerConfigSetting, d.path, registryHost, err)
		}
		return *c, nil
	}
}

// registryName is a registry host as an authn.Resource.
type registryName string

func (r registryName) String() string      { return string(r) }
func (r registryName) RegistryStr() string { return string(r) }

// fileKeychain is an authn.Keychain over the loaded config file.
type fileKeychain struct{ d *DockerConfig }

// Resolve implements authn.Keychain: the file's store (auths or a helper)
// for the registry, or anonymous when it has nothing.
func (k fileKeychain) Resolve(r authn.Resource) (authn.Authenticator, error) {
	host := strings.TrimSuffix(r.RegistryStr(), ":443") // the file names https hosts without it
	if host == dockerHubRegistry {
		host = "docker.io" // the file keeps Docker Hub under its index's key
	}
	k.d.mu.Lock()
	ac, err := k.d.file.GetAuthConfig(host)
	k.d.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("%s %s: credentials for %s: %w", DockerConfigSetting, k.d.path, r.RegistryStr(), err)
	}
	cfg := authn.AuthConfig{Username: ac.Username, Password: ac.Password, Auth: ac.Auth,
		IdentityToken: ac.IdentityToken, RegistryToken: ac.RegistryToken}
	if !hasLogin(cfg) {
		return authn.Anonymous, nil
	}
	return authn.FromConfig(cfg), nil
}
