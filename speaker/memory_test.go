package speaker

import (
	"testing"
	"time"
)

// TestTrimmer: no trim while passes run or before enough was allocated
// since the last one; one once both hold, and not again without new
// garbage.
func TestTrimmer(t *testing.T) {
	now := time.Unix(1000, 0)
	var allocated uint64
	frees := 0
	tr := &Trimmer{Quiet: 10 * time.Second, MinGarbage: 1 << 20,
		now: func() time.Time { return now }, allocs: func() uint64 { return allocated }, free: func() { frees++ }}
	for _, step := range []struct {
		what    string
		advance time.Duration
		alloc   uint64
		pass    bool
		want    bool
	}{
		{"a burst of passes", 0, 50 << 20, true, false},
		{"5 s after the last pass", 5 * time.Second, 0, false, false},
		{"10 s after the last pass", 5 * time.Second, 0, false, true},
		{"idle, little allocated", 10 * time.Second, 512 << 10, false, false},
		{"idle, the minimum allocated since the trim", 10 * time.Second, 512 << 10, false, true},
		{"a pass again", 10 * time.Second, 4 << 20, true, false},
		{"just after it", time.Second, 0, false, false},
		{"quiet again", 10 * time.Second, 0, false, true},
		{"nothing new", 10 * time.Second, 0, false, false},
	} {
		now = now.Add(step.advance)
		allocated += step.alloc
		if step.pass {
			tr.Active()
		}
		before := frees
		if got := tr.check(); got != step.want || frees-before != map[bool]int{true: 1}[step.want] {
			t.Errorf("%s: trimmed = %v (%d frees), want %v", step.what, got, frees-before, step.want)
		}
	}
}
