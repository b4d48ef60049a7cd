package configreload

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/ecr-mirror/ecr-mirror/access"
	"github.com/ecr-mirror/ecr-mirror/internal/settings"
	"github.com/ecr-mirror/ecr-mirror/tlsreload"
)

// applier applies a changed config file to the running server: client
// access control and the TLS files.
type applier struct {
	cfg    *settings.Config // in force
	policy *access.Policy
	certs  *tlsreload.Reloader // nil: plain HTTP
	log    *slog.Logger
}

// Watch re-reads cfg's config file when it changes or on SIGHUP, and
// puts its access rules and TLS files in force on policy and certs (nil
// for plain HTTP), until ctx is done or the returned function, which
// waits for the watcher to end, is called. It catches SIGHUP before it
// returns, so a hangup never ends the process.
func Watch(ctx context.Context, cfg *settings.Config, policy *access.Policy, certs *tlsreload.Reloader, log *slog.Logger) (stop func()) {
	ctx, cancel := context.WithCancel(ctx)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	var wg sync.WaitGroup
	if cfg.ConfigFile == "" {
		wg.Go(func() { ignoreHangups(ctx, hup, log) })
	} else {
		a := &applier{cfg: cfg, policy: policy, certs: certs, log: log}
		w := settings.NewWatcher(cfg, a.apply, log.With("component", "config"))
		wg.Go(func() { w.Run(ctx, settings.DefaultCheckEvery, hup) })
	}
	return func() {
		cancel()
		wg.Wait()
		signal.Stop(hup)
	}
}

// ignoreHangups logs each SIGHUP, which has no config file to re-read.
func ignoreHangups(ctx context.Context, hup <-chan os.Signal, log *slog.Logger) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			log.Warn("SIGHUP ignored: there is no CONFIG_FILE to re-read; HTPASSWD_FILE and the TLS files are re-read when they change")
		}
	}
}

// apply puts next's reloadable settings in force: all of them, or,
// when one is refused, none.
func (a *applier) apply(next *settings.Config) error {
	old := a.cfg
	tlsChanged := a.certs != nil && next.TLSCertificate != "" &&
		(next.TLSCertificate != old.TLSCertificate || next.TLSPrivateKey != old.TLSPrivateKey)
	if (old.TLSCertificate == "") != (next.TLSCertificate == "") && (a.certs == nil) != (next.TLSCertificate == "") {
		// The listeners serve plain HTTP or TLS from the start. Told once
		// per change, and not when the file comes back to what runs.
		a.log.Warn("config file turns TLS on or off: that needs a restart", "setting", "TLS_CERTIFICATE")
	}
	if tlsChanged {
		if err := a.certs.SetFiles(next.TLSCertificate, next.TLSPrivateKey); err != nil {
			return fmt.Errorf("TLS_CERTIFICATE/TLS_PRIVATE_KEY: %w", err)
		}
	}
	if err := a.policy.Update(next.Access); err != nil {
		if tlsChanged {
			_ = a.certs.SetFiles(old.TLSCertificate, old.TLSPrivateKey) // loaded before
		}
		return fmt.Errorf("client access control: %w", err)
	}
	a.cfg = next
	a.log.Info("client access control in force", "access", a.policy.Summary())
	return nil
}
