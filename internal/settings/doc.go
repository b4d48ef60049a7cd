// Package settings is the mirror server's configuration: every setting
// bound once to its typed field of Config, read from a flag, else its
// environment variable, else its default, and checked before anything is
// built.
//
//   - settings.go: the list (settings), one entry per setting with its
//     flag, variable, default (a Default… constant of the owning package
//     where there is one), -h text, README.md row and parser, and the
//     binders that parse a value into a field.
//   - config.go: Config, and Parse, which runs the parsers in list order
//     and reports every bad setting, each naming itself; Default names a
//     setting's default for the cache commands; the value parsers
//     (ParseUpstream, ParseSize, ParseAge, SplitList) they share.
//
// README.md's settings table is generated from the list (go generate
// ./cmd/ecr-mirror or ./internal/settings) and
// TestREADMESettingsTableMatchesSettings fails when they differ.
package settings
