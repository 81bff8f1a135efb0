#!/bin/sh
# One console line per change of qemu-ga-py.service / its port device unit:
#   qga-mon: t=<uptime> svc=<ActiveState>/<SubState> pid=<MainPID> port=<0|1> restarts=<NRestarts> dev=<device ActiveState> status=[<StatusText>]
# port=1: the main process has a /dev/vport* open (the agent's channel).
exec > /dev/console 2>&1
DEV='dev-virtio\x2dports-org.qemu.guest_agent.0.device'
last=
while :; do
    out=$(systemctl show -p ActiveState,SubState,MainPID,NRestarts,StatusText qemu-ga-py.service "$DEV" 2>&1)
    as=? ss=? pid=0 nr=? st= das=? blk=0
    while IFS= read -r l; do
        case "$blk:$l" in
        0:) blk=1 ;;
        0:ActiveState=*) as=${l#*=} ;;
        0:SubState=*) ss=${l#*=} ;;
        0:MainPID=*) pid=${l#*=} ;;
        0:NRestarts=*) nr=${l#*=} ;;
        0:StatusText=*) st=${l#*=} ;;
        1:ActiveState=*) das=${l#*=} ;;
        esac
    done <<EOT
$out
EOT
    port=0
    if [ "$pid" != 0 ]; then
        case "$(ls -l /proc/$pid/fd 2>/dev/null)" in *vport*) port=1 ;; esac
    fi
    cur="svc=$as/$ss pid=$pid port=$port restarts=$nr dev=$das status=[$st]"
    if [ "$cur" != "$last" ]; then
        read -r up _ < /proc/uptime
        echo "qga-mon: t=$up $cur"
        last=$cur
    fi
    sleep 0.1
done
