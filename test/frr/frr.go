// Package frr runs real FRRouting daemons (zebra, bgpd, bfdd from the
// Debian frr package) inside a network namespace, to test ironlb's BGP
// speaker against the router it will meet in production rather than
// against itself. Every file, socket and pid file lives in a directory the
// caller owns, so several routers run side by side and nothing touches
// /etc/frr or a system FRR; Close kills the daemons, and Start kills
// them itself on failure.
package frr

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// Dir is where Debian installs the FRR daemons.
const Dir = "/usr/lib/frr"

// Check says in one sentence why FRR cannot run here, or nil.
func Check() error {
	for _, d := range []string{"zebra", "bgpd", "bfdd"} {
		if _, err := os.Stat(filepath.Join(Dir, d)); err != nil {
			return fmt.Errorf("FRR is not installed (%s/%s missing): run `make deps` or apt-get install -y frr", Dir, d)
		}
	}
	if _, err := exec.LookPath("vtysh"); err != nil {
		return errors.New("vtysh is missing: apt-get install -y frr")
	}
	return nil
}

// Router is one FRR instance (zebra, bfdd, bgpd) in a namespace.
type Router struct {
	NS   string
	Dir  string
	done map[string]chan struct{}
	cmds map[string]*exec.Cmd
}

// daemons in start order: bgpd and bfdd connect to zebra.
var daemons = []string{"zebra", "bfdd", "bgpd"}

// Start runs zebra, bfdd and bgpd in namespace ns (via ip netns exec),
// with every runtime file under dir, and bgpd configured by conf (FRR
// configuration as in frr.conf: "router bgp ...", "bfd ..." blocks).
// It returns once vtysh answers for every daemon.
func Start(ns, dir, conf string) (*Router, error) {
	if err := Check(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	// A directory used before (the lab's bin/lab/frr) holds the last
	// run's sockets: a stale zserv.api made the clients start before
	// zebra listened and back off for 10 s, so bfdd missed bgpd's BFD
	// sessions in every other lab. Its logs would mislead, too.
	for _, pattern := range []string{"*.api", "*.vty", "*.sock", "*.pid", "*.log", "*.out"} {
		old, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, f := range old {
			if err := os.Remove(f); err != nil {
				return nil, fmt.Errorf("remove the last run's %s: %w", f, err)
			}
		}
	}
	r := &Router{NS: ns, Dir: dir, done: map[string]chan struct{}{}, cmds: map[string]*exec.Cmd{}}
	base := "log file " + filepath.Join(dir, "%s.log") + " informational\nlog timestamp precision 3\n"
	for _, d := range daemons {
		c := fmt.Sprintf(base, d)
		switch d {
		case "bgpd":
			c += conf
		case "bfdd":
			// bfdd takes "bfd" blocks (profiles); bgpd's "neighbor X
			// bfd" creates sessions through zebra without one.
			c += bfdBlocks(conf)
		}
		if err := os.WriteFile(filepath.Join(dir, d+".conf"), []byte(c), 0o644); err != nil {
			return nil, err
		}
	}
	for _, d := range daemons {
		if err := r.startDaemon(d); err != nil {
			r.Close()
			return nil, err
		}
		if d == "bfdd" {
			// bgpd's BFD sessions reach bfdd through zebra: bfdd must
			// be zebra's client before bgpd registers them.
			if err := r.waitZebraClient("bfd"); err != nil {
				r.Close()
				return nil, err
			}
		}
	}
	deadline := time.Now().Add(15 * time.Second)
	for _, d := range daemons {
		for {
			_, err := r.vtysh(d, "show version")
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				r.Close()
				return nil, fmt.Errorf("FRR %s in %s does not answer: %w\n%s", d, ns, err, r.Logs())
			}
			if r.exited(d) {
				r.Close()
				return nil, fmt.Errorf("FRR %s in %s exited at start:\n%s", d, ns, r.Logs())
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	return r, nil
}

// bfdBlocks extracts the top-level "bfd" blocks of conf.
func bfdBlocks(conf string) string {
	var b strings.Builder
	in := false
	for _, line := range strings.Split(conf, "\n") {
		top := line != "" && line[0] != ' '
		switch {
		case top && strings.TrimSpace(line) == "bfd":
			in = true
		case in && top:
			in = false
			if strings.TrimSpace(line) == "exit" {
				b.WriteString("exit\n")
			}
			continue
		}
		if in {
			b.WriteString(line + "\n")
		}
	}
	return b.String()
}

func (r *Router) startDaemon(d string) error {
	args := []string{"netns", "exec", r.NS, filepath.Join(Dir, d),
		// Stay root (the frr user may not enter the caller's directory);
		// group frrvty because FRR insists that its user be in that group.
		"-u", "root", "-g", "frrvty",
		"-f", filepath.Join(r.Dir, d+".conf"),
		"-i", filepath.Join(r.Dir, d+".pid"),
		"-z", filepath.Join(r.Dir, "zserv.api"),
		"--vty_socket", r.Dir,
		"-P", "0", // no TCP vty
	}
	switch d {
	case "bfdd":
		args = append(args, "--bfdctl", filepath.Join(r.Dir, "bfdd.sock"))
	case "bgpd":
		args = append(args, "-p", "179")
	}
	out, err := os.Create(filepath.Join(r.Dir, d+".out"))
	if err != nil {
		return err
	}
	cmd := exec.Command("ip", args...)
	cmd.Stdout, cmd.Stderr = out, out
	// Die with the test process, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		out.Close()
		return fmt.Errorf("start FRR %s in %s: %w", d, r.NS, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); out.Close(); close(done) }()
	r.cmds[d], r.done[d] = cmd, done
	// zebra must have created its socket before the clients start, or
	// they retry with a back-off.
	if d == "zebra" {
		sock := filepath.Join(r.Dir, "zserv.api")
		for i := 0; i < 200; i++ {
			if _, err := os.Stat(sock); err == nil {
				return nil
			}
			if r.exited(d) {
				return fmt.Errorf("FRR zebra in %s exited at start:\n%s", r.NS, r.Logs())
			}
			time.Sleep(25 * time.Millisecond)
		}
		return fmt.Errorf("FRR zebra in %s: no socket %s after 5s", r.NS, sock)
	}
	return nil
}

// waitZebraClient waits until zebra lists a client of the protocol.
func (r *Router) waitZebraClient(proto string) error {
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := r.vtysh("zebra", "show zebra client summary")
		if err == nil && strings.Contains(string(out), proto) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("FRR in %s: %s is no client of zebra after 15s (%v):\n%s%s", r.NS, proto, err, out, r.Logs())
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func (r *Router) exited(d string) bool {
	select {
	case <-r.done[d]:
		return true
	default:
		return false
	}
}

// Close kills the daemons and waits for them to exit. It may be called
// more than once.
func (r *Router) Close() {
	for _, d := range slices.Backward(daemons) {
		cmd := r.cmds[d]
		if cmd == nil {
			continue
		}
		_ = cmd.Process.Kill()
		<-r.done[d]
		delete(r.cmds, d)
	}
}

// Logs returns the tail of every daemon's log and output, for failure
// messages.
func (r *Router) Logs() string {
	var b strings.Builder
	for _, d := range daemons {
		for _, f := range []string{d + ".log", d + ".out"} {
			data, err := os.ReadFile(filepath.Join(r.Dir, f))
			if err != nil || len(data) == 0 {
				continue
			}
			lines := strings.Split(strings.TrimSpace(string(data)), "\n")
			if len(lines) > 80 {
				lines = lines[len(lines)-80:]
			}
			fmt.Fprintf(&b, "--- %s (%s)\n%s\n", f, r.NS, strings.Join(lines, "\n"))
		}
	}
	return b.String()
}

func (r *Router) vtysh(daemon, cmd string) ([]byte, error) {
	args := []string{"--vty_socket", r.Dir}
	if daemon != "" {
		args = append(args, "-d", daemon)
	}
	args = append(args, "-c", cmd)
	c := exec.Command("vtysh", args...)
	var out, errb bytes.Buffer
	c.Stdout, c.Stderr = &out, &errb
	if err := c.Run(); err != nil {
		return out.Bytes(), fmt.Errorf("vtysh -c %q: %w: %s%s", cmd, err, strings.TrimSpace(errb.String()), strings.TrimSpace(out.String()))
	}
	return out.Bytes(), nil
}

// Vtysh runs one vtysh command and returns its output.
func (r *Router) Vtysh(cmd string) (string, error) {
	out, err := r.vtysh("", cmd)
	return string(out), err
}

// VtyshJSON runs a "... json" vtysh command and decodes its output into out.
func (r *Router) VtyshJSON(cmd string, out any) error {
	data, err := r.vtysh("", cmd)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("vtysh -c %q: decode %q: %w", cmd, truncate(data, 300), err)
	}
	return nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
