package settings

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"

	"github.com/ecr-mirror/ecr-mirror/registry"
)

// PrefixListener is one PULL_THROUGHS entry in aws-ecr-http-proxy's
// PREFIX:PORT form: a listener on Addr (":PORT") whose repositories are
// those under Prefix/ in the default upstream (an ECR registry), those
// named library/... under LibraryPrefix/ when it is set.
type PrefixListener struct {
	Addr          string
	Prefix        string
	LibraryPrefix string
}

// seedPrefixTokens are the prefix names of aws-ecr-http-proxy's
// PULL_THROUGHS that do not name the ECR prefix itself.
var seedPrefixTokens = map[string]string{
	// Docker's official images on ECR Public, for the Docker daemon's
	// registry-mirrors: library/alpine is ecr-public/docker/library/alpine.
	"ecr-public-docker": "ecr-public/docker",
}

// seedLibraryPrefixes are where aws-ecr-http-proxy's prefixes keep
// Docker's official images (library/...), when not under the prefix
// itself: ECR Public has them under docker/.
var seedLibraryPrefixes = map[string]string{"ecr-public": "ecr-public/docker"}

// addPrefixListener reads one PULL_THROUGHS entry that is not
// registry=prefix: it must be prefix:port.
func (c *Config) addPrefixListener(entry string) error {
	prefix, port, ok := strings.Cut(entry, ":")
	prefix = strings.Trim(strings.TrimSpace(prefix), "/")
	n, err := strconv.Atoi(strings.TrimSpace(port))
	if !ok || prefix == "" || err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q is neither registry=prefix (e.g. docker.io=docker-hub) nor prefix:port (e.g. docker-hub:5001)", entry)
	}
	if p, ok := seedPrefixTokens[prefix]; ok {
		prefix = p
	}
	if err := registry.ValidateName(prefix); err != nil {
		return fmt.Errorf("%q: prefix %q is not a valid ECR repository prefix: %v", entry, prefix, err)
	}
	addr := ":" + strconv.Itoa(n)
	for _, pl := range c.PrefixListeners {
		if pl.Addr == addr && n != 0 {
			return fmt.Errorf("%q: port %d is already the listener of prefix %s", entry, n, pl.Prefix)
		}
	}
	c.PrefixListeners = append(c.PrefixListeners, PrefixListener{Addr: addr, Prefix: prefix, LibraryPrefix: seedLibraryPrefixes[prefix]})
	return nil
}

// checkPrefixPorts reports a prefix:port listener whose port another
// registry listener takes (aws-ecr-http-proxy's PULL_THROUGHS=x:5000
// with no PORT meets LISTEN_ADDR's default :5000), naming both settings.
func (c *Config) checkPrefixPorts() error {
	others := []struct{ setting, addr string }{{"LISTEN_ADDR", c.ListenAddr}}
	for _, nl := range c.NamespaceListeners {
		others = append(others, struct{ setting, addr string }{"NAMESPACE_LISTENERS", nl.Addr})
	}
	var errs []error
	for _, pl := range c.PrefixListeners {
		for _, o := range others {
			if _, port, err := net.SplitHostPort(o.addr); err == nil && port != "0" && ":"+port == pl.Addr {
				errs = append(errs, fmt.Errorf("PULL_THROUGHS: %s%s and %s %s take the same port: move one of them (LISTEN_ADDR, or PORT, defaults to :5000)",
					pl.Prefix, pl.Addr, o.setting, o.addr))
			}
		}
	}
	return errors.Join(errs...)
}
