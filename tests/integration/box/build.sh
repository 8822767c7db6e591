#!/bin/bash
# Build the systemd "box" image (systemd as PID 1, its own dockerd 20.10 and firewalld)
# offline: debootstrap from the Debian mirror, no container registry involved.
#
#   tests/integration/box/build.sh [IMAGE]      (default hostkit-box:bookworm)
#
# The image also carries /opt/hostkit-venv with hostkit's dependencies so that a test
# only has to `pip install --no-deps` the working tree into it.
set -euo pipefail
IMAGE=${1:-hostkit-box:bookworm}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../../.." && pwd)
MIRROR=${HOSTKIT_MIRROR:-http://deb.debian.org/debian}
SUITE=${HOSTKIT_SUITE:-bookworm}
PACKAGES=systemd,systemd-sysv,libpam-systemd,dbus,docker.io,docker-compose,firewalld,rsync,iproute2,nftables,iptables,openssh-server,sudo,ca-certificates,python3,python3-venv,procps,curl,kmod,busybox-static,attr,util-linux

if [ -z "${HOSTKIT_BOX_REBUILD:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "box image $IMAGE already present"
    exit 0
fi

# Another build (images of the stack) may run at the same time on a 2-core machine:
# one heavy build at a time.
exec 9>/tmp/hostkit-build.lock
flock 9
if [ -z "${HOSTKIT_BOX_REBUILD:-}" ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    exit 0
fi

WORK=$(mktemp -d /var/tmp/hostkit-box.XXXXXX)
ROOTFS=$WORK/rootfs
cleanup() {
    for m in proc dev/pts dev; do umount "$ROOTFS/$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

start=$(date +%s)
debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$ROOTFS" "$MIRROR" \
    >"$WORK/debootstrap.log" 2>&1 || { tail -30 "$WORK/debootstrap.log"; exit 1; }
echo "debootstrap: $(( $(date +%s) - start ))s"

install -m 0755 "$HERE/box-init" "$ROOTFS/usr/local/sbin/box-init"
# The site's TLS-intercepting proxy CA (if any) must be trusted inside the box for pip.
cp -a /usr/local/share/ca-certificates/. "$ROOTFS/usr/local/share/ca-certificates/" 2>/dev/null || true
cp /etc/resolv.conf "$ROOTFS/etc/resolv.conf"
mount --bind /dev "$ROOTFS/dev"
mount --bind /dev/pts "$ROOTFS/dev/pts"
mount -t proc proc "$ROOTFS/proc"
chroot "$ROOTFS" update-ca-certificates >/dev/null
chroot "$ROOTFS" python3 -m venv /opt/hostkit-venv
# Dependencies only; the tree under test is installed per test run with --no-deps.
chroot "$ROOTFS" /opt/hostkit-venv/bin/pip install -q --disable-pip-version-check \
    --cert /etc/ssl/certs/ca-certificates.crt \
    "typer>=0.12" "psutil>=5.9" "docker>=7.0" "distro>=1.8" "rich>=13" "dnspython>=2.4" \
    "cryptography>=42" "hatchling>=1.18" "pytest>=7"
for m in proc dev/pts dev; do umount "$ROOTFS/$m"; done
# A box is a server: no getty on a console that does not exist, no ssh keys baked in.
chroot "$ROOTFS" systemctl mask getty@tty1.service console-getty.service >/dev/null 2>&1 || true
chroot "$ROOTFS" systemctl enable docker.service firewalld.service >/dev/null 2>&1 || true
rm -f "$ROOTFS"/etc/ssh/ssh_host_*
echo "hostkit-box" >"$ROOTFS/etc/hostname"
# Vagrant's docker provider logs in over ssh as `vagrant` (password `vagrant`, the Vagrant
# convention for throwaway test machines) and provisions with sudo.
chroot "$ROOTFS" useradd -m -s /bin/bash vagrant
echo 'vagrant:vagrant' | chroot "$ROOTFS" chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$ROOTFS/etc/sudoers.d/vagrant"
chmod 0440 "$ROOTFS/etc/sudoers.d/vagrant"

tar -C "$ROOTFS" -c . | docker import \
    -c 'CMD ["/usr/local/sbin/box-init"]' -c 'ENV container=docker' \
    - "$IMAGE" >/dev/null
echo "box image $IMAGE built in $(( $(date +%s) - start ))s"
