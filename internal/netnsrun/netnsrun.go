// Package netnsrun runs a function with the calling thread inside a named
// network namespace, so the sockets it opens belong to that namespace (and
// stay there after the thread returns to its own).
package netnsrun

import (
	"fmt"
	"runtime"

	"github.com/vishvananda/netns"
)

// In runs fn inside the namespace name ("" runs it where the caller is).
func In[T any](name string, fn func() (T, error)) (T, error) {
	var zero T
	if name == "" {
		return fn()
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	orig, err := netns.Get()
	if err != nil {
		return zero, err
	}
	defer orig.Close()
	target, err := netns.GetFromName(name)
	if err != nil {
		return zero, fmt.Errorf("network namespace %q: %w", name, err)
	}
	defer target.Close()
	if err := netns.Set(target); err != nil {
		return zero, fmt.Errorf("enter network namespace %q: %w", name, err)
	}
	defer func() { _ = netns.Set(orig) }()
	return fn()
}
