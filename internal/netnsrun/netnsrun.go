// Package netnsrun runs a function with the calling thread inside a named
// network namespace, so the sockets it opens belong to that namespace (and
// stay there after the thread returns to its own).
package netnsrun

import (
	"fmt"
	"runtime"
	"strings"

	"github.com/vishvananda/netns"
)

// In runs fn inside the namespace name: a name under /run/netns, or a
// path such as /proc/PID/ns/net when it starts with "/" ("" runs it where
// the caller is).
func In[T any](name string, fn func() (T, error)) (T, error) {
	var zero T
	if name == "" {
		return fn()
	}
	runtime.LockOSThread()
	// home: the thread is in its own namespace, so it may go back to the
	// scheduler. If it can't be brought back, it stays locked and Go
	// retires it with this goroutine rather than run others in the wrong
	// namespace.
	home := true
	defer func() {
		if home {
			runtime.UnlockOSThread()
		}
	}()
	orig, err := netns.Get()
	if err != nil {
		return zero, err
	}
	defer orig.Close()
	get := netns.GetFromName
	if strings.HasPrefix(name, "/") {
		get = netns.GetFromPath
	}
	target, err := get(name)
	if err != nil {
		return zero, fmt.Errorf("network namespace %q: %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return zero, fmt.Errorf("enter network namespace %q: %w", name, err)
	}
	home = false
	defer func() { home = netns.Set(orig) == nil }()
	return fn()
}
