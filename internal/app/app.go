// Package app holds the start-up pieces both binaries share, so the
// controller and the speaker log, serve metrics and answer probes the
// same way. It links no controller-runtime: the speaker runs on every
// node and pays for every package it links (see package kube).
package app

import (
	"flag"
	"fmt"
	"strconv"

	"github.com/go-logr/logr"
	"github.com/go-logr/zapr"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/rest"
)

// TuneRESTConfig makes a client config fit for ironlb's binaries: it accepts
// protobuf, which the API server sends for built-in kinds (the Service
// watch is the bulk of what both decode) and JSON for CRDs.
// Request bodies stay JSON, since CRD objects cannot be encoded as
// protobuf. No client-side rate limit: API Priority and Fairness is the
// limit.
func TuneRESTConfig(cfg *rest.Config) {
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	if cfg.QPS == 0 {
		cfg.QPS = -1
	}
}

// LogOptions are the logging flags, named as controller-runtime names
// them (the chart and existing command lines pass --zap-log-level).
type LogOptions struct {
	level   string
	devel   bool
	encoder string
}

// BindLogFlags registers the logging flags on fs.
func BindLogFlags(fs *flag.FlagSet) *LogOptions {
	o := &LogOptions{}
	fs.StringVar(&o.level, "zap-log-level", "", `log level: "debug", "info", "error", or an integer N to also show V(N) messages (default: info, or debug with --zap-devel)`)
	fs.BoolVar(&o.devel, "zap-devel", false, "development logging: console output, debug level, stack traces on warnings")
	fs.StringVar(&o.encoder, "zap-encoder", "", `"json" or "console" (default: json, or console with --zap-devel)`)
	return o
}

// Logger builds the logger the flags ask for: JSON lines on stderr by
// default.
func (o *LogOptions) Logger() (logr.Logger, error) {
	var cfg zap.Config
	if o.devel {
		cfg = zap.NewDevelopmentConfig()
	} else {
		cfg = zap.NewProductionConfig()
		cfg.Sampling = nil
		cfg.EncoderConfig.EncodeTime = zapcore.RFC3339NanoTimeEncoder
	}
	switch o.encoder {
	case "":
	case "json", "console":
		cfg.Encoding = o.encoder
	default:
		return logr.Discard(), fmt.Errorf("--zap-encoder=%q: want json or console", o.encoder)
	}
	switch o.level {
	case "":
	case "debug", "info", "error", "panic":
		l, _ := zapcore.ParseLevel(o.level)
		cfg.Level = zap.NewAtomicLevelAt(l)
	default:
		n, err := strconv.Atoi(o.level)
		if err != nil || n < 0 {
			return logr.Discard(), fmt.Errorf("--zap-log-level=%q: want debug, info, error, panic or a verbosity >= 0", o.level)
		}
		cfg.Level = zap.NewAtomicLevelAt(zapcore.Level(-n))
	}
	z, err := cfg.Build()
	if err != nil {
		return logr.Discard(), err
	}
	return zapr.NewLogger(z), nil
}
