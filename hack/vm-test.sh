#!/usr/bin/env bash
# vm-test.sh PACKAGE TEST [MODULES]: runs TEST of PACKAGE (go test -run)
# inside a Debian kernel under QEMU, for what the build machines' kernel
# cannot do (it has no VRF devices and loads no modules). The VM sees this
# machine's root file system read-only over virtio-9p (FRR, iproute2, the
# test binary), with tmpfs where tests write; test/vm/init is its PID 1.
# Everything it fetches (the kernel package, qemu, cpio) comes from
# Debian's archive. VM_TEST_COUNT runs the test that many times. Exits
# with the test's status.
set -euo pipefail
cd "$(dirname "$0")/.."
pkg=${1:?package}; test=${2:?test}; modules=${3:-vrf,veth,bridge}
vm=$PWD/bin/vm
mkdir -p "$vm"

if ! command -v qemu-system-x86_64 >/dev/null || ! command -v cpio >/dev/null; then
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-system-x86 cpio >/dev/null
fi
kernel_pkg() { apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-/ {print $2; exit}'; }
kpkg=$(kernel_pkg)
[ -n "$kpkg" ] || { apt-get update -qq; kpkg=$(kernel_pkg); }
test -n "$kpkg" || { echo "vm-test: Debian offers no linux-image-amd64 here" >&2; exit 1; }
kver=${kpkg#linux-image-}
if [ ! -e "$vm/kernel/boot/vmlinuz-$kver" ]; then
	rm -rf "$vm/kernel" "$vm/deb" && mkdir -p "$vm/deb"
	(cd "$vm/deb" && apt-get download "$kpkg" 2>/dev/null) || { apt-get update -qq; (cd "$vm/deb" && apt-get download "$kpkg"); }
	dpkg-deb -x "$vm"/deb/"$kpkg"_*.deb "$vm/kernel"
	rm -rf "$vm/deb"
fi
mods=$vm/kernel/lib/modules/$kver

# The initramfs: init and the modules that mount the shared root.
rm -rf "$vm/initramfs" && mkdir -p "$vm/initramfs/modules" "$vm/initramfs"/{proc,sys,dev,root}
CGO_ENABLED=0 go build -o "$vm/initramfs/init" ./test/vm/init
for d in drivers/virtio net/9p fs/9p fs/netfs fs/fscache; do
	[ -d "$mods/kernel/$d" ] && cp -r "$mods/kernel/$d" "$vm/initramfs/modules/"
done
(cd "$vm/initramfs" && find . | cpio -o -H newc --quiet) > "$vm/initramfs.cpio"

bin=$vm/$(basename "$pkg").test
go test -c -o "$bin" "./$pkg"

echo "vm-test: $pkg $test in Linux $kver (QEMU, software emulation)"
log=$vm/$(basename "$pkg")-$test.log
timeout 600 qemu-system-x86_64 -accel tcg -m 2048 -smp 2 -display none -serial stdio -no-reboot \
	-kernel "$vm/kernel/boot/vmlinuz-$kver" -initrd "$vm/initramfs.cpio" \
	-virtfs local,path=/,mount_tag=root,security_model=none,readonly=on,multidevs=remap \
	-append "console=ttyS0 panic=-1 quiet ironlb.moddir=$mods ironlb.modules=$modules ironlb.run=$bin ironlb.args=-test.run=$test,-test.v,-test.count=${VM_TEST_COUNT:-1} ironlb.dir=$PWD/$pkg" \
	</dev/null | tr -d '\r' | tee "$log"
grep -q '^ironlb-vm: exit 0$' "$log"
