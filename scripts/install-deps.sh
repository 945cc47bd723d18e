#!/bin/sh
# Installs the host tools a Bulkhead target needs, on Debian or Ubuntu.
#   scripts/install-deps.sh image   tools for `make image`
#   scripts/install-deps.sh test    tools for `make test` (adds QEMU, OVMF, runc)
# Run as root it installs what is missing with apt-get; otherwise it names the
# missing packages and the command to install them.
set -eu

need_image="mke2fs:e2fsprogs debugfs:e2fsprogs e2fsck:e2fsprogs xz:xz-utils"
need_test="$need_image sfdisk:fdisk fsck.vfat:dosfstools mdir:mtools bmaptool:bmap-tools mkimage:u-boot-tools fdtput:device-tree-compiler qemu-system-aarch64:qemu-system-arm qemu-system-arm:qemu-system-arm qemu-system-x86_64:qemu-system-x86 /usr/share/OVMF/OVMF_CODE_4M.fd:ovmf cpio:cpio runc:runc"

case "${1:-image}" in
image) need="$need_image" ;;
test) need="$need_test" ;;
*) echo "usage: $0 image|test" >&2; exit 2 ;;
esac

missing=""
for pair in $need; do
	tool=${pair%%:*}
	pkg=${pair#*:}
	case "$tool" in
	/*) [ -e "$tool" ] && continue ;;
	*) PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1 && continue ;;
	esac
	case " $missing " in *" $pkg "*) ;; *) missing="$missing $pkg" ;; esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" != 0 ]; then
	echo "bulkhead: missing host packages:$missing" >&2
	echo "bulkhead: install them with: sudo apt-get install -y$missing" >&2
	exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
	echo "bulkhead: missing host packages:$missing, and apt-get is not available: install them with your package manager" >&2
	exit 1
fi
echo "bulkhead: installing host packages:$missing" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null || apt-get update -qq
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing >/dev/null
