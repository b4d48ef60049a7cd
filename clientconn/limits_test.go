package clientconn

import (
	"log/slog"
	"strings"
	"testing"
	"time"
)

func TestStartLimits(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	tests := []struct {
		name     string
		stall    time.Duration
		maxConns int
		wantErr  string // "": started
	}{
		{name: "both set", stall: time.Minute, maxConns: 3},
		{name: "budget from the open-file limit", stall: time.Second},
		{name: "no stall timeout", stall: 0, maxConns: 3, wantErr: "stall timeout 0s is not positive"},
		{name: "negative budget", stall: time.Minute, maxConns: -1, wantErr: "connection budget -1 is not positive"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := StartLimits(tt.stall, tt.maxConns, log)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("StartLimits = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Stop()
			if want := BudgetFor(tt.maxConns, log); l.Budget.Max() != want {
				t.Errorf("budget %d, want %d", l.Budget.Max(), want)
			}
		})
	}
}
