#!/bin/sh
# act.sh kill UNIT | poweroff: what a test schedules (systemd-run --on-active)
# for a moment when the agent is frozen and refuses guest-exec. Announces
#   qga-vm-act: <action> t=<uptime> [pid=<killed main pid>]
exec > /dev/console 2>&1
up() { cut -d' ' -f1 /proc/uptime; }
case "$1" in
kill)
    pid=$(systemctl show -p MainPID --value "$2")
    echo "qga-vm-act: kill t=$(up) pid=$pid"
    kill -9 "$pid" ;;
poweroff)
    echo "qga-vm-act: poweroff t=$(up)"
    exec systemctl poweroff ;;
*)
    echo "qga-vm-act: unknown action $1"
    exit 2 ;;
esac
