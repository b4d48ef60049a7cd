package settings

import (
	"log/slog"
	"strings"
	"testing"
)

// The logger writes the format LOG_FORMAT names, from LOG_LEVEL up.
func TestLoggerFollowsLogFormatAndLevel(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		format string
		level  slog.Level
		want   string
	}{
		{format: "text", level: slog.LevelInfo, want: "level=INFO msg=shown\n"},
		{format: "json", level: slog.LevelInfo, want: `"level":"INFO","msg":"shown"}` + "\n"},
		{format: "text", level: slog.LevelWarn, want: ""},
	} {
		t.Run(tt.format+" "+tt.level.String(), func(t *testing.T) {
			t.Parallel()
			var out strings.Builder
			(&Config{LogFormat: tt.format, LogLevel: tt.level}).Logger(&out).Info("shown")
			if got := out.String(); !strings.HasSuffix(got, tt.want) || (tt.want == "") != (got == "") {
				t.Fatalf("logged %q, want it to end with %q", got, tt.want)
			}
		})
	}
}
