#!/bin/bash
# Issue 11: poll-known, poll-new and deliver against the pre-refactor commit and after it,
# interleaved per benchmark (before, after, before, after, before, after), each run waiting
# first for no pytest process and a 1-minute load average below 0.7 (checked every 15 s, up
# to 15 minutes; a run that had to start anyway is marked UNDER LOAD in waits.txt).
#   sh benchmarks/snapshot.sh 741c8a4 /tmp/te-before
#   sh benchmarks/snapshot.sh 87fcbc9 /tmp/te-after
#   bash benchmarks/results/issue11/interleave.sh      (from /work/main, /tmp/venv active)
#   RUNS=3 OUT=benchmarks/results/issue11/runs3 bash benchmarks/results/issue11/interleave.sh
set -u
runs=${RUNS:-1}
out=${OUT:-benchmarks/results/issue11}
mkdir -p "$out"
declare -A args=(
    [poll_known]="--n 20000 --runs $runs --no-profile"
    [poll_new]="--n 30000 --runs $runs --no-profile"
    [deliver]="--n 5000 --runs $runs --no-profile --no-e2e"
)
wait_idle() {
    local waited=0 load
    while :; do
        load=$(cut -d' ' -f1 /proc/loadavg)
        if ! pgrep -f pytest >/dev/null && awk -v l="$load" 'BEGIN{exit !(l < 0.7)}'; then
            echo "$(date -u +%H:%M:%S) $1: idle after ${waited} s (load1 $load)" >>"$out/waits.txt"
            return
        fi
        if [ "$waited" -ge 900 ]; then
            echo "$(date -u +%H:%M:%S) $1: UNDER LOAD after ${waited} s (load1 $load," \
                "pytest: $(pgrep -fc pytest))" >>"$out/waits.txt"
            return
        fi
        sleep 15
        waited=$((waited + 15))
    done
}
for bench in poll_known poll_new deliver; do
    for i in 1 2 3; do
        for side in before after; do
            name="${bench}_${side}_${i}"
            wait_idle "$name"
            BENCH_ENGINE_SRC=/tmp/te-$side python "benchmarks/$bench.py" ${args[$bench]} \
                >"$out/$name.txt" 2>"/tmp/issue11-$runs-$name.log"
            echo "$(date -u +%H:%M:%S) $name: exit $?" >>"$out/waits.txt"
        done
    done
done
