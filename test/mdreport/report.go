// Package mdreport writes the benchmarks' markdown reports: one section per
// bench in a shared file, and the machine the numbers come from.
package mdreport

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Machine describes this machine in one line: cores, CPU model, memory,
// kernel and Go version.
func Machine() string {
	mem := ""
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "MemTotal:") {
				f := strings.Fields(line)
				kb, _ := strconv.ParseInt(f[1], 10, 64)
				mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	model := ""
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				model = strings.TrimSpace(line[strings.Index(line, ":")+1:])
				break
			}
		}
	}
	kernel, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return fmt.Sprintf("nproc %d (%s), memory %s, Linux %s, %s", runtime.NumCPU(), model, mem, strings.TrimSpace(string(kernel)), runtime.Version())
}

// WriteSection replaces the section name of the markdown file path (or
// appends it), so each bench rewrites only its own part of the report.
func WriteSection(path, name, body string) error {
	begin, end := "<!-- begin "+name+" -->", "<!-- end "+name+" -->"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	text := string(old)
	if text == "" {
		text = "# ironlb at scale\n\nWritten by `make bench-scale` (test/bench/scale_bench_test.go and test/e2e/scale_bench_test.go, build tag `bench`); each bench rewrites its own section.\n"
	}
	section := begin + "\n" + body + end + "\n"
	if i, j := strings.Index(text, begin), strings.Index(text, end); i >= 0 && j > i {
		text = text[:i] + section + text[j+len(end)+1:]
	} else {
		text = strings.TrimRight(text, "\n") + "\n\n" + section
	}
	return os.WriteFile(path, []byte(text), 0o644)
}

// Proc is a process's CPU time (user+system) and its current and peak
// resident set, from /proc.
type Proc struct {
	CPU      time.Duration
	RSS, HWM int64 // bytes
	// RSSAnon is the private part of RSS (heap, stacks); the rest is
	// mostly the executable's pages, shared with every process of the
	// same binary.
	RSSAnon int64
}

// clkTck is USER_HZ, the unit of /proc/PID/stat times (100 on Linux).
const clkTck = 100

// ReadProc reads pid's Proc.
func ReadProc(pid int) (Proc, error) {
	var p Proc
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return p, err
	}
	f := strings.Fields(string(b[strings.LastIndexByte(string(b), ')')+2:]))
	if len(f) < 13 {
		return p, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	p.CPU = time.Duration(ut+st) * time.Second / clkTck
	b, err = os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return p, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		fs := strings.Fields(line)
		if len(fs) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(fs[1], 10, 64)
		switch fs[0] {
		case "VmRSS:":
			p.RSS = v << 10
		case "VmHWM:":
			p.HWM = v << 10
		case "RssAnon:":
			p.RSSAnon = v << 10
		}
	}
	return p, nil
}

// Percentiles summarizes durations as "p50 …, p90 …, p99 …, max …"
// (nearest rank on the sorted samples), the form every report line uses.
func Percentiles(samples []time.Duration) string {
	if len(samples) == 0 {
		return "no samples"
	}
	p := func(q float64) time.Duration { return Percentile(samples, q).Round(time.Microsecond) }
	return fmt.Sprintf("p50 %s, p90 %s, p99 %s, max %s", p(.5), p(.9), p(.99), p(1))
}

// Percentile is the q-quantile of samples (nearest rank), 0 for none.
func Percentile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return s[int(q*float64(len(s)-1)+0.5)]
}
