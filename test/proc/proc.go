// Package proc runs the lab's and the tests' long-running components
// (kube-controller-manager, kube-proxy, kubelet, containerd, ...) as child
// processes with a log file each, dying with the test process, and says
// once they have ended why, with their last log lines: a component that
// stops is named at once instead of surfacing later as a timeout.
package proc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"time"
)

// Proc is one running component.
type Proc struct {
	Name string
	Log  string // its output, both streams
	cmd  *exec.Cmd
	done chan struct{}
}

// Start runs argv with its output in the file log, and env added to this
// process's environment. The child gets SIGKILL if this process dies.
func Start(name, log string, env []string, argv ...string) (*Proc, error) {
	f, err := os.Create(log)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	p := &Proc{Name: name, Log: log, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

// Pid is the process's ID.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// Ended returns the process's exit state and last log lines if it has
// ended, else "".
func (p *Proc) Ended() string {
	select {
	case <-p.done:
		b, _ := os.ReadFile(p.Log)
		return fmt.Sprintf("%s exited (%s); last lines of %s:\n%s", p.Name, p.cmd.ProcessState, p.Log, Tail(string(b), 15))
	default:
		return ""
	}
}

// Ended says, for each of ps (nil ones skipped) that has ended, its exit
// state and last log lines, or "" if all run.
func Ended(ps ...*Proc) string {
	var out []string
	for _, p := range ps {
		if p == nil {
			continue
		}
		if msg := p.Ended(); msg != "" {
			out = append(out, msg)
		}
	}
	return strings.Join(out, "\n")
}

// Kill sends SIGKILL, as a crash would.
func (p *Proc) Kill() { _ = p.cmd.Process.Kill() }

// Exited tells whether the process has ended (crashed, or stopped).
func (p *Proc) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Wait waits until the process has ended.
func (p *Proc) Wait() { <-p.done }

// Stop sends SIGTERM and waits up to grace for the process to end, then
// kills it.
func (p *Proc) Stop(grace time.Duration) {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(grace):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Tail returns the last n lines of s.
func Tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// Poll calls check every period until ctx ends: the loop of every watcher
// that reports a component once it has stopped.
func Poll(ctx context.Context, every time.Duration, check func()) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		check()
	}
}
