#!/bin/busybox sh
# /init of Aspen's VM job image (aspen.jobs.vm.image). The protocol with the host
# (aspen.jobs.vm.disks): /dev/vda is a tar of the inputs plus .aspen/run (the job
# script), /dev/vdb receives a tar of /res: data/out/ (the work dir's outputs),
# data/stdout, data/stderr and status. Kernel command line: aspen.res_kib and aspen.in_kib (tmpfs sizes), aspen.procs
# (the guest's process limit), aspen.net=1 (configure the virtio-net device).
/bin/busybox mkdir -p /bin /sbin /usr/bin /usr/sbin /proc /sys /dev /tmp /in /out /res
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/out
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
res_kib=65536 in_kib=65536 procs=256 net=0
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        aspen.res_kib=*) res_kib=${arg#*=} ;;
        aspen.in_kib=*) in_kib=${arg#*=} ;;
        aspen.procs=*) procs=${arg#*=} ;;
        aspen.net=*) net=${arg#*=} ;;
    esac
done
for m in $(cat /lib/modules/load); do insmod "/lib/modules/$m" 2>/dev/null; done
if [ "$net" = 1 ]; then
    for m in $(cat /lib/modules/load-net); do insmod "/lib/modules/$m" 2>/dev/null; done
fi
n=0
while ! { [ -b /dev/vda ] && [ -b /dev/vdb ]; } && [ $n -lt 2400 ]; do sleep 0.05; n=$((n + 1)); done
[ -b /dev/vdb ] || { echo "aspen-init: no disks appeared"; poweroff -f; }
ip link set lo up
if [ "$net" = 1 ]; then
    ip link set eth0 up && ip addr add 10.0.2.15/24 dev eth0 && ip route add default via 10.0.2.2
    echo "nameserver 10.0.2.3" > /etc/resolv.conf
fi
mount -t tmpfs -o "size=${in_kib}k,mode=0755" tmpfs /in
tar -x -f /dev/vda -C /in && mount -o remount,ro /in
# /res/data (the output quota) takes out/, stdout and stderr; the status has its own room.
mount -t tmpfs -o size=64k,mode=0755 tmpfs /res
mkdir /res/data && mount -t tmpfs -o "size=${res_kib}k,mode=0755" tmpfs /res/data
mkdir /res/data/out && mount --bind /res/data/out /out
(ulimit -u "$procs"; cd /out && exec sh /in/.aspen/run) </dev/null >/res/data/stdout 2>/res/data/stderr
echo $? >/res/status
umount /out
tar -c -f /dev/vdb -C /res . && sync
# isa-debug-exit: QEMU exits with (0 << 1) | 1 = 1, "the protocol ran to the end".
printf '\000' | dd of=/dev/port bs=1 seek=244 count=1 2>/dev/null
poweroff -f
