// Package bgptest runs a bgp.Speaker in a child process inside a network
// namespace, for tests and benchmarks against real routers.
//
// A child process is needed because a network namespace belongs to an OS
// thread, while GoBGP dials and listens from goroutines that move between
// threads: a speaker started on a thread switched into a namespace would
// open some sockets outside it. The child is the test binary itself,
// re-executed under `ip netns exec` (its TestMain must call Main), so the
// whole process lives in the node's namespace, exactly like the real
// speaker on a node. The parent drives it with JSON lines on stdin; a
// SIGTERM stops it gracefully (bgp.Speaker.Stop), a SIGKILL is a crash.
package bgptest

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/go-logr/logr/funcr"

	"github.com/ironlb/ironlb/bgp"
)

const childEnv = "IRONLB_BGPTEST_CHILD"

// Options start a child speaker.
type Options struct {
	RouterID netip.Addr `json:"routerID"`
	ASN      uint32     `json:"asn"`
	// NodeIPv4 and NodeIPv6: see bgp.Options.
	NodeIPv4 netip.Addr `json:"nodeIPv4,omitzero"`
	NodeIPv6 netip.Addr `json:"nodeIPv6,omitzero"`
	// Verbosity of the child's log (logr V levels); the log goes to the
	// file given to Start.
	Verbosity int `json:"verbosity"`
}

type request struct {
	Op     string         `json:"op"` // peers, routes, status
	Peers  []bgp.PeerSpec `json:"peers,omitempty"`
	Routes []bgp.Route    `json:"routes,omitempty"`
}

type response struct {
	Error  string           `json:"error,omitempty"`
	Status []bgp.PeerStatus `json:"status,omitempty"`
}

// Main must be called by TestMain before m.Run: in the child it runs the
// speaker and exits, in the parent it returns at once.
func Main() {
	spec, ok := os.LookupEnv(childEnv)
	if !ok {
		return
	}
	if err := child(spec); err != nil {
		fmt.Fprintln(os.Stderr, "bgptest child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

func child(spec string) error {
	var opts Options
	if err := json.Unmarshal([]byte(spec), &opts); err != nil {
		return err
	}
	log := funcr.New(func(prefix, args string) {
		fmt.Fprintln(os.Stderr, time.Now().Format("15:04:05.000"), prefix, args)
	}, funcr.Options{Verbosity: opts.Verbosity})
	sp := bgp.New(log, bgp.Options{RouterID: opts.RouterID, ASN: opts.ASN, NodeIPv4: opts.NodeIPv4, NodeIPv6: opts.NodeIPv6})
	ctx := context.Background()
	if err := sp.Start(ctx); err != nil {
		return err
	}
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	lines := make(chan []byte)
	go func() {
		sc := bufio.NewScanner(os.Stdin)
		sc.Buffer(make([]byte, 1<<20), 64<<20)
		for sc.Scan() {
			lines <- append([]byte(nil), sc.Bytes()...)
		}
		close(lines)
	}()
	enc := json.NewEncoder(os.Stdout)
	for {
		select {
		case <-term:
			sp.Stop()
			return nil
		case line, ok := <-lines:
			if !ok { // parent gone: stop like a SIGTERM
				sp.Stop()
				return nil
			}
			var req request
			var resp response
			var err error
			if err = json.Unmarshal(line, &req); err == nil {
				switch req.Op {
				case "peers":
					err = sp.SetPeers(ctx, req.Peers)
				case "routes":
					err = sp.SetRoutes(ctx, req.Routes)
				case "status":
					resp.Status = sp.Status()
				default:
					err = fmt.Errorf("unknown op %q", req.Op)
				}
			}
			if err != nil {
				resp.Error = err.Error()
			}
			if err := enc.Encode(resp); err != nil {
				return err
			}
		}
	}
}

// Proc is a running child speaker.
type Proc struct {
	NS  string
	Log string // path of its log
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
	mu  sync.Mutex
	// done is closed when the process has exited.
	done chan struct{}
}

// Start runs a speaker in namespace ns, logging to logPath.
func Start(ns, logPath string, opts Options) (*Proc, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	spec, err := json.Marshal(opts)
	if err != nil {
		return nil, err
	}
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("ip", "netns", "exec", ns, self)
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stderr = logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		logf.Close()
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start speaker in %s: %w", ns, err)
	}
	p := &Proc{NS: ns, Log: logPath, cmd: cmd, in: in, out: bufio.NewScanner(out), done: make(chan struct{})}
	p.out.Buffer(make([]byte, 1<<20), 64<<20)
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()
	return p, nil
}

func (p *Proc) call(req request) (response, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	data, err := json.Marshal(req)
	if err != nil {
		return response{}, err
	}
	if _, err := p.in.Write(append(data, '\n')); err != nil {
		return response{}, fmt.Errorf("speaker in %s: %w (log %s)", p.NS, err, p.Log)
	}
	if !p.out.Scan() {
		return response{}, fmt.Errorf("speaker in %s exited (log %s): %v", p.NS, p.Log, p.out.Err())
	}
	var resp response
	if err := json.Unmarshal(p.out.Bytes(), &resp); err != nil {
		return response{}, err
	}
	if resp.Error != "" {
		return resp, fmt.Errorf("speaker in %s: %s", p.NS, resp.Error)
	}
	return resp, nil
}

// SetPeers calls Speaker.SetPeers in the child.
func (p *Proc) SetPeers(peers ...bgp.PeerSpec) error {
	_, err := p.call(request{Op: "peers", Peers: peers})
	return err
}

// SetRoutes calls Speaker.SetRoutes in the child.
func (p *Proc) SetRoutes(routes ...bgp.Route) error {
	_, err := p.call(request{Op: "routes", Routes: routes})
	return err
}

// Status calls Speaker.Status in the child.
func (p *Proc) Status() ([]bgp.PeerStatus, error) {
	resp, err := p.call(request{Op: "status"})
	return resp.Status, err
}

// Stop sends SIGTERM (a graceful Speaker.Stop) and waits up to 10s, then
// kills.
func (p *Proc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.Kill()
	}
}

// Kill ends the child at once (SIGKILL: a crash) and waits for it.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// LogTail returns the last lines of the child's log.
func (p *Proc) LogTail(n int) string {
	data, err := os.ReadFile(p.Log)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// WaitEstablished polls Status until every named peer is established.
func (p *Proc) WaitEstablished(ctx context.Context, names ...string) error {
	for {
		st, err := p.Status()
		if err != nil {
			return err
		}
		up := map[string]bool{}
		for _, s := range st {
			up[s.Name] = s.Established()
		}
		all := true
		for _, n := range names {
			all = all && up[n]
		}
		if all {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("speaker in %s: peers %v not established: %+v", p.NS, names, st), ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
