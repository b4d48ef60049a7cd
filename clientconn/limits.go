package clientconn

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"time"
)

// Limits are a Watchdog and a Budget applied together to the servers of
// one process: the listeners it wraps count against the budget, the
// handlers it wraps are watched.
type Limits struct {
	Watchdog *Watchdog
	Budget   *Budget
	stop     context.CancelFunc
}

// StartLimits starts a Watchdog of stallTimeout on the wall clock, which
// runs until Stop, and sizes a Budget from maxConns as BudgetFor does.
func StartLimits(stallTimeout time.Duration, maxConns int, log *slog.Logger) (*Limits, error) {
	watchdog, err := NewWatchdog(stallTimeout, nil, log)
	if err != nil {
		return nil, err
	}
	budget, err := NewBudget(BudgetFor(maxConns, log), log)
	if err != nil {
		return nil, err
	}
	ctx, stop := context.WithCancel(context.Background())
	go watchdog.Run(ctx)
	return &Limits{Watchdog: watchdog, Budget: budget, stop: stop}, nil
}

// Listener counts ln's connections against the budget; see
// [Budget.Listener].
func (l *Limits) Listener(ln net.Listener, tlsConfig *tls.Config) net.Listener {
	return l.Budget.Listener(ln, tlsConfig)
}

// Handler watches h's responses; see [Watchdog.Wrap].
func (l *Limits) Handler(h http.Handler) http.Handler { return l.Watchdog.Wrap(h) }

// Stop stops the watchdog.
func (l *Limits) Stop() { l.stop() }
