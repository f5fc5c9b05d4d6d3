package labkit

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/ironlb/ironlb/test/netlab"
)

// A new connection counts as answered at once if its answer comes within
// prompt: far above the lab's round trip, below the kernel's first SYN
// retransmission (1 s), so one whose first SYN went into an outage counts
// as not answered at once even when its retry is answered ("late").
// connTimeout is how long one may take in all: past the second
// retransmission (3 s) it counts as timed out.
const (
	prompt      = 500 * time.Millisecond
	connTimeout = 3500 * time.Millisecond
)

// Connector opens a new TCP connection to an address's port 80 every
// interval from a host and sends an HTTP GET on it, like the clients of a
// web Service at a steady rate, and records how each went: the view of an
// outage that traffic through kube-proxy gives (an address that
// kube-proxy forwards answers no ICMP echo).
type Connector struct {
	from  *netlab.Host
	dst   netip.Addr
	every time.Duration

	mu      sync.Mutex
	results []result
	stopped chan struct{}
	halt    sync.Once
	done    sync.WaitGroup
}

type result int8

const (
	pending result = iota
	answered
	late
	refused
	timedOut
)

// ConnStats is what a Connector saw.
type ConnStats struct {
	Sent int `json:"sent"`
	// Late were answered only after a SYN retransmission; Refused were
	// refused or reset; TimedOut had no answer in connTimeout.
	Late     int `json:"late"`
	Refused  int `json:"refused"`
	TimedOut int `json:"timedOut"`
	// Window is the longest run of consecutive connections not answered
	// at once, as time: the outage.
	Window time.Duration `json:"window"`
}

func (s ConnStats) String() string {
	return fmt.Sprintf("%s (of %d new connections: %d late, %d refused, %d timed out)", s.Window, s.Sent, s.Late, s.Refused, s.TimedOut)
}

// StartConnect starts connecting to dst from host every interval.
func StartConnect(from *netlab.Host, dst netip.Addr, every time.Duration) *Connector {
	c := &Connector{from: from, dst: dst, every: every, stopped: make(chan struct{})}
	c.done.Add(1)
	go c.run()
	return c
}

func (c *Connector) run() {
	defer c.done.Done()
	t := time.NewTicker(c.every)
	defer t.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-c.stopped:
			return
		case <-t.C:
		}
		c.mu.Lock()
		c.results = append(c.results, pending)
		c.mu.Unlock()
		c.done.Add(1)
		go func() {
			defer c.done.Done()
			start := time.Now()
			_, err := Get(c.from, c.dst, connTimeout)
			r := answered
			switch {
			case err == nil && time.Since(start) > prompt:
				r = late
			case err == nil:
			case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
				r = refused
			default:
				r = timedOut
			}
			c.mu.Lock()
			c.results[seq] = r
			c.mu.Unlock()
		}()
	}
}

// Halt opens no more connections; those in flight go on.
func (c *Connector) Halt() { c.halt.Do(func() { close(c.stopped) }) }

// Stop ends the connections, waiting for those in flight, and says how
// they went.
func (c *Connector) Stop() ConnStats {
	c.Halt()
	c.done.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	s := ConnStats{Sent: len(c.results)}
	run, longest := 0, 0
	for _, r := range c.results {
		switch r {
		case late:
			s.Late++
		case refused:
			s.Refused++
		case timedOut:
			s.TimedOut++
		}
		if r == answered {
			run = 0
			continue
		}
		run++
		longest = max(longest, run)
	}
	s.Window = time.Duration(longest) * c.every
	return s
}
