package kubelet

import (
	"bufio"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// cgroupFS is where this machine mounts its cgroup v1 hierarchies (and,
// hybrid, the unified one).
const cgroupFS = "/sys/fs/cgroup"

// hierarchies returns the directory of every mounted hierarchy.
func hierarchies() []string {
	entries, _ := os.ReadDir(cgroupFS)
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, filepath.Join(cgroupFS, e.Name()))
		}
	}
	return out
}

// makeCgroup makes a node's cgroup root in every hierarchy, the kubelet's
// cgroupRoot, which must exist: each node's pods live under its own, so
// one kubelet never takes another's pods for orphans. A new cpuset starts
// with no CPUs and no memory nodes; it gets its parent's.
func makeCgroup(root string) error {
	for _, h := range hierarchies() {
		dir := filepath.Join(h, root)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if filepath.Base(h) != "cpuset" {
			continue
		}
		for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
			b, err := os.ReadFile(filepath.Join(h, f))
			if err != nil {
				return err
			}
			if err := os.WriteFile(filepath.Join(dir, f), b, 0o644); err != nil {
				return err
			}
		}
	}
	return nil
}

// joinPids moves a process into cgroup (made if missing) of the pids
// hierarchy, where Close looks for what to kill; its children follow it.
func joinPids(cgroup string, pid int) error {
	dir := filepath.Join(cgroupFS, "pids", cgroup)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0o644)
}

// pidsUnder returns the processes in cgroup root or below, in any
// hierarchy.
func pidsUnder(root string) []int {
	var pids []int
	for _, h := range hierarchies() {
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(path)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && !slices.Contains(pids, pid) {
					pids = append(pids, pid)
				}
			}
			return nil
		})
	}
	return pids
}

// killCgroup kills every process under cgroup root until none is left
// (or 10 s have passed: then removeCgroup leaves what is busy).
func killCgroup(root string) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		pids := pidsUnder(root)
		if len(pids) == 0 || time.Now().After(deadline) {
			return
		}
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// removeCgroup removes cgroup root and everything below it in every
// hierarchy, deepest first (a cgroup directory is removed empty, its
// files go with it).
func removeCgroup(root string) {
	for _, h := range hierarchies() {
		var dirs []string
		_ = filepath.WalkDir(filepath.Join(h, root), func(path string, d fs.DirEntry, err error) error {
			if err == nil && d.IsDir() {
				dirs = append(dirs, path)
			}
			return nil
		})
		for _, d := range slices.Backward(dirs) {
			_ = os.Remove(d)
		}
	}
}

// unmountUnder detaches every mount at or below dir, deepest first: the
// kubelet's volume mounts, containerd's root filesystems, shm and netns
// mounts.
func unmountUnder(dir string) {
	dir = filepath.Clean(dir)
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return
	}
	defer f.Close()
	var points []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		mp := unescape(fields[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			points = append(points, mp)
		}
	}
	slices.SortFunc(points, func(a, b string) int { return len(b) - len(a) })
	for _, mp := range points {
		_ = unix.Unmount(mp, unix.MNT_DETACH)
	}
}

// unescape decodes mountinfo's octal escapes (\040 for a space).
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
