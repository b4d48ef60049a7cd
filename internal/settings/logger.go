package settings

import (
	"io"
	"log/slog"
)

// Logger is the process logger LOG_LEVEL and LOG_FORMAT ask for, writing
// to w: JSON lines for "json", else text.
func (c *Config) Logger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: c.LogLevel}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
