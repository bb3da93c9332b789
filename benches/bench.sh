#!/usr/bin/env bash
# copyd end-to-end benchmark: `copyctl copy -r` through a running release
# copyd (checkpoints and durability on, as users get it) against
# `cp -r --preserve=mode,timestamps`, and xcp / cpz when installed.
#
# Not part of `cargo test`. Run from anywhere, as root (cold-cache runs drop
# the page cache):
#
#   benches/bench.sh                     # everything, 3 runs each
#   RUNS=5 SETS="small" TARGETS=ext4 benches/bench.sh
#
# Knobs (environment):
#   RUNS=3            timed runs per tool (pairs alternate the tool order)
#   SETS="file2g small tree sparse items"
#   TARGETS="ext4 tmpfs"
#   COLD=1            also run each set of COLD_SETS ext4 -> ext4 with a cold
#                     cache (root): the source read from the disk
#   COLD_SETS="file2g small tree"
#   BENCH_DIR=/tmp/copyd-bench           sources and ext4 destinations
#   TMPFS_DIR=$BENCH_DIR/tmpfs           tmpfs destinations: a tmpfs is
#                     mounted there (root) unless one already is; copyd's
#                     default security.system_paths refuse /dev/shm
#   FILE_MIB=2048  SMALL_FILES=40000  SMALL_DIRS=200
#   SPARSE_GIB=8  SPARSE_DATA_MIB=64
#   ITEM_FILES=500    the "items" set: files of 1-64 KiB named one by one
#                     (`copyctl copy f1 ... f500 dir/`, as a shell glob does),
#                     each its own item, into an empty directory
#   TREE_SRC=~/.cargo/registry/src       the "real source tree"
#   TOOLS="copyd copyd-nosync cp xcp cpz"  those not installed are left out;
#                     copyd-nosync is `copyctl copy --no-sync` (the sync
#                     option off: placed atomically, not waited onto disk)
#   NO_BUILD=1        use the release binaries already in target/release
#   SETTLE=2          seconds to wait after deleting a 2 GiB copy on ext4
#
#   SYSCALL_SAMPLE=8000  files of the small set counted under `strace -c`
#                     (outside the timed runs; 0 to skip the count)
#
# Output: a table on stdout (markdown), raw times in $BENCH_DIR/times.tsv.
# "--no-sync/best peer" is the median of per-round ratios of copyd
# --no-sync to the faster of xcp and cpz in that round. The "auto chose"
# column is where copyd (auto) moved the bytes of its
# first --no-sync copy, by engine, from the job's engine bytes. Notes give,
# for the items set, `copyctl cp` (the cp front) against cp, and for the
# large file into tmpfs, `fallocate` of the same size there alone: the cost
# of the tmpfs pages, which no copy can avoid. After the table, system calls
# per file for each tool (strace -f -c, copyd's daemon and copyctl
# together), on a sample of the small files and on the source tree.
# Ratios are the median of per-pair ratios copyd/cp. "cp+sync" is cp's time
# plus a syncfs of the destination right after it: what cp costs when its
# copy must be on disk, as copyd's always is.

set -euo pipefail

RUNS=${RUNS:-3}
SETS=${SETS:-"file2g small tree sparse items"}
TARGETS=${TARGETS:-"ext4 tmpfs"}
COLD=${COLD:-1}
COLD_SETS=${COLD_SETS:-"file2g small tree"}
BENCH_DIR=${BENCH_DIR:-/tmp/copyd-bench}
TMPFS_DIR=${TMPFS_DIR:-$BENCH_DIR/tmpfs}
FILE_MIB=${FILE_MIB:-2048}
SMALL_FILES=${SMALL_FILES:-40000}
SMALL_DIRS=${SMALL_DIRS:-200}
SPARSE_GIB=${SPARSE_GIB:-8}
SPARSE_DATA_MIB=${SPARSE_DATA_MIB:-64}
ITEM_FILES=${ITEM_FILES:-500}
TREE_SRC=${TREE_SRC:-$HOME/.cargo/registry/src}
TOOLS=${TOOLS:-"copyd copyd-nosync cp xcp cpz"}
SETTLE=${SETTLE:-2}
SYSCALL_SAMPLE=${SYSCALL_SAMPLE:-8000}

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SRC=$BENCH_DIR/src
RUNDIR=$BENCH_DIR/run
TIMES=$BENCH_DIR/times.tsv
TABLE=$BENCH_DIR/table.md

say() { printf '%s\n' "$*" >&2; }
die() { say "bench: $*"; exit 1; }

# --- tools ------------------------------------------------------------------

if [[ -z ${NO_BUILD:-} ]]; then
    say "building release binaries"
    (cd "$REPO" && cargo build --release -q -p copyd-service -p copyctl)
fi
TARGET_DIR=$(cd "$REPO" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
COPYD=$TARGET_DIR/release/copyd
COPYCTL=$TARGET_DIR/release/copyctl
[[ -x $COPYD && -x $COPYCTL ]] || die "no release copyd/copyctl in $TARGET_DIR/release"
command -v dbus-daemon >/dev/null || die "dbus-daemon is not installed (apt-get install dbus-daemon)"

tools=()
for tool in $TOOLS; do
    case $tool in
        copyd | copyd-nosync | cp) tools+=("$tool") ;;
        *) if command -v "$tool" >/dev/null; then tools+=("$tool"); else say "note: $tool is not installed; left out (cargo install $tool)"; fi ;;
    esac
done

# --- space --------------------------------------------------------------------

mkdir -p "$BENCH_DIR" "$TMPFS_DIR"
avail_mib() { df --output=avail -BM "$1" | tail -n 1 | tr -dc 0-9; }
tree_mib=$(du -sm "$TREE_SRC" 2>/dev/null | cut -f1 || echo 0)
small_mib=$((SMALL_FILES * 13 / 1024)) # 8.5 KiB average in 4 KiB blocks, plus directories
# Sources; copies of the tree sets on ext4 stay until the end (every tool,
# every run); one copy of the large file at a time; 1 GiB to spare.
keep=$(((small_mib + tree_mib) * (1 + RUNS * ${#tools[@]})))
need=$((FILE_MIB * 2 + keep + SPARSE_DATA_MIB * 2 + 1024))
have=$(avail_mib "$BENCH_DIR")
if ((have < need)); then
    FILE_MIB=$(((have - keep - SPARSE_DATA_MIB * 2 - 1024) / 2))
    ((FILE_MIB >= 256)) || die "only $have MiB free in $BENCH_DIR; need about $need MiB"
    say "bench: only $have MiB free in $BENCH_DIR (need about $need MiB): the large file is scaled down to $FILE_MIB MiB"
fi
MOUNTED_TMPFS=
if [[ $TARGETS == *tmpfs* ]]; then
    mem_have=$(($(awk '/MemAvailable/ {print $2}' /proc/meminfo) / 1024))
    if ((mem_have < FILE_MIB * 2 + 1024)); then
        say "bench: only $mem_have MiB of memory available: tmpfs target left out"
        TARGETS=${TARGETS//tmpfs/}
    elif [[ $(stat -f -c %T "$TMPFS_DIR") == tmpfs ]]; then
        (($(avail_mib "$TMPFS_DIR") >= FILE_MIB + 512)) || die "tmpfs $TMPFS_DIR too small for $FILE_MIB MiB"
    elif [[ $(id -u) == 0 ]] && mount -t tmpfs -o size=$((FILE_MIB + 1024))m copyd-bench "$TMPFS_DIR"; then
        MOUNTED_TMPFS=1
    else
        say "bench: cannot mount a tmpfs on $TMPFS_DIR (needs root): tmpfs target left out"
        TARGETS=${TARGETS//tmpfs/}
    fi
fi

# --- data sets ----------------------------------------------------------------

make_sets() {
    mkdir -p "$SRC"
    if [[ $SETS == *file2g* && $(stat -c %s "$SRC/file2g" 2>/dev/null || echo 0) != $((FILE_MIB << 20)) ]]; then
        say "making a $FILE_MIB MiB file"
        head -c "${FILE_MIB}M" /dev/urandom >"$SRC/file2g.part" && mv "$SRC/file2g.part" "$SRC/file2g"
    fi
    if [[ $SETS == *small* && ! -e $SRC/small.done-$SMALL_FILES ]]; then
        say "making $SMALL_FILES files of 1-16 KiB in $SMALL_DIRS directories"
        rm -rf "$SRC/small" "$SRC"/small.done-*
        python3 - "$SRC/small" "$SMALL_FILES" "$SMALL_DIRS" <<'EOF'
import os, random, sys
root, files, dirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rng = random.Random(5)
blob = os.urandom(16 << 10)
for d in range(dirs):
    os.makedirs(f"{root}/d{d:03}")
for i in range(files):
    size = rng.randint(1 << 10, 16 << 10)
    start = rng.randint(0, (16 << 10) - size)
    with open(f"{root}/d{i % dirs:03}/f{i:05}.dat", "wb") as f:
        f.write(blob[start:start + size])
EOF
        touch "$SRC/small.done-$SMALL_FILES"
    fi
    if [[ $SETS == *tree* && ! -e $SRC/tree.done ]]; then
        [[ -d $TREE_SRC ]] || TREE_SRC=/usr/include
        say "copying $TREE_SRC as the source tree"
        rm -rf "$SRC/tree"
        cp -a "$TREE_SRC" "$SRC/tree"
        touch "$SRC/tree.done"
    fi
    if [[ $SETS == *items* && ! -e $SRC/items.done-$ITEM_FILES ]]; then
        say "making $ITEM_FILES files of 1-64 KiB"
        rm -rf "$SRC/items" "$SRC"/items.done-*
        python3 - "$SRC/items" "$ITEM_FILES" <<'EOF'
import os, random, sys
root, files = sys.argv[1], int(sys.argv[2])
rng = random.Random(7)
os.makedirs(root)
for i in range(files):
    with open(f"{root}/photo{i:04}.jpg", "wb") as f:
        f.write(os.urandom(rng.randint(1 << 10, 64 << 10)))
EOF
        touch "$SRC/items.done-$ITEM_FILES"
    fi
    if [[ $SETS == *sparse* && ! -e $SRC/sparse.done-$SPARSE_GIB-$SPARSE_DATA_MIB ]]; then
        say "making a $SPARSE_GIB GiB sparse file with $SPARSE_DATA_MIB MiB of data"
        rm -f "$SRC/sparse" "$SRC"/sparse.done-*
        truncate -s "${SPARSE_GIB}G" "$SRC/sparse"
        # 1 MiB of data every SPARSE_GIB GiB / SPARSE_DATA_MIB.
        local step=$(((SPARSE_GIB << 10) / SPARSE_DATA_MIB)) i
        for ((i = 0; i < SPARSE_DATA_MIB; i++)); do
            dd if=/dev/urandom of="$SRC/sparse" bs=1M count=1 seek=$((i * step)) conv=notrunc status=none
        done
        touch "$SRC/sparse.done-$SPARSE_GIB-$SPARSE_DATA_MIB"
    fi
    sync
}

# --- the bus and copyd ------------------------------------------------------------

BUS_PID=
COPYD_PID=
cleanup() {
    [[ -n $COPYD_PID ]] && kill "$COPYD_PID" 2>/dev/null && wait "$COPYD_PID" 2>/dev/null
    [[ -n $BUS_PID ]] && kill "$BUS_PID" 2>/dev/null && wait "$BUS_PID" 2>/dev/null
    say "removing the copies"
    rm -rf "$RUNDIR" "$TMPFS_DIR/dst" "$BENCH_DIR/dst"
    [[ -n $MOUNTED_TMPFS ]] && umount "$TMPFS_DIR"
    true
}
trap cleanup EXIT

start_bus() {
    rm -rf "$RUNDIR"
    mkdir -p "$RUNDIR/services"
    # The tests' permissive policy: everyone may do everything.
    local policy
    policy=$(cat "$REPO/tests/data/permissive-policy.xml")
    python3 - "$REPO/tests/data/system-bus.conf.in" "$RUNDIR" "$policy" >"$RUNDIR/bus.conf" <<'EOF'
import sys
template, rundir, policy = sys.argv[1], sys.argv[2], sys.argv[3]
text = open(template).read()
for key, value in {"@SOCKET@": f"{rundir}/bus", "@SERVICEDIR@": f"{rundir}/services",
                   "@POLICY@": policy, "@INCLUDE_COPYD_POLICY@": "", "@COPYD_POLICY@": ""}.items():
    text = text.replace(key, value)
print(text)
EOF
    dbus-daemon --config-file="$RUNDIR/bus.conf" --nofork --print-address=3 3>"$RUNDIR/address" 2>"$RUNDIR/bus.log" &
    BUS_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [[ -s $RUNDIR/address ]] && break
        sleep 0.05
    done
    [[ -s $RUNDIR/address ]] || die "dbus-daemon did not start: $(cat "$RUNDIR/bus.log")"
    export COPYD_ADDRESS
    COPYD_ADDRESS=$(head -n 1 "$RUNDIR/address")
}

# A fresh copyd (fresh state directory), so its peak RSS is this group's.
start_copyd() {
    stop_copyd
    rm -rf "$RUNDIR/state"
    mkdir -p "$RUNDIR/state"
    printf 'max_concurrent_jobs = 4\nstate_dir = "%s"\nrate_limit = 0\n' "$RUNDIR/state" >"$RUNDIR/copyd.toml"
    RUST_LOG=warn "$COPYD" --address "$COPYD_ADDRESS" --config "$RUNDIR/copyd.toml" \
        --state-dir "$RUNDIR/state" </dev/null >>"$RUNDIR/copyd.log" 2>&1 &
    COPYD_PID=$!
    local i
    for ((i = 0; i < 200; i++)); do
        if dbus-send --bus="$COPYD_ADDRESS" --print-reply --dest=org.freedesktop.DBus /org/freedesktop/DBus \
            org.freedesktop.DBus.NameHasOwner string:org.example.Copyd1 2>/dev/null | grep -q true; then
            return
        fi
        sleep 0.05
    done
    die "copyd did not come up: $(tail -n 20 "$RUNDIR/copyd.log")"
}

stop_copyd() {
    if [[ -n $COPYD_PID ]]; then
        kill "$COPYD_PID" 2>/dev/null || true
        wait "$COPYD_PID" 2>/dev/null || true
        COPYD_PID=
    fi
}

copyd_hwm_mib() {
    awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$COPYD_PID/status"
}

# --- timing -------------------------------------------------------------------

run_tool() { # tool src dst
    if [[ ${2##*/} == items ]]; then
        # Each file its own item, into a directory, as `tool dir/* dst/`.
        mkdir -p "$3"
        local files=("$2"/*)
        case $1 in
            copyd) "$COPYCTL" copy "${files[@]}" "$3/" >/dev/null ;;
            copyd-nosync) "$COPYCTL" --json copy --no-sync "${files[@]}" "$3/" >"$RUNDIR/last.json" ;;
            copyctl-cp) "$COPYCTL" cp --preserve=mode,timestamps "${files[@]}" "$3/" ;;
            copyd-one) "$COPYCTL" copy --no-sync "${files[0]}" "$3/" >/dev/null ;;
            cp) cp --preserve=mode,timestamps "${files[@]}" "$3/" ;;
            xcp) xcp "${files[@]}" "$3/" >/dev/null 2>&1 ;;
            cpz) cpz "${files[@]}" "$3/" >/dev/null 2>&1 ;;
        esac
        return
    fi
    case $1 in
        copyd) "$COPYCTL" copy -r "$2" "$3" >/dev/null ;;
        copyd-nosync) "$COPYCTL" --json copy -r --no-sync "$2" "$3" >"$RUNDIR/last.json" ;;
        copyctl-cp) "$COPYCTL" cp -r --preserve=mode,timestamps "$2" "$3" ;;
        fallocate) fallocate -l "$(stat -c %s "$2")" "$3" ;;
        cp) cp -r --preserve=mode,timestamps "$2" "$3" ;;
        xcp) xcp -r "$2" "$3" >/dev/null 2>&1 ;;
        cpz) cpz "$2" "$3" >/dev/null 2>&1 ;; # always recursive
    esac
}

elapsed() { # start end
    awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", b - a}'
}

median() { # numbers on stdin
    { grep -v '^$' || true; } | sort -g | awk '{v[NR] = $1} END {if (NR == 0) print "-"; else if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}

# The tools' executables and libraries: read back after every drop of the
# page cache, so only the data is cold or warm, never a tool. Dropped,
# copyctl's 9 MiB executable is read back from disk on its next start;
# cp's is a few hundred KiB. (The sparse file, 6 alternating rounds: copyctl
# dropped 43-97 ms, median 56; read back first 30-78 ms, median 35; cp,
# dropped, 22-67 ms, median 31.)
# The running copyd's and dbus-daemon's executables too: a drop takes their
# code pages, which they fault back in from disk during the next copy (the
# sparse file, copyd --no-sync, 6 alternating rounds after a drop: 34-79 ms,
# copyd's executable read back first 33-45 ms).
tool_files=("$COPYCTL" "$COPYD" "$(command -v dbus-daemon)")
for tool in cp xcp cpz; do
    command -v "$tool" >/dev/null && tool_files+=("$(command -v "$tool")")
done
for file in "${tool_files[@]}"; do
    while read -r lib; do tool_files+=("$lib"); done < <(ldd "$file" 2>/dev/null | awk '$3 ~ /^\// {print $3}')
done
warm_tools() { cat "${tool_files[@]}" >/dev/null 2>&1 || true; }

warm() { # read every file of $1 once
    if [[ -d $1 ]]; then
        find "$1" -type f -print0 | xargs -0 cat >/dev/null
    else
        cat "$1" >/dev/null
    fi
}

verify() { # src copy
    if [[ -d $1 ]]; then
        diff -r "$1" "$2" >/dev/null || die "copy $2 differs from $1"
    else
        cmp -s "$1" "$2" || die "copy $2 differs from $1"
    fi
}

# One group: a data set, a target, a cache state. RUNS rounds; round r runs
# every tool once, in an order rotated by r, so none always goes first.
group() { # set target cache
    local set=$1 target=$2 cache=$3
    local src=$SRC/$set dst_root
    case $target in
        ext4) dst_root=$BENCH_DIR/dst/$set-$cache ;;
        tmpfs) dst_root=$TMPFS_DIR/dst ;;
    esac
    rm -rf "$dst_root"
    mkdir -p "$dst_root"
    sync
    # Every group starts from an empty cache (then warms its source): cached
    # inode table blocks of recently deleted files make ext4's inode
    # allocator scan them (recently_deleted), which slowed creating files
    # by 2x and more after a mass delete.
    [[ $(id -u) == 0 ]] && echo 3 >/proc/sys/vm/drop_caches
    sleep 1
    start_copyd
    [[ $cache == warm ]] && warm "$src"
    [[ $cache == warm && $(id -u) != 0 ]] && say "note: not root: the page cache is not reset between tools"
    # Beside the tools: the cp front for the items set, and for the large
    # file into tmpfs the allocation of its pages alone.
    local group_tools=("${tools[@]}")
    [[ $set == items ]] && group_tools+=(copyctl-cp copyd-one)
    [[ $set == file2g && $target == tmpfs ]] && command -v fallocate >/dev/null && group_tools+=(fallocate)
    local r t i n=${#group_tools[@]} tool dst t0 t1 secs sync_secs du_note="" chose=-
    declare -A took=()
    for ((r = 0; r < RUNS; r++)); do
        for ((i = 0; i < n; i++)); do
            tool=${group_tools[(i + r) % n]}
            dst=$dst_root/$tool-$r
            # cpz fills sparse files in (8 GiB written, then deleted, which
            # on this disk means discards that slow whatever syncs next):
            # measured once per group.
            if [[ $set == sparse && $tool == cpz ]] && ((r > 0)); then
                continue
            fi
            sync
            if [[ $cache == cold ]]; then
                echo 3 >/proc/sys/vm/drop_caches
                warm_tools
            elif [[ $(id -u) == 0 ]]; then
                # Every tool starts from the same page cache: the source and
                # nothing else. (A copy that drops its own pages, as copyd's
                # durable copies do, frees memory the VM's host takes back;
                # whichever tool ran next paid about 1 s per 2 GiB to touch
                # it again, which moved the cost onto the neighbour.)
                echo 1 >/proc/sys/vm/drop_caches
                warm "$src"
                warm_tools
            fi
            t0=$EPOCHREALTIME
            if ! run_tool "$tool" "$src" "$dst"; then
                # copyd and cp must work; another tool's failure is noted.
                [[ $tool == copyd* || $tool == cp ]] && die "$tool failed on $set -> $target"
                say "  $set $target $cache round $r: $tool FAILED"
                [[ $du_note == *"$tool failed"* ]] || du_note+="$tool failed, "
                rm -rf "$dst"
                continue
            fi
            t1=$EPOCHREALTIME
            secs=$(elapsed "$t0" "$t1")
            t0=$EPOCHREALTIME
            sync -f "$dst"
            t1=$EPOCHREALTIME
            sync_secs=$(elapsed "$t0" "$t1")
            took[$tool,$r]=$secs
            took[$tool+sync,$r]=$(awk -v a="$secs" -v b="$sync_secs" 'BEGIN {printf "%.3f", a + b}')
            printf '%s\t%s\t%s\t%s\t%d\t%s\t%s\n' "$(date -Is)" "$set" "$target" "$cache" "$r" "$tool" "$secs" >>"$TIMES"
            say "  $set $target $cache round $r: $tool ${secs}s (+sync ${sync_secs}s)"
            if ((r == 0)); then
                [[ $tool == copyd* && $tool != copyd-one || $tool == copyctl-cp ]] && verify "$src" "$dst"
                [[ $tool == copyd-nosync ]] && chose=$(engines_used "$RUNDIR/last.json")
                if [[ $set == sparse ]]; then
                    du_note+="$tool $(du -sm "$dst" | cut -f1) MiB, "
                fi
            fi
            # Keep copies of the tree sets on ext4 until the end (a mass
            # delete slows the next mass create); remove the others at once.
            if [[ $set == file2g || $set == sparse || $target == tmpfs || $tool == fallocate ]]; then
                rm -rf "$dst"
                # Deleting GiBs on a disk mounted with `discard` hands the
                # host discards it carries out after rm returns; the next
                # tool's reads paid for them (bimodal cold rounds).
                [[ $set == file2g && $target == ext4 ]] && sleep "$SETTLE"
            fi
        done
    done
    local hwm
    hwm=$(copyd_hwm_mib)
    stop_copyd
    [[ $target == tmpfs ]] && rm -rf "$dst_root"
    # Medians of times, and of per-round ratios (the pairs ran in one round).
    med() { for ((r = 0; r < RUNS; r++)); do echo "${took[$1,$r]:-}"; done | median; }
    ratio() {
        for ((r = 0; r < RUNS; r++)); do
            [[ -n ${took[$1,$r]:-} && -n ${took[$2,$r]:-} ]] &&
                awk -v a="${took[$1,$r]}" -v b="${took[$2,$r]}" 'BEGIN {printf "%.3f\n", a / b}'
        done | median
    }
    # Per round, copyd --no-sync against the faster of xcp and cpz in that
    # round.
    best_peer_ratio() {
        for ((r = 0; r < RUNS; r++)); do
            local peer=${took[xcp,$r]:-} mine=${took[copyd-nosync,$r]:-}
            [[ -n ${took[cpz,$r]:-} ]] && { [[ -z $peer ]] || awk -v a="${took[cpz,$r]}" -v b="$peer" 'BEGIN {exit !(a < b)}'; } && peer=${took[cpz,$r]}
            [[ -n $peer && -n $mine ]] && awk -v a="$mine" -v b="$peer" 'BEGIN {printf "%.3f\n", a / b}'
        done | median
    }
    local med_copyd med_nosync=- med_cp med_ratio med_ratio_nosync=- med_ratio_sync med_cpsync med_xcp=- med_cpz=- med_best
    med_copyd=$(med copyd)
    med_cp=$(med cp)
    med_cpsync=$(med cp+sync)
    med_ratio=$(ratio copyd cp)
    med_ratio_sync=$(ratio copyd cp+sync)
    if [[ " ${tools[*]} " == *" copyd-nosync "* ]]; then
        med_nosync=$(med copyd-nosync)
        med_ratio_nosync=$(ratio copyd-nosync cp)
    fi
    [[ " ${tools[*]} " == *" xcp "* ]] && med_xcp=$(med xcp)
    [[ " ${tools[*]} " == *" cpz "* ]] && med_cpz=$(med cpz)
    med_best=$(best_peer_ratio)
    if [[ $set == sparse ]]; then
        du_note="du: source $(du -sm "$src" | cut -f1) MiB; copies: ${du_note%, }"
    fi
    [[ $set == items ]] && du_note+="copyctl cp $(med copyctl-cp) s, $(ratio copyctl-cp cp)× cp; a one-file copyd job (--no-sync, the job's fixed cost) $(med copyd-one) s, "
    [[ " ${group_tools[*]} " == *" fallocate "* ]] &&
        du_note+="fallocate of the same size alone (tmpfs pages): $(med fallocate) s, $(ratio fallocate cp)× cp, "
    du_note=${du_note%, }
    printf '| %s | %s | %s | %s | %s | %s | %s× | %s× | %s | %s× | %s | %s | %s× | %s | %s | %s |\n' \
        "$(set_label "$set")" "ext4 → $target" "$cache" "$med_copyd" "$med_nosync" "$med_cp" \
        "$med_ratio" "$med_ratio_nosync" "$med_cpsync" "$med_ratio_sync" "$med_xcp" "$med_cpz" \
        "$med_best" "$chose" "$hwm" "$du_note" | tee -a "$TABLE"
}

# Where a copyd job's bytes went, by engine, from its JSON summary:
# "io_uring 96%, copy_file_range 4%".
engines_used() { # summary.json
    python3 - "$1" <<'EOF'
import json, sys
try:
    lines = [l for l in open(sys.argv[1]) if l.strip().startswith("{")]
    by_engine = json.loads(lines[-1]).get("engine_bytes", {})
except (OSError, ValueError, IndexError):
    print("?")
    sys.exit()
total = sum(by_engine.values())
used = sorted(by_engine.items(), key=lambda kv: -kv[1])
print(", ".join(f"{e} {100 * b / total:.0f}%" for e, b in used if b) if total else "no bytes")
EOF
}

# System calls per file of each tool copying $1 (a directory of $2 files),
# counted by strace outside the timed runs: for copyd, the daemon's threads
# and copyctl's together.
syscalls_per_file() { # src files label
    local src=$1 files=$2 label=$3 tool dst out calls tracer row
    row="| $label ($files files) |"
    for tool in "${tools[@]}" copyctl-cp; do
        dst=$BENCH_DIR/dst/strace-${label// /-}-$tool
        rm -rf "$dst"
        mkdir -p "$BENCH_DIR/dst"
        out=$RUNDIR/strace-$tool
        rm -f "$out".*
        local argv=()
        case $tool in
            copyd) argv=("$COPYCTL" copy -r "$src" "$dst") ;;
            copyd-nosync) argv=("$COPYCTL" copy -r --no-sync "$src" "$dst") ;;
            copyctl-cp) argv=("$COPYCTL" cp -r --preserve=mode,timestamps "$src" "$dst") ;;
            cp) argv=(cp -r --preserve=mode,timestamps "$src" "$dst") ;;
            xcp) argv=(xcp -r "$src" "$dst") ;;
            cpz) argv=(cpz "$src" "$dst") ;;
        esac
        tracer=
        if [[ $tool == copyd* || $tool == copyctl-cp ]]; then
            strace -f -c -o "$out.daemon" -p "$COPYD_PID" 2>/dev/null &
            tracer=$!
            sleep 0.5
        fi
        strace -f -c -o "$out.client" "${argv[@]}" >/dev/null 2>&1 || true
        if [[ -n $tracer ]]; then
            kill -INT "$tracer" 2>/dev/null
            wait "$tracer" 2>/dev/null || true
        fi
        verify "$src" "$dst"
        calls=$(cat "$out".* 2>/dev/null | awk '$NF == "total" {sum += $4} END {print sum + 0}')
        row+=" $(awk -v c="$calls" -v f="$files" 'BEGIN {printf "%.2f", c / f}') |"
    done
    echo "$row"
}

set_label() {
    case $1 in
        file2g) echo "$FILE_MIB MiB file" ;;
        small) echo "$SMALL_FILES files 1–16 KiB, $SMALL_DIRS dirs" ;;
        tree) echo "source tree ($(find "$SRC/tree" -type f | wc -l) files, $(du -sm "$SRC/tree" | cut -f1) MiB)" ;;
        sparse) echo "$SPARSE_GIB GiB sparse, $SPARSE_DATA_MIB MiB data" ;;
        items) echo "$ITEM_FILES files of 1–64 KiB as $ITEM_FILES items" ;;
    esac
}

# --- main ---------------------------------------------------------------------

make_sets
start_bus
: >"$TABLE"
say "tools: ${tools[*]}; $RUNS runs each; raw times in $TIMES"
{
    echo "| data set | target | cache | copyd s | copyd --no-sync s | cp s | copyd/cp | --no-sync/cp | cp+sync s | copyd/(cp+sync) | xcp s | cpz s | --no-sync/best peer | auto chose | copyd peak RSS MiB | notes |"
    echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
} | tee "$TABLE"
for set in $SETS; do
    for target in $TARGETS; do
        group "$set" "$target" warm
        if [[ " $COLD_SETS " == *" $set "* && $target == ext4 && $COLD == 1 ]]; then
            if [[ $(id -u) == 0 ]]; then
                group "$set" "$target" cold
            else
                say "note: cold-cache runs need root; skipped"
            fi
        fi
    done
done
if ((SYSCALL_SAMPLE > 0)) && [[ " $SETS " == *" small "* ]] && command -v strace >/dev/null; then
    say "counting system calls per file (strace -f -c)"
    sample=$SRC/small-sample-$SYSCALL_SAMPLE
    if [[ ! -d $sample ]]; then
        rm -rf "$sample.part"
        mapfile -t picks < <(find "$SRC/small" -type f | sort | head -n "$SYSCALL_SAMPLE")
        for f in "${picks[@]}"; do
            d=$sample.part/${f#"$SRC/small/"}
            mkdir -p "${d%/*}"
            cp -p "$f" "$d"
        done
        mv "$sample.part" "$sample"
    fi
    start_copyd
    {
        echo
        echo "System calls per file (strace -f -c; copyd: the daemon's threads and copyctl together):"
        echo
        header="| data set |"
        rule="|---|"
        for tool in "${tools[@]}" copyctl-cp; do header+=" $tool |"; rule+="---|"; done
        echo "$header"
        echo "$rule"
        warm "$sample"
        syscalls_per_file "$sample" "$(find "$sample" -type f | wc -l)" "small files"
        if [[ -d $SRC/tree ]]; then
            warm "$SRC/tree"
            syscalls_per_file "$SRC/tree" "$(find "$SRC/tree" -type f | wc -l)" "source tree"
        fi
    } | tee -a "$TABLE"
    stop_copyd
fi
say "table in $TABLE"
