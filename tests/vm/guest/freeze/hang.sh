#!/bin/sh
# An fsfreeze-hook.d script (installed as 51-hang) that hangs on "freeze" while
# /run/qga-vm/hook-hang has a line naming it:
#   51-hang          it loops until a time limit kills it (or the line goes)
#   51-hang detach   it exits at once but leaves a process (in a session of its
#                    own) holding its output open, so a hook that waits for the
#                    script's output hangs until the line goes
# Announces on the console: qga-vm-hook: <name> <action> start|end t=<uptime>
name=${0##*/}
file=/run/qga-vm/hook-hang
up() { cut -d' ' -f1 /proc/uptime; }
echo "qga-vm-hook: $name $1 start t=$(up)" > /dev/console
if [ "$1" = freeze ]; then
    if grep -qx "$name detach" "$file" 2>/dev/null; then
        setsid sh -c 'while grep -q "^$0" "$1" 2>/dev/null; do sleep 0.5; done' "$name" "$file" &
    else
        while grep -qx "$name" "$file" 2>/dev/null; do sleep 0.5; done
    fi
fi
echo "qga-vm-hook: $name $1 end t=$(up)" > /dev/console
