package settings

import (
	"io"
	"maps"
	"strings"
	"testing"
)

// parseEnv parses the variables of env over those of base, with no flags
// and no config file.
func parseEnv(base, env map[string]string) (*Config, error) {
	e := maps.Clone(base)
	maps.Copy(e, env)
	return Parse(nil, func(k string) string { return e[k] }, io.Discard)
}

// parsedAsWanted checks a table case's parse: with want empty, err must
// be nil and it returns true (check the Config next); otherwise err must
// mention each of want, and it returns false.
func parsedAsWanted(t *testing.T, err error, want []string) bool {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatal(err)
		}
		return true
	}
	if err == nil {
		t.Fatalf("no error, want one saying %q", want)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error %q does not mention %q", err, w)
		}
	}
	return false
}
