package runtimehook

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"
)

// RuncLog writes messages where runc would: to its --log file in its
// --log-format (logrus: JSON lines {"level","msg","time"} or logfmt text), and
// always to stderr with a "vgpu-runtime: " prefix. containerd reads the last
// "error" line of the log file as the reason a create failed, so an error here
// is what `ctr run` and kubelet events show. Never stdout: runc's callers parse
// it (`runc state`, `runc list`).
type RuncLog struct {
	Path   string // "" = no log file
	Format string // "json" or anything else (text)
	Stderr io.Writer
	Now    func() time.Time
}

// Error logs msg at level error.
func (l *RuncLog) Error(msg string) { l.write("error", msg) }

// Warn logs msg at level warning.
func (l *RuncLog) Warn(msg string) { l.write("warning", msg) }

func (l *RuncLog) write(level, msg string) {
	msg = "vgpu-runtime: " + msg
	if l.Stderr != nil {
		fmt.Fprintln(l.Stderr, msg)
	}
	if l.Path == "" {
		return
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	line := FormatRuncLogLine(l.Format, level, msg, now())
	// Appended with O_APPEND like runc does, so concurrent writers (runc
	// itself, after us) never overwrite each other's lines.
	f, err := os.OpenFile(l.Path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		if l.Stderr != nil {
			fmt.Fprintf(l.Stderr, "vgpu-runtime: cannot write runc log %s: %v\n", l.Path, err)
		}
		return
	}
	_, _ = f.WriteString(line)
	_ = f.Close()
}

// FormatRuncLogLine renders one line as runc's logrus would.
func FormatRuncLogLine(format, level, msg string, t time.Time) string {
	ts := t.Format(time.RFC3339Nano)
	if format == "json" {
		b, err := json.Marshal(struct {
			Level string `json:"level"`
			Msg   string `json:"msg"`
			Time  string `json:"time"`
		}{level, msg, ts})
		if err != nil { // cannot happen with strings
			b = []byte(`{"level":"error","msg":"vgpu-runtime: cannot encode log line"}`)
		}
		return string(b) + "\n"
	}
	return fmt.Sprintf("time=%s level=%s msg=%s\n", logfmtValue(ts), level, logfmtValue(msg))
}

// logfmtValue quotes a value the way logrus's text formatter does: bare when it
// is made of safe characters only.
func logfmtValue(s string) string {
	safe := s != ""
	for _, r := range s {
		alnum := r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9'
		if !alnum && !strings.ContainsRune("-._/@^+", r) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return strconv.Quote(s)
}
