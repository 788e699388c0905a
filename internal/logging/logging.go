// Package logging builds the zap logger every vgpu daemon uses (vgpud,
// vgpu-dra), so their logs read the same.
package logging

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New builds the logger: zap's production JSON encoder (one object a line,
// for journald and log shippers) or, with format "console", the
// human-readable development encoder. Logs go to stderr.
func New(format, level string) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: want debug, info, warn or error", level)
	}
	var cfg zap.Config
	switch format {
	case "json":
		cfg = zap.NewProductionConfig()
		cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
		cfg.DisableStacktrace = true // errors here are operational, not bugs
	case "console":
		cfg = zap.NewDevelopmentConfig()
		cfg.Development = false // no panics on DPanic, no stack traces on warnings
		cfg.DisableStacktrace = true
	default:
		return nil, fmt.Errorf("log format %q: want json or console", format)
	}
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	// Sampling would drop repeated events (vgpud's backstop, the plugin's
	// refusals), which are exactly the lines an operator needs.
	cfg.Sampling = nil
	cfg.OutputPaths = []string{"stderr"}
	cfg.ErrorOutputPaths = []string{"stderr"}
	log, err := cfg.Build()
	if err != nil {
		return nil, fmt.Errorf("build logger: %w", err)
	}
	return log, nil
}
