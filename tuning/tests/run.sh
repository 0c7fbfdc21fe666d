#!/usr/bin/env bash
# Tests of tuning/tune and tuning/irq-affinity against fake /proc, /sys and /etc
# trees in a temporary directory. Safe as root or not: every root the scripts know
# is pointed into the temp dir, except in the "refuses without root" tests, which
# run as an unprivileged user (nobody) who cannot write the real settings anyway.
#
#   bash tuning/tests/run.sh
#
# Last line: "N passed, M failed"; exit 1 when anything failed.
set -uo pipefail
export LC_ALL=C

TUNING=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TUNE=$TUNING/tune
IRQ=$TUNING/irq-affinity

WORK=$(mktemp -d "${TMPDIR:-/tmp}/corecast-tuning-test.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
OUT=""
RC=0

pass() {
	PASSED=$((PASSED + 1))
	printf 'ok   %s\n' "$1"
}
fail() {
	FAILED=$((FAILED + 1))
	printf 'FAIL %s\n' "$1"
	[[ -z ${2:-} ]] || printf '%s\n' "$2" | sed 's/^/     | /'
}

# expect NAME COMMAND...: the command succeeds.
expect() {
	local name=$1
	shift
	if "$@"; then pass "$name"; else fail "$name" "$OUT"; fi
}

# run_tune HOST ARGS...: run tune with all five roots inside HOST; sets OUT and RC.
run_tune() {
	local host=$1
	shift
	OUT=$(CORECAST_PROC_SYS=$host/proc/sys \
		CORECAST_SYSCTL_DIR=$host/etc/sysctl.d \
		CORECAST_SYSTEMD_DIR=$host/etc/systemd/system \
		CORECAST_CPUFREQ_ROOT=$host/sys/devices/system/cpu \
		CORECAST_STATE_DIR=$host/var/lib/corecast-tune \
		bash "$TUNE" "$@" 2>&1)
	RC=$?
}

run_irq() {
	local host=$1
	shift
	OUT=$(CORECAST_PROC_ROOT=$host/proc CORECAST_SYS_ROOT=$host/sys bash "$IRQ" "$@" 2>&1)
	RC=$?
}

put() { # PATH CONTENT (printf format args allowed: tabs)
	mkdir -p "$(dirname "$1")"
	printf '%b\n' "$2" >"$1"
}

# Checksum of a whole tree: names, types and contents.
tree_sum() {
	(
		cd "$1" || exit 1
		find . -printf '%y %p\n' | sort
		find . -type f -print0 | sort -z | xargs -0 -r sha256sum
	) | sha256sum | cut -d' ' -f1
}

# Value column of `tune check` for a setting.
check_field() { # NAME FIELD(2=current,3=recommended,4=status)
	awk -v k="$1" -v f="$2" '$1 == k { print $f }' <<<"$OUT"
}

rc_is() { [[ $RC == "$1" ]]; }
rc_in() { [[ " $* " == *" $RC "* ]]; }
out_has() { [[ $OUT == *"$1"* ]]; }
file_is() { [[ -f $1 && $(<"$1") == "$(printf '%b' "$2")" ]]; }
absent() { [[ ! -e $1 ]]; }

# A small host with stock (low) values, one setting already above the recommended
# one (fs.file-max, as systemd sets it), four cores with cpufreq and one without.
make_host() {
	local h=$1 k
	for k in rmem_max wmem_max rmem_default wmem_default; do put "$h/proc/sys/net/core/$k" 212992; done
	put "$h/proc/sys/net/core/optmem_max" 20480
	put "$h/proc/sys/net/core/netdev_max_backlog" 1000
	put "$h/proc/sys/net/core/netdev_budget" 300
	put "$h/proc/sys/net/core/netdev_budget_usecs" 2000
	put "$h/proc/sys/net/core/somaxconn" 4096
	put "$h/proc/sys/net/core/busy_poll" 0
	put "$h/proc/sys/net/core/busy_read" 0
	put "$h/proc/sys/net/ipv4/udp_mem" '45390\t600000\t90780'
	put "$h/proc/sys/net/ipv4/udp_rmem_min" 4096
	put "$h/proc/sys/net/ipv4/udp_wmem_min" 4096
	put "$h/proc/sys/net/ipv4/ip_local_port_range" '32768\t60999'
	put "$h/proc/sys/fs/file-max" 9223372036854775807
	put "$h/proc/sys/fs/nr_open" 1048576
	local c
	for c in 0 1 2 3; do
		put "$h/sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor" powersave
		put "$h/sys/devices/system/cpu/cpu$c/cpufreq/scaling_available_governors" 'performance powersave'
	done
	put "$h/sys/devices/system/cpu/cpu3/cpufreq/scaling_governor" performance
	mkdir -p "$h/sys/devices/system/cpu/cpu4"
	put "$h/etc/sysctl.d/99-local.conf" 'vm.swappiness = 10'
	mkdir -p "$h/etc/systemd/system" "$h/var/lib"
}

# ---------------------------------------------------------------- tune

test_tune_cycle() {
	local h=$WORK/host
	make_host "$h"
	local pristine
	pristine=$(tree_sum "$h")

	run_tune "$h" check
	expect "check exits 1 on a host with low values" rc_is 1
	expect "check marks rmem_max LOW" [ "$(check_field net.core.rmem_max 4)" = LOW ]
	expect "check prints current and recommended" \
		[ "$(check_field net.core.rmem_max 2) $(check_field net.core.rmem_max 3)" = "212992 33554432" ]
	expect "check keeps a higher value OK (fs.file-max)" [ "$(check_field fs.file-max 4)" = OK ]
	expect "check compares udp_mem value by value" [ "$(check_field net.ipv4.udp_mem 4)" = LOW ]
	expect "check compares the port range by width" [ "$(check_field net.ipv4.ip_local_port_range 4)" = LOW ]
	expect "check reports the cpufreq governor LOW" [ "$(check_field cpufreq.scaling_governor 4)" = LOW ]
	expect "check reports missing service limits" [ "$(check_field corecast.service:LimitMEMLOCK 4)" = LOW ]
	local nkeys
	nkeys=$(grep -cE '^[[:space:]]*[a-z]' "$TUNING/sysctl/60-corecast.conf")
	expect "check prints every setting of the sysctl file" \
		[ "$(grep -cE ' (OK|LOW|SKIP)$' <<<"$OUT")" = $((nkeys + 3)) ]
	expect "check changes nothing" [ "$(tree_sum "$h")" = "$pristine" ]

	run_tune "$h" apply --dry-run
	expect "apply --dry-run succeeds" rc_is 0
	expect "apply --dry-run says what it would do" out_has "would set net.core.rmem_max: 212992 -> 33554432"
	expect "apply --dry-run changes nothing" [ "$(tree_sum "$h")" = "$pristine" ]

	run_tune "$h" revert
	expect "revert with no record does nothing" rc_is 0
	expect "revert with no record says so" out_has "nothing to revert"

	run_tune "$h" apply
	expect "apply succeeds" rc_is 0
	expect "apply raises rmem_max" file_is "$h/proc/sys/net/core/rmem_max" 33554432
	expect "apply raises wmem_max to at least 8 MiB" file_is "$h/proc/sys/net/core/wmem_max" 33554432
	expect "apply raises udp_mem value by value, never lowering" \
		file_is "$h/proc/sys/net/ipv4/udp_mem" '262144\t600000\t1048576'
	expect "apply widens the port range" file_is "$h/proc/sys/net/ipv4/ip_local_port_range" '10240\t65535'
	expect "apply leaves a higher value alone" file_is "$h/proc/sys/fs/file-max" 9223372036854775807
	expect "apply installs the sysctl file" [ -f "$h/etc/sysctl.d/60-corecast.conf" ]
	expect "installed sysctl file has the recommended value" \
		grep -qx 'net.core.rmem_max = 33554432' "$h/etc/sysctl.d/60-corecast.conf"
	expect "installed sysctl file keeps the host's higher value" \
		grep -qx 'fs.file-max = 9223372036854775807' "$h/etc/sysctl.d/60-corecast.conf"
	local c gov_ok=1
	for c in 0 1 2 3; do
		[[ $(<"$h/sys/devices/system/cpu/cpu$c/cpufreq/scaling_governor") == performance ]] || gov_ok=0
	done
	expect "apply sets the performance governor" [ "$gov_ok" = 1 ]
	local dropin=$h/etc/systemd/system/corecast.service.d/10-limits.conf
	expect "apply writes the drop-in with LimitMEMLOCK=infinity" grep -qx 'LimitMEMLOCK=infinity' "$dropin"
	expect "apply writes the drop-in with LimitNOFILE=1048576" grep -qx 'LimitNOFILE=1048576' "$dropin"

	run_tune "$h" check
	expect "check exits 0 after apply" rc_is 0
	expect "check reports all OK after apply" out_has "all settings OK"

	local applied state
	applied=$(tree_sum "$h")
	state=$(tree_sum "$h/var/lib/corecast-tune")
	run_tune "$h" apply
	expect "second apply succeeds" rc_is 0
	expect "second apply has nothing to change" out_has "nothing to change"
	expect "second apply changes no file" [ "$(tree_sum "$h")" = "$applied" ]
	expect "second apply records nothing again" [ "$(tree_sum "$h/var/lib/corecast-tune")" = "$state" ]

	run_tune "$h" revert --dry-run
	expect "revert --dry-run succeeds" rc_is 0
	expect "revert --dry-run says what it would restore" out_has "would restore sysctl net.core.rmem_max: 212992"
	expect "revert --dry-run changes nothing" [ "$(tree_sum "$h")" = "$applied" ]

	run_tune "$h" revert
	expect "revert succeeds" rc_is 0
	expect "revert restores rmem_max exactly" file_is "$h/proc/sys/net/core/rmem_max" 212992
	expect "revert restores udp_mem exactly" file_is "$h/proc/sys/net/ipv4/udp_mem" '45390\t600000\t90780'
	expect "revert restores the governor" file_is "$h/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor" powersave
	expect "revert removes the sysctl file" absent "$h/etc/sysctl.d/60-corecast.conf"
	expect "revert removes the drop-in directory" absent "$h/etc/systemd/system/corecast.service.d"
	expect "revert keeps other sysctl files" file_is "$h/etc/sysctl.d/99-local.conf" 'vm.swappiness = 10'
	expect "revert removes its record" absent "$h/var/lib/corecast-tune"
	expect "revert leaves the tree exactly as before apply" [ "$(tree_sum "$h")" = "$pristine" ]

	run_tune "$h" check
	expect "check exits 1 again after revert" rc_is 1
}

test_tune_partial_change() {
	# apply, someone changes a value, apply again: revert still restores the first original.
	local h=$WORK/host2
	make_host "$h"
	local pristine
	pristine=$(tree_sum "$h")
	run_tune "$h" apply
	put "$h/proc/sys/net/core/rmem_max" 4096
	run_tune "$h" apply
	expect "apply after a manual change raises it again" file_is "$h/proc/sys/net/core/rmem_max" 33554432
	run_tune "$h" revert
	expect "revert restores the value from before the first apply" file_is "$h/proc/sys/net/core/rmem_max" 212992
	expect "revert after two applies leaves the tree as before" [ "$(tree_sum "$h")" = "$pristine" ]
}

test_tune_existing_files() {
	# A sysctl file of the same name and a service unit already there.
	local h=$WORK/host3
	make_host "$h"
	put "$h/etc/sysctl.d/60-corecast.conf" 'net.core.rmem_max = 8388608'
	put "$h/etc/systemd/system/corecast.service" '[Service]\nLimitMEMLOCK=infinity\nLimitNOFILE=65536'
	local pristine
	pristine=$(tree_sum "$h")
	run_tune "$h" check
	expect "check reads limits from the unit file" [ "$(check_field corecast.service:LimitMEMLOCK 4)" = OK ]
	expect "check flags a low LimitNOFILE in the unit" [ "$(check_field corecast.service:LimitNOFILE 2)" = 65536 ]
	run_tune "$h" apply
	expect "apply over an existing file succeeds" rc_is 0
	expect "apply leaves the unit file alone" file_is "$h/etc/systemd/system/corecast.service" \
		'[Service]\nLimitMEMLOCK=infinity\nLimitNOFILE=65536'
	run_tune "$h" check
	expect "the drop-in overrides the unit's LimitNOFILE" [ "$(check_field corecast.service:LimitNOFILE 2)" = 1048576 ]
	run_tune "$h" revert
	expect "revert puts back the replaced sysctl file" file_is "$h/etc/sysctl.d/60-corecast.conf" 'net.core.rmem_max = 8388608'
	expect "revert with replaced files leaves the tree as before" [ "$(tree_sum "$h")" = "$pristine" ]
}

test_tune_missing_keys() {
	# A kernel without busy polling and without cpufreq.
	local h=$WORK/host4
	make_host "$h"
	rm -f "$h/proc/sys/net/core/busy_read" "$h/proc/sys/net/core/busy_poll"
	rm -rf "$h"/sys/devices/system/cpu/cpu*/cpufreq
	run_tune "$h" check
	expect "check marks a setting this kernel lacks SKIP" [ "$(check_field net.core.busy_read 4)" = SKIP ]
	expect "check marks missing cpufreq SKIP" [ "$(check_field cpufreq.scaling_governor 4)" = SKIP ]
	run_tune "$h" apply
	expect "apply on a kernel lacking settings succeeds" rc_is 0
	expect "installed file comments out what the kernel lacks" \
		grep -q '^# not present on this kernel: net.core.busy_read = 50$' "$h/etc/sysctl.d/60-corecast.conf"
	run_tune "$h" check
	expect "check exits 0 after apply despite SKIPs" rc_is 0
}

test_tune_usage() {
	local h=$WORK/host5
	make_host "$h"
	run_tune "$h" frobnicate
	expect "unknown command exits 2" rc_is 2
	run_tune "$h"
	expect "no command exits 2" rc_is 2
	run_tune "$h" check apply
	expect "two commands exit 2" rc_is 2
}

# ---------------------------------------------------------------- irq-affinity

make_nic_host() {
	local h=$1 irq
	put "$h/proc/interrupts" "$(
		cat <<'EOF'
            CPU0       CPU1       CPU2       CPU3
   0:         12          0          0          0   IO-APIC    2-edge      timer
  24:       1000          0          0          0   PCI-MSI 524288-edge      eth0-TxRx-0
  25:       1000          0          0          0   PCI-MSI 524289-edge      eth0-TxRx-1
  26:          5          0          0          0   PCI-MSI 524290-edge      eth0
  27:       1000          0          0          0   PCI-MSI 526336-edge      eth01-TxRx-0
  28:        300          0          0          0   PCI-MSI 1048576-edge     nvme0q1
 NMI:          0          0          0          0   Non-maskable interrupts
 LOC:      50000      50000      50000      50000   Local timer interrupts
EOF
	)"
	for irq in 0 24 25 26 27 28; do put "$h/proc/irq/$irq/smp_affinity_list" 0-3; done
	put "$h/sys/class/net/eth0/queues/rx-0/rps_cpus" 00000000
	put "$h/sys/class/net/eth0/queues/rx-1/rps_cpus" 00000000
	put "$h/sys/class/net/eth0/queues/tx-0/xps_cpus" 00000000
	put "$h/sys/class/net/eth0/queues/tx-1/xps_cpus" 00000000
	put "$h/sys/class/net/eth0/device/numa_node" 0
	put "$h/sys/devices/system/node/node0/cpulist" 0-3
}

test_irq() {
	local h=$WORK/nic
	make_nic_host "$h"
	local pristine
	pristine=$(tree_sum "$h")

	run_irq "$h" --nic eth0 --cores 0-1 --dry-run
	expect "irq-affinity --dry-run succeeds" rc_is 0
	expect "irq-affinity --dry-run says what it would do" out_has "would set irq 24: 0-3 -> 0-1"
	expect "irq-affinity --dry-run changes nothing" [ "$(tree_sum "$h")" = "$pristine" ]

	run_irq "$h" --nic eth0 --cores 0-1
	expect "irq-affinity succeeds" rc_is 0
	local irq moved=1
	for irq in 24 25 26; do [[ $(<"$h/proc/irq/$irq/smp_affinity_list") == 0-1 ]] || moved=0; done
	expect "irq-affinity moves every eth0 IRQ" [ "$moved" = 1 ]
	expect "irq-affinity leaves eth01's IRQ alone" file_is "$h/proc/irq/27/smp_affinity_list" 0-3
	expect "irq-affinity leaves other devices alone" file_is "$h/proc/irq/28/smp_affinity_list" 0-3
	expect "irq-affinity leaves the timer alone" file_is "$h/proc/irq/0/smp_affinity_list" 0-3
	expect "irq-affinity sets RPS on rx-0" file_is "$h/sys/class/net/eth0/queues/rx-0/rps_cpus" 3
	expect "irq-affinity sets RPS on rx-1" file_is "$h/sys/class/net/eth0/queues/rx-1/rps_cpus" 3
	expect "irq-affinity sets XPS on tx-0" file_is "$h/sys/class/net/eth0/queues/tx-0/xps_cpus" 3
	expect "irq-affinity sets XPS on tx-1" file_is "$h/sys/class/net/eth0/queues/tx-1/xps_cpus" 3

	# The kernel prints masks zero-padded; a second run must see them as already set.
	put "$h/sys/class/net/eth0/queues/rx-0/rps_cpus" 00000003
	local done_sum
	done_sum=$(tree_sum "$h")
	run_irq "$h" --nic eth0 --cores 1,0
	expect "irq-affinity run twice succeeds" rc_is 0
	expect "irq-affinity run twice changes nothing" [ "$(tree_sum "$h")" = "$done_sum" ]
	expect "irq-affinity run twice says already set" out_has "0 change(s) made"

	run_irq "$h" --nic eth0 --cores 0,2
	expect "irq-affinity mask of 0,2 is 5" file_is "$h/sys/class/net/eth0/queues/tx-0/xps_cpus" 5
	expect "irq-affinity writes the list in canonical form" file_is "$h/proc/irq/24/smp_affinity_list" 0,2

	run_irq "$h" --nic eth0 --cores 33,1
	expect "irq-affinity handles cores past 31" rc_is 0
	expect "irq-affinity mask above 32 cores uses comma-separated words" \
		file_is "$h/sys/class/net/eth0/queues/rx-1/rps_cpus" '2,00000002'
	expect "irq-affinity warns about cores off the NIC's NUMA node" out_has "not on NUMA node 0"

	run_irq "$h" --nic eth0 --cores 1-x
	expect "irq-affinity rejects a bad core list" rc_is 2
	run_irq "$h" --cores 0-1
	expect "irq-affinity requires --nic" rc_is 2
	run_irq "$h" --nic ../../etc --cores 0
	expect "irq-affinity rejects a path as interface" rc_is 2
	run_irq "$h" --nic eth9 --cores 0-1
	expect "irq-affinity fails on an unknown interface" rc_is 1
}

test_irq_msi() {
	# A driver whose /proc/interrupts lines do not name the interface (mlx5, virtio).
	local h=$WORK/nic2
	put "$h/proc/interrupts" '           CPU0\n  40:   7   PCI-MSI 1-edge   mlx5_comp0@pci:0000:41:00.0'
	put "$h/proc/irq/40/smp_affinity_list" 0-7
	mkdir -p "$h/sys/class/net/enp65s0/device/msi_irqs"
	: >"$h/sys/class/net/enp65s0/device/msi_irqs/40"
	put "$h/sys/class/net/enp65s0/queues/rx-0/rps_cpus" 0
	run_irq "$h" --nic enp65s0 --cores 0
	expect "irq-affinity finds IRQs through msi_irqs" file_is "$h/proc/irq/40/smp_affinity_list" 0
}

# ---------------------------------------------------------------- without root

# Run a command as nobody when we are root; directly when we are not.
as_unprivileged() {
	if [[ $(id -u) != 0 ]]; then
		OUT=$("$@" 2>&1)
		RC=$?
	else
		OUT=$(setpriv --reuid=65534 --regid=65534 --clear-groups "$@" 2>&1)
		RC=$?
	fi
}

test_no_root() {
	if [[ $(id -u) == 0 ]] && ! command -v setpriv >/dev/null 2>&1; then
		printf 'skip no-root tests: running as root and setpriv is missing\n'
		return 0
	fi
	# Copies that an unprivileged user can read.
	local pub=$WORK/pub
	mkdir -p "$pub/sysctl"
	cp "$TUNE" "$IRQ" "$pub/"
	cp "$TUNING/sysctl/60-corecast.conf" "$pub/sysctl/"
	chmod 755 "$WORK" "$pub" "$pub/sysctl" "$pub/tune" "$pub/irq-affinity"
	chmod 644 "$pub/sysctl/60-corecast.conf"

	# Real default roots, unprivileged: apply and revert refuse, check reads only.
	as_unprivileged env -u CORECAST_PROC_SYS -u CORECAST_SYSCTL_DIR -u CORECAST_SYSTEMD_DIR \
		-u CORECAST_CPUFREQ_ROOT -u CORECAST_STATE_DIR bash "$pub/tune" apply
	expect "apply without root on the real host exits 1" rc_is 1
	expect "apply without root says it needs root" out_has "needs root"
	expect "apply without root changes nothing" out_has "nothing was changed"
	as_unprivileged env -u CORECAST_STATE_DIR bash "$pub/tune" revert
	expect "revert without root on the real host exits 1" rc_is 1
	expect "revert without root says it needs root" out_has "needs root"
	as_unprivileged env -u CORECAST_PROC_SYS bash "$pub/tune" check
	expect "check works without root" rc_in 0 1
	as_unprivileged env -u CORECAST_PROC_ROOT -u CORECAST_SYS_ROOT bash "$pub/irq-affinity" --nic lo --cores 0
	expect "irq-affinity without root on the real host exits 1" rc_is 1
	expect "irq-affinity without root says it needs root" out_has "needs root"
}

test_tune_cycle
test_tune_partial_change
test_tune_existing_files
test_tune_missing_keys
test_tune_usage
test_irq
test_irq_msi
test_no_root

printf '%s passed, %s failed\n' "$PASSED" "$FAILED"
((FAILED == 0))
