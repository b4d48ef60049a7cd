package main

import (
	"strings"
	"testing"
)

// Every command and cache subcommand has a help text that starts with
// its usage line, the shared login part put in where it is asked for.
func TestEveryCommandHasItsHelp(t *testing.T) {
	t.Parallel()
	names := []string{"cache", "import", "export", "warm", "healthcheck", "config"}
	for sub := range cacheSubs() {
		names = append(names, "cache-"+sub)
	}
	for _, name := range names {
		text := usage(name)
		if !strings.HasPrefix(text, "Usage: ecr-mirror "+strings.ReplaceAll(name, "-", " ")) || strings.Contains(text, "{{") {
			t.Errorf("help of %s:\n%s", name, text)
		}
	}
	for _, name := range []string{"warm", "export"} {
		if !strings.Contains(usage(name), "--password-stdin (one line read from stdin)") {
			t.Errorf("help of %s lacks the login part:\n%s", name, usage(name))
		}
	}
}
