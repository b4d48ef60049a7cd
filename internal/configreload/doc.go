// Package configreload puts a running server's changed CONFIG_FILE in
// force: [Watch] runs a settings.Watcher (the file checked every
// settings.DefaultCheckEvery, and at once on SIGHUP), and applies what
// may change without a restart: client access control
// (access.Policy.Update) and the TLS files (tlsreload.Reloader.SetFiles),
// all of them or, when one is refused, none. Every other setting needs a
// restart, as the Watcher logs. Without a config file, SIGHUP is logged
// and ignored rather than ending the process.
package configreload
