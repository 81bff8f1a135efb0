#!/run/qga-vm/bin/sh
# Starts the guest agent under test (run once by busybox init, on the console).
#   qga.agent=c   /usr/sbin/qemu-ga -m virtio-serial -p PORT -t /run/qga [ARGS]
#   qga.agent=py  $QGA_python -m qga -m virtio-serial -p PORT -t /run/qga [ARGS]
#                 with PYTHONPATH=$QGA_repo (the host checkout, same path in the guest)
# /run/qga-vm/extra.sh (from qga.sh=BASE64) may set QGA_ARGS (shell words
# appended to the command line) and export environment variables.
. /run/qga-vm/config
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root LANG=C.UTF-8 TERM=linux
QGA_ARGS=
[ -f /run/qga-vm/extra.sh ] && . /run/qga-vm/extra.sh
PORT=/dev/virtio-ports/org.qemu.guest_agent.0
mkdir -p /run/qga
cd /
case "$QGA_agent" in
c) set -- /usr/sbin/qemu-ga -m virtio-serial -p "$PORT" -t /run/qga ;;
py)
    export PYTHONPATH="$QGA_repo${PYTHONPATH:+:$PYTHONPATH}"
    set -- "$QGA_python" -m qga -m virtio-serial -p "$PORT" -t /run/qga ;;
none) echo "qga-vm: no agent requested" > /dev/console; exit 0 ;;
*) echo "qga-vm: FATAL: unknown qga.agent=$QGA_agent" > /dev/console; exit 1 ;;
esac
eval "set -- \"\$@\" $QGA_ARGS"
echo "qga-vm: starting agent: $*" > /dev/console
"$@" < /dev/null > /dev/console 2>&1 &
pid=$!
echo "$pid" > /run/qga-vm/agent.pid
echo "qga-vm: agent pid $pid uptime $(cut -d' ' -f1 /proc/uptime)" > /dev/console
wait "$pid"
echo "qga-vm: agent exited status $?" > /dev/console
