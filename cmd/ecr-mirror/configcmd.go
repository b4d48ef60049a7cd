package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/ecr-mirror/ecr-mirror/internal/settings"
)

const configUsage = `Usage: ecr-mirror config check [FILE] [server flags]

Checks the server's configuration, the config FILE (default: $CONFIG_FILE)
merged with the environment and the flags as "ecr-mirror serve" would, and
prints it as a config file: every setting, those left at their defaults
commented out. Secret values are never printed. Every bad setting is
reported, named by its flag, variable, or file line and key; the exit
status is then 1.

Example:
  ecr-mirror config check /etc/ecr-mirror/config.yaml > effective.yaml
`

// runConfig runs "ecr-mirror config SUBCOMMAND".
func runConfig(_ context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	switch {
	case len(args) > 0 && isHelp(args[0]):
		fmt.Fprint(stdout, configUsage)
		return exitOK
	case len(args) == 0 || args[0] != "check":
		fmt.Fprint(stderr, configUsage)
		return exitUsage
	}
	args = args[1:]
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, configUsage)
		return exitOK
	}
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		file := args[0]
		args = args[1:]
		env := getenv
		getenv = func(k string) string {
			if k == "CONFIG_FILE" {
				return file
			}
			return env(k)
		}
	}
	cfg, err := settings.Parse(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	if err != nil {
		fmt.Fprintf(stderr, "ecr-mirror: invalid configuration:\n%v\n", err)
		return exitFail
	}
	if err := cfg.WriteFile(stdout); err != nil {
		fmt.Fprintf(stderr, "ecr-mirror: %v\n", err)
		return exitFail
	}
	return exitOK
}
