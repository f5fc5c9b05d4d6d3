package membership

import (
	"errors"
	"fmt"
	"net"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// rcvBuf is the socket receive buffer asked for: the packets of an
// Interval wait there until Run reads them (the kernel caps it at
// net.core.rmem_max, 208 KiB by default: a few hundred heartbeats).
const rcvBuf = 1 << 20

// poller reads, without blocking, every datagram waiting on a UDP socket,
// with the time the kernel received it.
type poller struct {
	rc  syscall.RawConn
	buf []byte
	oob []byte
	// stamps says the kernel timestamps packets (SO_TIMESTAMPNS).
	stamps bool
}

func newPoller(c *net.UDPConn) (*poller, error) {
	_ = c.SetReadBuffer(rcvBuf) // best effort: the default holds an Interval of a big cluster too
	rc, err := c.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	p := &poller{rc: rc, buf: make([]byte, recvBufLen), oob: make([]byte, unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{}))))}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_TIMESTAMPNS, 1)
	}); err != nil {
		return nil, fmt.Errorf("raw socket: %w", err)
	}
	p.stamps = serr == nil
	return p, nil
}

// drain hands every waiting datagram to fn, oldest first, and returns
// once none is left (or with the socket's error). drop, if it returns
// true, discards packets (a test hook).
func (p *poller) drain(drop func() bool, fn func(b []byte, arrived time.Time)) error {
	var rerr error
	err := p.rc.Read(func(fd uintptr) bool {
		for {
			n, oobn, _, _, err := unix.Recvmsg(int(fd), p.buf, p.oob, unix.MSG_DONTWAIT)
			switch {
			case errors.Is(err, unix.EAGAIN):
				return true // nothing left: done, without waiting
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil:
				rerr = err
				return true
			}
			if drop() {
				continue
			}
			fn(p.buf[:n], p.arrival(p.oob[:oobn]))
		}
	})
	if err != nil {
		return err
	}
	return rerr
}

// arrival turns the kernel's receive timestamp (wall clock) into a time
// on the monotonic clock, by its age now; without one, now.
func (p *poller) arrival(oob []byte) time.Time {
	now := time.Now()
	if !p.stamps {
		return now
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return now
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_SOCKET || m.Header.Type != unix.SCM_TIMESTAMPNS || len(m.Data) < int(unsafe.Sizeof(unix.Timespec{})) {
			continue
		}
		ts := (*unix.Timespec)(unsafe.Pointer(&m.Data[0]))
		age := now.Sub(time.Unix(ts.Unix()))
		// A wall clock step between the two readings can't make a
		// packet arrive in the future, or implausibly long ago.
		if age < 0 || age > time.Minute {
			return now
		}
		return now.Add(-age)
	}
	return now
}
