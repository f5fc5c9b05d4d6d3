package main

import (
	"os"
	"os/signal"
	"syscall"

	"golang.org/x/sys/unix"
)

// foreground makes the lab its terminal's foreground process group and
// returns the function that hands the terminal back.
//
// Why: Ctrl-C sends SIGINT to the whole foreground group, which under
// `make lab` holds make and `go run` too. GNU make, once its child has
// exited, re-raises the SIGINT it got and dies of it (exit status 130,
// "make: *** [lab] Interrupt"), even though the lab tore down cleanly and
// exited 0. In its own group the lab alone gets the Ctrl-C, and make
// reports the lab's exit status. Without a terminal (CI, a pipe) there is
// nothing to do.
func foreground() (restore func()) {
	fd := int(os.Stdin.Fd())
	prev, err := unix.IoctlGetInt(fd, unix.TIOCGPGRP)
	if err != nil {
		return func() {}
	}
	if unix.Getpgrp() == unix.Getpid() { // a group leader already (a shell started it)
		return func() {}
	}
	if err := unix.Setpgid(0, 0); err != nil {
		return func() {}
	}
	// tcsetpgrp from a background group stops the caller with SIGTTOU
	// unless it ignores it.
	signal.Ignore(syscall.SIGTTOU)
	defer signal.Reset(syscall.SIGTTOU)
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, unix.Getpid()); err != nil {
		_ = unix.Setpgid(0, prev) // back where Ctrl-C reaches us
		return func() {}
	}
	return func() {
		signal.Ignore(syscall.SIGTTOU)
		defer signal.Reset(syscall.SIGTTOU)
		_ = unix.IoctlSetPointerInt(fd, unix.TIOCSPGRP, prev)
	}
}
