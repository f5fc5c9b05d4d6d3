package membership

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// datagram is one packet to send.
type datagram struct {
	b  []byte
	to netip.AddrPort
}

// mmsghdr is the kernel's struct mmsghdr: a msghdr and the byte count the
// call fills in, padded to the word size.
type mmsghdr struct {
	hdr unix.Msghdr
	n   uint32
	_   [unsafe.Sizeof(uintptr(0)) - 4]byte
}

// sender sends datagrams with one sendmmsg per batch on a socket it
// doesn't own, and works on sockets outside Go's network poller too (it
// never waits: MSG_DONTWAIT, and a full socket buffer drops the rest, as
// a congested network would). golang.org/x/net's batch writer would do,
// but only on a *net.UDPConn, which the poller watches: there each sent
// packet, once the kernel let go of it, woke a thread to report the
// socket writable again.
type sender struct {
	rc  syscall.RawConn
	six bool // an AF_INET6 socket
	// hdrs, iovs and names are reused from batch to batch; the kernel
	// reads them through the pointers in hdrs.
	hdrs  []mmsghdr
	iovs  []unix.Iovec
	names []unix.RawSockaddrInet6
}

func newSender(rc syscall.RawConn, bind netip.Addr) *sender {
	return &sender{rc: rc, six: !bind.Unmap().Is4()}
}

// send sends ds, all in one system call if the kernel takes them, and
// returns how many went out and the first error. A destination the
// kernel refuses, or an IPv6 one for an IPv4 socket, is skipped; the
// others still go.
func (s *sender) send(ds []datagram) (int, error) {
	if len(s.hdrs) < len(ds) {
		s.hdrs = make([]mmsghdr, len(ds))
		s.iovs = make([]unix.Iovec, len(ds))
		s.names = make([]unix.RawSockaddrInet6, len(ds))
	}
	k := 0
	for _, d := range ds {
		nameLen, ok := s.putName(&s.names[k], d.to)
		if !ok || len(d.b) == 0 {
			continue
		}
		s.iovs[k].Base = &d.b[0]
		s.iovs[k].SetLen(len(d.b))
		s.hdrs[k] = mmsghdr{hdr: unix.Msghdr{Name: (*byte)(unsafe.Pointer(&s.names[k])), Namelen: nameLen, Iov: &s.iovs[k]}}
		s.hdrs[k].hdr.SetIovlen(1)
		k++
	}
	next, sent := 0, 0
	var serr error
	err := s.rc.Write(func(fd uintptr) bool {
		for next < k {
			n, _, e := unix.Syscall6(unix.SYS_SENDMMSG, fd, uintptr(unsafe.Pointer(&s.hdrs[next])), uintptr(k-next), unix.MSG_DONTWAIT, 0, 0)
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN:
				// The socket buffer is full: the rest is dropped.
				serr = e
				return true
			case e != 0:
				// This destination failed (no route, say): skip it, so
				// one bad peer doesn't silence the others.
				if serr == nil {
					serr = e
				}
				next++
				continue
			case n == 0:
				return true
			}
			next += int(n)
			sent += int(n)
		}
		return true
	})
	runtime.KeepAlive(ds)
	if err == nil {
		err = serr
	}
	return sent, err
}

// putName writes to as a socket address of the socket's family.
func (s *sender) putName(sa *unix.RawSockaddrInet6, to netip.AddrPort) (uint32, bool) {
	port := (*[2]byte)(unsafe.Pointer(&sa.Port))
	port[0], port[1] = byte(to.Port()>>8), byte(to.Port())
	if !s.six {
		a := to.Addr().Unmap()
		if !a.Is4() {
			return 0, false
		}
		sa4 := (*unix.RawSockaddrInet4)(unsafe.Pointer(sa))
		sa4.Family, sa4.Addr, sa4.Zero = unix.AF_INET, a.As4(), [8]uint8{}
		return unix.SizeofSockaddrInet4, true
	}
	sa.Family, sa.Flowinfo, sa.Addr, sa.Scope_id = unix.AF_INET6, 0, to.Addr().As16(), 0
	if z := to.Addr().Zone(); z != "" {
		ifi, err := net.InterfaceByName(z)
		if err != nil {
			return 0, false
		}
		sa.Scope_id = uint32(ifi.Index)
	}
	return unix.SizeofSockaddrInet6, true
}

// rcvBuf is the socket receive buffer asked for: the packets of an
// Interval wait there until Run reads them (the kernel caps it at
// net.core.rmem_max, 208 KiB by default: a few hundred heartbeats).
const rcvBuf = 1 << 20

// recvBatch is how many datagrams one recvmmsg call takes at most.
const recvBatch = 64

// poller reads, without blocking, every datagram waiting on a UDP socket,
// with the time the kernel received it: recvmmsg, up to recvBatch at a
// time, into buffers it reuses. (unix.Recvmsg, one call per packet, also
// asked the socket its protocol with a getsockopt for every packet, to
// build a source address the mesh doesn't use.)
type poller struct {
	rc     syscall.RawConn
	hdrs   []mmsghdr
	iovs   []unix.Iovec
	bufs   []byte // recvBatch buffers of recvBufLen
	oobs   []byte // recvBatch control buffers of oobLen
	oobLen int
	// stamps says the kernel timestamps packets (SO_TIMESTAMPNS).
	stamps bool
}

func newPoller(rc syscall.RawConn) (*poller, error) {
	oobLen := unix.CmsgSpace(int(unsafe.Sizeof(unix.Timespec{})))
	p := &poller{
		rc:     rc,
		hdrs:   make([]mmsghdr, recvBatch),
		iovs:   make([]unix.Iovec, recvBatch),
		bufs:   make([]byte, recvBatch*recvBufLen),
		oobs:   make([]byte, recvBatch*oobLen),
		oobLen: oobLen,
	}
	for i := range p.hdrs {
		p.iovs[i].Base = &p.bufs[i*recvBufLen]
		p.iovs[i].SetLen(recvBufLen)
		p.hdrs[i].hdr.Iov = &p.iovs[i]
		p.hdrs[i].hdr.SetIovlen(1)
		p.hdrs[i].hdr.Control = &p.oobs[i*oobLen]
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		// Best effort: the default holds an Interval of a big cluster too.
		_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, rcvBuf)
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
			for i := range p.hdrs {
				p.hdrs[i].hdr.SetControllen(p.oobLen)
				p.hdrs[i].hdr.Flags = 0
			}
			n, _, e := unix.Syscall6(unix.SYS_RECVMMSG, fd, uintptr(unsafe.Pointer(&p.hdrs[0])), uintptr(len(p.hdrs)), unix.MSG_DONTWAIT, 0, 0)
			switch {
			case e == unix.EAGAIN:
				return true // nothing left: done, without waiting
			case e == unix.EINTR:
				continue
			case e != 0:
				rerr = e
				return true
			}
			for i := range int(n) {
				if drop() {
					continue
				}
				h := &p.hdrs[i]
				b := p.bufs[i*recvBufLen : i*recvBufLen+int(h.n)]
				oob := p.oobs[i*p.oobLen : i*p.oobLen+min(int(h.hdr.Controllen), p.oobLen)]
				fn(b, p.arrival(oob))
			}
			if int(n) < len(p.hdrs) {
				return true // the queue was emptied
			}
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

// sockets are the mesh's sockets, both on its one address and port, in
// one SO_REUSEPORT group whose classic BPF program steers each arriving
// packet by its type byte:
//
//   - rx (index 0 of the group) gets the heartbeats and sends everything.
//     It is read at each tick and kept out of Go's network poller
//     altogether (a blocking socket wrapped in an os.File, used with
//     MSG_DONTWAIT): in the poller, every heartbeat that arrived, and
//     every one sent once the kernel let go of it, woke a thread to
//     report the socket readable or writable, some 500 wakeups a second
//     on a quiet node of a 50-node cluster.
//   - urgent (index 1) gets the leaving messages only, and a goroutine
//     reads it at once, so a goodbye is handled within microseconds.
//
// Where the group or the program can't be had, one ordinary socket does
// everything (urgent is nil): correct, with wakeups per packet and
// leaving messages read at the next tick.
type sockets struct {
	rx     syscall.RawConn
	urgent *net.UDPConn
	local  netip.AddrPort
	close  []io.Closer
}

func (s *sockets) Close() error {
	var first error
	for _, c := range s.close {
		if err := c.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

func listenGroup(bind netip.AddrPort) (*sockets, error) {
	rx, local, err := blockingUDP(bind)
	if err != nil {
		return plainSocket(bind)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
	s := &sockets{local: local, close: []io.Closer{rx}}
	pc, err := lc.ListenPacket(context.Background(), "udp", local.String())
	if err != nil {
		s.Close()
		return plainSocket(bind)
	}
	s.urgent = pc.(*net.UDPConn)
	s.close = append(s.close, s.urgent)
	if s.rx, err = rx.SyscallConn(); err != nil {
		s.Close()
		return plainSocket(bind)
	}
	// Group indexes follow the order of binding: rx 0, urgent 1.
	prog := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_B | unix.BPF_ABS, K: typeOffset}, // A = payload[typeOffset]
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: uint32(msgLeaving)},
		{Code: unix.BPF_RET | unix.BPF_K, K: 1},
		{Code: unix.BPF_RET | unix.BPF_K, K: 0},
	}
	var serr error
	if err := s.rx.Control(func(fd uintptr) {
		serr = unix.SetsockoptSockFprog(int(fd), unix.SOL_SOCKET, unix.SO_ATTACH_REUSEPORT_CBPF,
			&unix.SockFprog{Len: uint16(len(prog)), Filter: &prog[0]})
	}); err != nil || serr != nil {
		// Without steering the kernel would spread packets over both
		// by hash.
		s.Close()
		return plainSocket(bind)
	}
	return s, nil
}

// blockingUDP binds a UDP socket that joins an SO_REUSEPORT group and that
// Go's network poller never sees: the socket is blocking when os.NewFile
// wraps it, so the runtime leaves it alone (reads use MSG_DONTWAIT). It
// returns the bound address (the port, if bind's was 0).
func blockingUDP(bind netip.AddrPort) (*os.File, netip.AddrPort, error) {
	var family int
	var sa unix.Sockaddr
	if bind.Addr().Is4() {
		family, sa = unix.AF_INET, &unix.SockaddrInet4{Port: int(bind.Port()), Addr: bind.Addr().As4()}
	} else {
		sa6 := &unix.SockaddrInet6{Port: int(bind.Port()), Addr: bind.Addr().As16()}
		if z := bind.Addr().Zone(); z != "" {
			ifi, err := net.InterfaceByName(z)
			if err != nil {
				return nil, netip.AddrPort{}, err
			}
			sa6.ZoneId = uint32(ifi.Index)
		}
		family, sa = unix.AF_INET6, sa6
	}
	fd, err := unix.Socket(family, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, unix.IPPROTO_UDP)
	if err != nil {
		return nil, netip.AddrPort{}, err
	}
	fail := func(err error) (*os.File, netip.AddrPort, error) {
		unix.Close(fd)
		return nil, netip.AddrPort{}, err
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEPORT, 1); err != nil {
		return fail(err)
	}
	if family == unix.AF_INET6 {
		// As Go's own UDP sockets have it, or the others can't join.
		if err := unix.SetsockoptInt(fd, unix.IPPROTO_IPV6, unix.IPV6_V6ONLY, 0); err != nil {
			return fail(err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		return fail(err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		return fail(err)
	}
	local := bind
	switch a := got.(type) {
	case *unix.SockaddrInet4:
		local = netip.AddrPortFrom(bind.Addr(), uint16(a.Port))
	case *unix.SockaddrInet6:
		local = netip.AddrPortFrom(bind.Addr(), uint16(a.Port))
	}
	return os.NewFile(uintptr(fd), "membership"), local, nil
}

// plainSocket is the fallback of listenGroup: one ordinary socket.
func plainSocket(bind netip.AddrPort) (*sockets, error) {
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(bind))
	if err != nil {
		return nil, err
	}
	rc, err := c.SyscallConn()
	if err != nil {
		c.Close()
		return nil, err
	}
	local := c.LocalAddr().(*net.UDPAddr).AddrPort()
	return &sockets{rx: rc, local: netip.AddrPortFrom(bind.Addr(), local.Port()), close: []io.Closer{c}}, nil
}
