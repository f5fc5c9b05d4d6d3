// Command init is PID 1 of the project's test VM (hack/vm-test.sh): a
// Debian kernel under QEMU, for the tests that need a kernel feature the
// build machines' own kernel lacks (VRF devices). It loads the 9p modules
// from its initramfs, mounts this machine's root file system read-only
// over virtio-9p (with tmpfs where tests write: TMPDIR is /run/tmp), loads the kernel modules
// the tests ask for, runs the test binary there and powers off. The line
// "ironlb-vm: exit N" tells the host how the test ended.
package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

func main() {
	code := 0
	if err := run(); err != nil {
		fmt.Fprintf(os.Stderr, "ironlb-vm: %v\n", err)
		code = 1
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode() // the test binary's own
		}
	}
	fmt.Printf("ironlb-vm: exit %d\n", code)
	unix.Sync()
	_ = unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
}

// run reads its orders from the kernel command line:
// ironlb.modules=a,b (modules to load from the shared root),
// ironlb.run=/path/to/binary, ironlb.args=a,b and ironlb.dir=/work/dir.
func run() error {
	os.Setenv("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/proc", "proc"}, {"sysfs", "/sys", "sysfs"}, {"devtmpfs", "/dev", "devtmpfs"},
	} {
		if err := mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			return err
		}
	}
	cmdline, err := os.ReadFile("/proc/cmdline")
	if err != nil {
		return err
	}
	opts := map[string]string{}
	for _, f := range strings.Fields(string(cmdline)) {
		if k, v, ok := strings.Cut(f, "="); ok && strings.HasPrefix(k, "ironlb.") {
			opts[strings.TrimPrefix(k, "ironlb.")] = v
		}
	}
	if err := loadModules("/modules", "9pnet_virtio", "9p", "virtio_pci"); err != nil {
		return err
	}
	if err := mount("root", "/root", "9p", unix.MS_RDONLY, "trans=virtio,version=9p2000.L,msize=1048576,cache=loose"); err != nil {
		return err
	}
	// Writable places for the tests, over the read-only root; /tmp only
	// when the checkout is not below it (a clone in /tmp would vanish).
	scratch := []string{"/root/run", "/root/var/tmp"}
	if !strings.HasPrefix(opts["dir"], "/tmp/") && !strings.HasPrefix(opts["run"], "/tmp/") {
		scratch = append(scratch, "/root/tmp")
	}
	for _, d := range scratch {
		if err := mount("tmpfs", d, "tmpfs", 0, "mode=1777"); err != nil {
			return err
		}
	}
	for _, m := range []struct{ src, dst, typ string }{
		{"proc", "/root/proc", "proc"}, {"sysfs", "/root/sys", "sysfs"}, {"devtmpfs", "/root/dev", "devtmpfs"},
	} {
		if err := mount(m.src, m.dst, m.typ, 0, ""); err != nil {
			return err
		}
	}
	if err := unix.Chroot("/root"); err != nil {
		return fmt.Errorf("chroot: %w", err)
	}
	if err := os.Chdir("/"); err != nil {
		return err
	}
	if err := mount("tmpfs", "/dev/shm", "tmpfs", 0, "mode=1777"); err != nil {
		return err
	}
	if mods := opts["modules"]; mods != "" {
		if err := loadModules(opts["moddir"], strings.Split(mods, ",")...); err != nil {
			return err
		}
	}
	_ = unix.Sethostname([]byte("ironlb-vm"))
	if out, err := exec.Command("ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("lo up: %v %s", err, out)
	}
	cmd := exec.Command(opts["run"], strings.Split(opts["args"], ",")...)
	cmd.Dir = opts["dir"]
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := os.MkdirAll("/run/tmp", 0o1777); err != nil {
		return err
	}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/run/tmp", "TMPDIR=/run/tmp"}
	return cmd.Run()
}

func mount(src, dst, typ string, flags uintptr, data string) error {
	// On the read-only root the mount points exist, and MkdirAll writes
	// nothing.
	if err := os.MkdirAll(dst, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(src, dst, typ, flags, data); err != nil {
		return fmt.Errorf("mount %s on %s: %w", typ, dst, err)
	}
	return nil
}

// loadModules loads the named modules from the .ko files below dir, each
// after the modules its .modinfo says it depends on.
func loadModules(dir string, names ...string) error {
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(p, ".ko") {
			files[modName(filepath.Base(p))] = p
		}
		return err
	})
	if err != nil {
		return err
	}
	done := map[string]bool{}
	var load func(name string) error
	load = func(name string) error {
		name = modName(name)
		if done[name] {
			return nil
		}
		done[name] = true
		p, ok := files[name]
		if !ok {
			return nil // built in
		}
		deps, err := depends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := load(d); err != nil {
				return err
			}
		}
		f, err := os.Open(p)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && err != unix.EEXIST {
			return fmt.Errorf("load %s: %w", name, err)
		}
		return nil
	}
	for _, n := range names {
		if err := load(n); err != nil {
			return err
		}
	}
	return nil
}

func modName(s string) string {
	return strings.ReplaceAll(strings.TrimSuffix(s, ".ko"), "-", "_")
}

// depends reads a module's "depends=" from its .modinfo section.
func depends(path string) ([]string, error) {
	f, err := elf.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, nil
	}
	data, err := sec.Data()
	if err != nil {
		return nil, err
	}
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			return strings.Split(string(v), ","), nil
		}
	}
	return nil, nil
}
