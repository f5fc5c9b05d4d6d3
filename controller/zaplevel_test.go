package controller

import (
	"os"

	"go.uber.org/zap/zapcore"
)

// zapLevel keeps test logs quiet unless IRONLB_TEST_VERBOSE is set.
func zapLevel() zapcore.Level {
	if os.Getenv("IRONLB_TEST_VERBOSE") != "" {
		return zapcore.DebugLevel
	}
	return zapcore.ErrorLevel
}
