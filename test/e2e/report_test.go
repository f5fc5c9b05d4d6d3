package e2e

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ironlb/ironlb/test/mdreport"
)

// reportTo is the markdown file the long runs write their results into
// (make bench-failover and bench-bgp: docs/performance.md; make chaos:
// docs/reliability.md), one section per test, so that the figures in the
// docs are the ones the last run measured, with the command that did.
var reportTo = flag.String("report", "", "markdown file whose section per test the benches and chaos tests (re)write")

// reports accumulates each test's result lines during this run.
var reports sync.Map // test name → *testReport

type testReport struct {
	mu    sync.Mutex
	lines []string
}

// record adds a result line to t's section of the -report file (if any)
// and rewrites the section.
func record(t *testing.T, line string) {
	t.Helper()
	if *reportTo == "" {
		return
	}
	v, _ := reports.LoadOrStore(t.Name(), &testReport{})
	r := v.(*testReport)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lines = append(r.lines, line)
	var b strings.Builder
	fmt.Fprintf(&b, "### `%s` (written by the test)\n\n", t.Name())
	fmt.Fprintf(&b, "- date: %s; machine: %s\n", time.Now().UTC().Format(time.RFC3339), mdreport.Machine())
	fmt.Fprintf(&b, "- command: `go test %s`\n", strings.Join(os.Args[1:], " "))
	for _, l := range r.lines {
		fmt.Fprintf(&b, "- %s\n", l)
	}
	if err := mdreport.WriteSection(*reportTo, t.Name(), b.String()); err != nil {
		t.Errorf("report: %v", err)
	}
}

// logRecord logs a result and records it in the report.
func logRecord(t *testing.T, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	record(t, line)
}
