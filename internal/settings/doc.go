// Package settings is the mirror server's configuration: every setting
// bound once to its typed field of Config, read from a flag, else its
// environment variable, else the config file (CONFIG_FILE), else its
// default, and checked before anything is built.
//
// A setting is named once, by its variable: its flag is the variable in
// lower case with dashes (-cache-max-size), its config-file key the
// variable in lower case (cache_max_size). A few older flag names stay as
// deprecated aliases that warn.
//
//   - settings.go: the list (settings), one entry per setting with its
//     variable, what its flag takes, the shape the file may give it, its
//     default (a Default… constant of the owning package where there is
//     one), -h text, README.md row, parser, and whether a running server
//     reloads it; and the binders that parse a value into a field.
//   - config.go: Config, and Parse, which resolves each value (recording
//     where it came from, so errors name the flag as typed, the variable,
//     or the file, line and key), runs the parsers in list order and
//     reports every bad setting; Default and FileOrDefault give the cache
//     commands a setting's default, or its value in the config file; the value parsers (ParseUpstream, ParseSize,
//     ParseAge, SplitList) they share.
//   - aliases.go: the variables of the proxies ecr-mirror replaces
//     (aws-ecr-http-proxy's PORT and ENABLE_SSL, aws_ecr_proxy's
//     LISTEN_HOST/LISTEN_PORT, ecr_reverse_proxy's ECR_REGISTRY, ...),
//     environment variables only: each gives one of our settings the
//     value it meant there (after our variable, before the file), or is
//     accepted and explained; Config.LogAliases logs those used, once
//     each, and one that disagrees with ours or with another is an error
//     naming both. docs/migrating.md lists them; a test keeps it true.
//   - prefixlisteners.go: PULL_THROUGHS' PREFIX:PORT entries, each a
//     listener for the repositories under one ECR prefix.
//   - logger.go: Config.Logger, the process logger of LOG_LEVEL and
//     LOG_FORMAT.
//   - flags.go: the flags, typed (a true/false flag stands alone), with
//     their deprecated aliases, and Usage, the server's help, generated
//     from the list.
//   - file.go: the YAML config file, read with line numbers: scalars as
//     in the variables, lists as sequences, key=value lists as mappings;
//     WithConfigFile, for "config check FILE".
//   - render.go: Config.WriteFile, the configuration in effect written as
//     a config file (ecr-mirror config check), secret settings left out.
//   - reload.go: Config.Reload and Changed, and Watcher, which re-reads a
//     running server's config file and hands the settings marked reload
//     to the server (internal/configreload applies them), logging the
//     others as needing a restart.
//
// README.md's settings table is generated from the list (go generate
// ./cmd/ecr-mirror or ./internal/settings) and
// TestREADMESettingsTableMatchesSettings fails when they differ.
package settings
