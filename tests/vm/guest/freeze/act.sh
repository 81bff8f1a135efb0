#!/bin/sh
# act.sh kill UNIT | poweroff | stopped UNIT MOUNT...: what a test schedules
# (systemd-run --on-active) for a moment when the agent is frozen and refuses
# guest-exec, or runs from qga-vm-stop-witness@.service. Announces
#   qga-vm-act: <action> t=<uptime> [pid=<killed main pid>]
#   qga-vm-act: stopped t=<uptime> unit=UNIT Result=.. ExecMainCode=.. ExecMainStatus=.. MOUNT=frozen|thawed..
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
stopped)
    unit=$2
    shift 2
    state=$(systemctl show -p Result,ExecMainCode,ExecMainStatus "$unit" | tr '\n' ' ')
    for m in "$@"; do
        # FIFREEZE answers EBUSY at once on a frozen filesystem (a write would block).
        if fsfreeze --freeze "$m" 2>/dev/null; then
            fsfreeze --unfreeze "$m"
            state="$state$m=thawed "
        else
            state="$state$m=frozen "
        fi
    done
    echo "qga-vm-act: stopped t=$(up) unit=$unit $state" ;;
*)
    echo "qga-vm-act: unknown action $1"
    exit 2 ;;
esac
