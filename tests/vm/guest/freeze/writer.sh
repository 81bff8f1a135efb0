#!/bin/sh
# writer.sh TAG SRC DEST...: copy SRC to every DEST at once (one process each),
# announcing on the console (times are guest uptime, i.e. CLOCK_BOOTTIME):
#   qga-vm-writer: TAG start t=<uptime>
#   qga-vm-writer: TAG done DEST t=<uptime> rc=<status> sha256=<DEST as read back>
# Started from a transient unit (systemd-run): not a child of the agent, so it
# outlives a killed agent, and it can start while guest-exec is refused (frozen).
exec > /dev/console 2>&1
tag=$1 src=$2
shift 2
up() { cut -d' ' -f1 /proc/uptime; }
echo "qga-vm-writer: $tag start t=$(up)"
for dest in "$@"; do
    (
        cat "$src" > "$dest" && sync -f "$dest"
        rc=$?
        echo "qga-vm-writer: $tag done $dest t=$(up) rc=$rc sha256=$(sha256sum < "$dest" | cut -d' ' -f1)"
    ) &
done
wait
