package main

import (
	"embed"
	"fmt"
	"strings"
)

// helpFiles are the commands' help texts, one file per command
// ("cache-ls.txt" for "cache ls"), kept out of the code so that they
// read and diff as the user sees them.
//
//go:embed help/*.txt
var helpFiles embed.FS

// usage is the help text of the command name, with login.txt, the part
// warm's and export's share, where the text says {{login}}.
func usage(name string) string {
	text, err := helpFiles.ReadFile("help/" + name + ".txt")
	if err != nil { // TestEveryCommandHasItsHelp rules it out
		return fmt.Sprintf("ecr-mirror: no help for %s: %v\n", name, err)
	}
	if !strings.Contains(string(text), "{{login}}") {
		return string(text)
	}
	login, _ := helpFiles.ReadFile("help/login.txt")
	return strings.Replace(string(text), "{{login}}\n", string(login), 1)
}
