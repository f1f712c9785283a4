#!/bin/sh
# vhostlm guest /init (busybox sh): mount the pseudo file systems, load the virtio and
# uio modules listed by the image builder, print the ready line, then keep a root shell
# with job control running on the serial console.

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export PS1='vhostlm-guest# '

mount -t proc proc /proc
chmod 755 /  # DPDK refuses to load plugins under a world-writable directory
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/hugepages /var/run /run /tmp /root
mount -t devpts devpts /dev/pts
mount -t hugetlbfs hugetlbfs /dev/hugepages

kver=$(uname -r)

# Kernel messages would interleave with the shell output the harness parses.
case " $(cat /proc/cmdline) " in
*" vhostlm.verbose "*) ;;
*) dmesg -n 1 ;;
esac

# Module names, one a line, in load order; written by vhostlm.image.build.
if [ -r /etc/vhostlm/modules ]; then
    while read -r mod; do
        [ -n "$mod" ] || continue
        if [ -e "/lib/modules/$kver/$mod.ko" ]; then
            insmod "/lib/modules/$kver/$mod.ko" || echo "vhostlm: insmod $mod failed"
        else
            echo "vhostlm: module $mod is not in the image, skipped"
        fi
    done </etc/vhostlm/modules
fi

ip link set lo up
hostname vhostlm-guest

echo "VHOSTLM-GUEST-READY $kver"

# The interactive shell is dash, not busybox ash: ash's line editor sends "ESC[6n" cursor
# queries and echoes typed-ahead input a second time, and with echo off ash exits when a
# background job ends while it waits for input. dash reads plain lines, so the kernel's
# tty echo shows each command exactly once. Wide lines: ps and friends do not cut at 80.
shell=sh
command -v dash >/dev/null 2>&1 && shell=dash

# setsid + cttyhack give the shell /dev/ttyS0 (the console) as its controlling tty, so
# job control and Ctrl-C work. PID 1 must never exit: restart the shell when it ends.
while :; do
    stty -F /dev/ttyS0 sane cols 1024 rows 50 2>/dev/null
    setsid cttyhack "$shell" -i
    echo "vhostlm: shell exited, restarting it"
    sleep 1
done
