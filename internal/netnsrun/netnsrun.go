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
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		return zero, err
	}
	defer orig.Close()
	get := netns.GetFromName
	if strings.HasPrefix(name, "/") {
		get = netns.GetFromPath
	}
	target, err := get(name)
	if err != nil {
		runtime.UnlockOSThread()
		return zero, fmt.Errorf("network namespace %q: %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		runtime.UnlockOSThread()
		return zero, fmt.Errorf("enter network namespace %q: %w", name, err)
	}
	v, err := fn()
	if netns.Set(orig) == nil {
		runtime.UnlockOSThread()
	}
	// Otherwise the thread stays locked: Go retires it with this
	// goroutine rather than run others in the wrong namespace.
	return v, err
}
