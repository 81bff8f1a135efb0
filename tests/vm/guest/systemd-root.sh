# Sourced by /init (busybox sh, initramfs) when qga.init=systemd, before switch_root.
# Installs qemu-ga-py into the new root the way a package would, so that the
# guest's own udev and systemd start it (nothing here starts the agent):
#   /etc/systemd/system/qemu-ga-py.service   <- $QGA_repo/systemd/qemu-ga-py.service
#   /etc/udev/rules.d/99-qemu-ga-py.rules    <- $QGA_repo/systemd/99-qemu-ga-py.rules
#   /usr/bin/qemu-ga-py                      wrapper: PYTHONPATH=$QGA_repo exec $QGA_python -m qga
# plus the VM tier's own pieces from tests/vm/guest/systemd/:
#   qga-vm.target (default.target: basic.target + the monitor, no gettys/timers)
#   qga-vm-monitor.service (prints unit state changes on the console, see monitor.sh)
# The root is an overlay with a tmpfs upper layer: all of this lives only in this boot.
# Kernel command line keys: qga.repo qga.python (as for the agent mode), and
#   qga.sdunits=0   do not install the unit/rule/wrapper (only the VM-tier pieces)
#   qga.sdmask=a,b  mask these extra units
# Expects $R (the new root) and log/die from /init.
SRC="$R$QGA_repo"
G="$SRC/tests/vm/guest/systemd"
[ -f "$G/qga-vm.target" ] || die "no $G/qga-vm.target (is qga.repo=$QGA_repo the checkout?)"
E="$R/etc/systemd/system"
mkdir -p "$E" "$R/etc/udev/rules.d" "$R/etc/sysconfig"
if [ "${QGA_sdunits:-1}" != 0 ]; then
    for f in "$SRC/systemd/qemu-ga-py.service" "$SRC/systemd/99-qemu-ga-py.rules"; do
        [ -f "$f" ] || die "no $f"
    done
    cp "$SRC/systemd/qemu-ga-py.service" "$E/qemu-ga-py.service"
    cp "$SRC/systemd/99-qemu-ga-py.rules" "$R/etc/udev/rules.d/99-qemu-ga-py.rules"
    rm -f "$R/usr/bin/qemu-ga-py"
    cat > "$R/usr/bin/qemu-ga-py" <<WRAP
#!/bin/sh
# qemu-ga-py in the VM tier's systemd guest: the host checkout's agent on $QGA_python.
# exec: the interpreter must be the unit's main process (Type=notify, NotifyAccess=main).
export PYTHONPATH="$QGA_repo\${PYTHONPATH:+:\$PYTHONPATH}"
exec "$QGA_python" -m qga "\$@"
WRAP
    chmod 755 "$R/usr/bin/qemu-ga-py"
    log "systemd: installed qemu-ga-py.service, 99-qemu-ga-py.rules, /usr/bin/qemu-ga-py ($QGA_python)"
fi
cp "$G/qga-vm.target" "$G/qga-vm-monitor.service" "$E/"
mkdir -p "$R/run/qga-vm"
cp "$G/monitor.sh" "$R/run/qga-vm/monitor.sh"
chmod 755 "$R/run/qga-vm/monitor.sh"
ln -sf qga-vm.target "$E/default.target"
# The host's enabled services and timers (postgresql, timesyncd, apt timers, gettys...)
# are not wanted in a test guest; the port's device unit pulls the agent in by itself.
for u in getty.target timers.target console-getty.service serial-getty@ttyS0.service \
        getty@tty1.service systemd-timesyncd.service systemd-pstore.service postgresql.service \
        systemd-networkd.service systemd-resolved.service ssh.service cron.service \
        e2scrub_reap.service $(echo "${QGA_sdmask:-}" | tr , ' '); do
    ln -sf /dev/null "$E/$u"
done
# The lower layer is a container's root: without this systemd would detect
# "docker" and skip units conditioned on real (virtual) hardware.
rm -f "$R/.dockerenv" "$R/run/.containerenv"
# No stale udev database from the host (the lower layer is the host's /).
rm -rf "$R/run/udev"
mkdir -p "$R/run/udev"
