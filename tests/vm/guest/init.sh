#!/bin/busybox sh
# /init of the qemu-ga-py VM-tier initramfs (busybox-static, no udev).
#
# Builds the guest's root as an overlay: a read-only lower layer (the host's /
# over virtio-9p, or an ext4 image for suspend tests, since 9p does not survive
# S3) under a tmpfs upper layer, mounts the data disks, configures eth0, creates
# /dev/virtio-ports/<name> links, then switch_roots into either
#   qga.init=agent   (default) busybox init running /run/qga-vm/run-agent.sh
#   qga.init=systemd           /lib/systemd/systemd
#   qga.init=shell             a shell on the console (debugging)
# Kernel command line keys (all optional):
#   qga.agent=py|c|none  qga.root=9p|disk  qga.init=agent|systemd|shell
#   qga.python=PATH  qga.repo=PATH  qga.moddir=PATH  qga.sh=BASE64 (sourced by run-agent.sh)
#   qga.sdunits=0|1  qga.sdmask=U1,U2  (qga.init=systemd only; see systemd-root.sh)
/bin/busybox mkdir -p /proc /sys /dev /bin /sbin /usr/bin /usr/sbin /tmp
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null

log() { echo "qga-vm: $*" > /dev/console; }
die() {
    log "FATAL: $*"
    sleep 1
    poweroff -f
}

QGA_agent=py QGA_root=9p QGA_init=agent QGA_python=/usr/bin/python3 QGA_repo=/ QGA_moddir= QGA_sh=
for w in $(cat /proc/cmdline); do
    case "$w" in
    qga.*=*)
        k=${w%%=*}; k=${k#qga.}
        case "$k" in *[!a-z0-9_]*) continue ;; esac
        eval "QGA_$k=\${w#*=}" ;;
    esac
done
log "init: agent=$QGA_agent root=$QGA_root init=$QGA_init uptime=$(cut -d' ' -f1 /proc/uptime)"

# Modules, in dependency order (computed on the host). Failures are logged, not
# fatal: e.g. crc32c-intel has no SSE4.2 on -cpu qemu64 and generic covers it.
load_list() {
    while read -r m; do
        insmod "/lib/modules/$m" 2>/dev/null || log "insmod $m failed"
    done < "$1"
}
load_list /lib/modules/load-fs.list &
load_list /lib/modules/load.list
wait
log "init: modules loaded uptime=$(cut -d' ' -f1 /proc/uptime)"

# Wait (bounded) for a block device carrying the given virtio serial.
find_disk() {
    i=0
    while [ $i -lt 100 ]; do
        for b in /sys/block/vd*; do
            [ -e "$b/serial" ] || continue
            if [ "$(cat "$b/serial")" = "$1" ]; then echo "${b##*/}"; return 0; fi
        done
        i=$((i + 1)); sleep 0.1
    done
    return 1
}
wait_node() {
    i=0
    while [ ! -b "$1" ] && [ $i -lt 50 ]; do i=$((i + 1)); sleep 0.1; done
    [ -b "$1" ]
}

mkdir -p /lower /up /newroot
case "$QGA_root" in
9p)
    mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower \
        || die "cannot mount the host root over virtio-9p" ;;
disk)
    d=$(find_disk qga-rootfs) || die "no disk with serial qga-rootfs"
    mount -t ext4 -o ro "/dev/$d" /lower || die "cannot mount /dev/$d" ;;
*) die "unknown qga.root=$QGA_root" ;;
esac
mount -t tmpfs -o mode=0755,size=256m tmpfs /up
mkdir -p /up/upper /up/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/up/upper,workdir=/up/work /newroot \
    || die "cannot mount the overlay root"

log "init: lower+overlay mounted uptime=$(cut -d' ' -f1 /proc/uptime)"
R=/newroot
# Data disks: an ext4 partition and a whole-disk xfs, found by serial. Mounted
# before /dev moves so that mountinfo names them /dev/vdX like a normal boot.
if d=$(find_disk qga-data-ext4); then
    wait_node "/dev/${d}1" || log "no /dev/${d}1"
    mkdir -p "$R/mnt/data-ext4"
    mount -t ext4 "/dev/${d}1" "$R/mnt/data-ext4" || log "cannot mount data-ext4"
fi
if d=$(find_disk qga-data-xfs); then
    mkdir -p "$R/mnt/data-xfs"
    mount -t xfs "/dev/$d" "$R/mnt/data-xfs" || log "cannot mount data-xfs"
fi

# Fresh pseudo filesystems: the 9p export would otherwise show the host's.
for d in proc sys dev run tmp; do mkdir -p "$R/$d"; done
mount -t proc proc "$R/proc"
mount -t sysfs sysfs "$R/sys"
mount --move /dev "$R/dev"
mkdir -p "$R/dev/pts" "$R/dev/shm"
mount -t devpts -o gid=5,mode=620,ptmxmode=000 devpts "$R/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$R/dev/shm"
mount -t tmpfs -o mode=0755,size=64m tmpfs "$R/run"
mount -t tmpfs -o mode=1777,size=128m tmpfs "$R/tmp"
# A checkout under /tmp or /run (CI clones anywhere) would be hidden by those
# fresh mounts: bind it back from the lower layer.
case "$QGA_repo" in
/tmp/?*|/run/?*)
    mkdir -p "$R$QGA_repo"
    mount --bind "/lower$QGA_repo" "$R$QGA_repo" || die "cannot bind the checkout $QGA_repo" ;;
esac
ln -sf /proc/self/fd "$R/dev/fd" 2>/dev/null
[ -e "$R/dev/stdin" ] || ln -sf /proc/self/fd/0 "$R/dev/stdin"
[ -e "$R/dev/stdout" ] || ln -sf /proc/self/fd/1 "$R/dev/stdout"
[ -e "$R/dev/stderr" ] || ln -sf /proc/self/fd/2 "$R/dev/stderr"
mkdir -p "$R/run/lock" "$R/run/qga" "$R/run/qga-vm/bin" "$R/run/udev/data" "$R/dev/disk/by-id"
: > "$R/run/utmp"

# Kernel modules for the new root (modprobe from the running kernel's package).
if [ -n "$QGA_moddir" ] && [ -d "/lower$QGA_moddir" ]; then
    kv=$(uname -r)
    mkdir -p "$R/lib/modules/$kv"
    mount --bind "/lower$QGA_moddir" "$R/lib/modules/$kv"
fi

# Minimal udev database: libudev-based agents (qemu-ga) read ID_SERIAL from it.
now=$(cut -d' ' -f1 /proc/uptime | tr -d .)0000
udev_db() { # $1=sysfs dir of a block dev, $2=serial
    mm=$(cat "$1/dev")
    printf 'S:disk/by-id/virtio-%s\nI:%s\nE:ID_SERIAL=%s\nE:ID_SERIAL_SHORT=%s\n' \
        "$2" "$now" "$2" "$2" > "$R/run/udev/data/b$mm"
}
for b in /sys/block/vd*; do
    [ -e "$b/serial" ] || continue
    s=$(cat "$b/serial"); n=${b##*/}
    [ -n "$s" ] || continue
    udev_db "$b" "$s"
    ln -sf "../../$n" "$R/dev/disk/by-id/virtio-$s"
    for p in "$b/$n"*; do
        [ -e "$p/partition" ] || continue
        udev_db "$p" "$s"
        ln -sf "../../${p##*/}" "$R/dev/disk/by-id/virtio-$s-part$(cat "$p/partition")"
    done
done

log "init: data disks mounted uptime=$(cut -d' ' -f1 /proc/uptime)"
# virtio-serial port links (what udev's rules would create). Under systemd the
# guest's own udev creates them (and the port's device unit starts the agent).
mkdir -p "$R/dev/virtio-ports"
i=0
[ "$QGA_init" = systemd ] && i=100
while [ $i -lt 100 ]; do
    for p in /sys/class/virtio-ports/vport*; do
        [ -e "$p/name" ] || continue
        n=$(cat "$p/name")
        [ -n "$n" ] && ln -sf "../${p##*/}" "$R/dev/virtio-ports/$n"
    done
    [ -e "$R/dev/virtio-ports/org.qemu.guest_agent.0" ] && break
    i=$((i + 1)); sleep 0.1
done
[ -e "$R/dev/virtio-ports/org.qemu.guest_agent.0" ] || [ "$QGA_init" = systemd ] \
    || log "no org.qemu.guest_agent.0 port"

# Network: user-mode net, fixed address like QEMU's built-in DHCP would give.
hostname qga-guest
ip link set lo up
# No SLAAC from slirp's router adverts (fec0::/64): the address set would
# depend on timing. Guests keep only the link-local fe80:: address.
for c in default eth0; do
    echo 0 > "/proc/sys/net/ipv6/conf/$c/accept_ra" 2>/dev/null
    echo 0 > "/proc/sys/net/ipv6/conf/$c/autoconf" 2>/dev/null
done
if ip link set eth0 up 2>/dev/null; then
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2 dev eth0
else
    log "no eth0"
fi

# Stage-2 helpers live on the new root's /run (tmpfs, not the lower layer).
cp /bin/busybox "$R/run/qga-vm/bin/busybox"
for a in init sh poweroff reboot halt sync sleep cat echo; do ln -sf busybox "$R/run/qga-vm/bin/$a"; done
cp /run-agent.sh "$R/run/qga-vm/run-agent.sh"
chmod 755 "$R/run/qga-vm/run-agent.sh"
set | grep '^QGA_' > "$R/run/qga-vm/config"   # ash quotes the values
if [ -n "$QGA_sh" ]; then echo "$QGA_sh" | base64 -d > "$R/run/qga-vm/extra.sh" || die "bad qga.sh"; fi
log "init: root ready uptime=$(cut -d' ' -f1 /proc/uptime)"

case "$QGA_init" in
agent)
    # No systemd here: hide systemctl (agents would try 'systemctl suspend'),
    # and route shutdown/poweroff/reboot/halt to busybox init via signals.
    rm -f "$R/usr/bin/systemctl" "$R/bin/systemctl" 2>/dev/null
    for a in poweroff reboot halt; do
        rm -f "$R/usr/sbin/$a"
        ln -s /run/qga-vm/bin/busybox "$R/usr/sbin/$a"
    done
    rm -f "$R/usr/sbin/shutdown"
    cat > "$R/usr/sbin/shutdown" <<'EOF'
#!/run/qga-vm/bin/sh
# qemu-ga 7.2 runs: shutdown -h -P|-H +0 "msg"  or  shutdown -r +0 "msg"
act=poweroff
for a in "$@"; do case "$a" in -r) act=reboot ;; -H) act=halt ;; -P) act=poweroff ;; esac; done
echo "qga-vm: shutdown $* -> $act" > /dev/console
exec /run/qga-vm/bin/busybox "$act"
EOF
    chmod 755 "$R/usr/sbin/shutdown"
    cat > "$R/etc/inittab" <<'EOF'
::once:/run/qga-vm/bin/sh /run/qga-vm/run-agent.sh
::shutdown:/run/qga-vm/bin/sync
EOF
    exec switch_root "$R" /run/qga-vm/bin/init ;;
systemd)
    # Install the unit, udev rule and /usr/bin/qemu-ga-py like a package would
    # (from the checkout, see systemd-root.sh), then let the guest's udev+systemd start it.
    [ -f "$R$QGA_repo/tests/vm/guest/systemd-root.sh" ] || die "no $QGA_repo/tests/vm/guest/systemd-root.sh"
    . "$R$QGA_repo/tests/vm/guest/systemd-root.sh"
    log "init: switching to systemd uptime=$(cut -d' ' -f1 /proc/uptime)"
    exec switch_root "$R" /lib/systemd/systemd ;;
shell)
    exec switch_root "$R" /run/qga-vm/bin/busybox sh ;;
*) die "unknown qga.init=$QGA_init" ;;
esac
die "switch_root failed"
