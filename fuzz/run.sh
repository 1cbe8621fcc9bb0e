#!/usr/bin/env bash
# fuzz/run.sh [--seconds N] [TARGET...]: builds the fuzz targets on the stable toolchain and runs
# each (all, or those named) for N seconds (default 60) on its committed corpus. New inputs go to
# a scratch directory, so the committed corpus stays as it is; a crash, a failed assertion, a
# timeout or running out of memory fails the run and its input is left in fuzz/artifacts/TARGET/.
# Called by `./build.sh fuzz`, which installs the C++ compiler libFuzzer needs. README.md says why
# there is no AddressSanitizer.
set -euo pipefail
shopt -s nullglob

CARGO_FUZZ_VERSION=0.13.2
DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
seconds=60
targets=()
while (($#)); do
    case $1 in
    --seconds)
        [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "fuzz: --seconds takes a whole number of seconds" >&2; exit 2; }
        seconds=$2
        shift 2
        ;;
    -*) echo "fuzz: unknown option $1" >&2; exit 2 ;;
    *) targets+=("$1"); shift ;;
    esac
done

cd "$DIR"
# build.sh exports SOURCE_DATE_EPOCH (the last commit's time) for a reproducible image; the cc
# crate rebuilds libFuzzer and ring whenever it changes, and with them most of the targets'
# dependencies: after every commit, minutes on two cores. Fuzz builds need not be reproducible.
unset SOURCE_DATE_EPOCH
if [[ $(cargo fuzz --version 2>/dev/null) != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "==> cargo install cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    nice -n 10 cargo install --locked cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
mapfile -t all < <(cargo fuzz list)
((${#targets[@]})) || targets=("${all[@]}")
for t in "${targets[@]}"; do
    printf '%s\n' "${all[@]}" | grep -qx -- "$t" || { echo "fuzz: no target $t (there are: ${all[*]})" >&2; exit 2; }
done

# -s none: no sanitizer, the only choice on stable (README.md). Debug assertions and overflow
# checks are on (-a), so an arithmetic overflow is a finding too.
FLAGS=(-s none -a)
TRIPLE=$(rustc -vV | sed -n 's/^host: //p')
echo "==> cargo fuzz build ${FLAGS[*]} (stable $(rustc --version | cut -d' ' -f2))" >&2
# All at once (`cargo fuzz build` takes one target or all); each run below finds its target built.
nice -n 10 cargo fuzz build "${FLAGS[@]}" || { echo "fuzz: build failed" >&2; exit 1; }

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
failed=()
summary=()
for t in "${targets[@]}"; do
    mkdir -p "$scratch/$t" "corpus/$t" "artifacts/$t"
    log=$scratch/$t.log
    echo "==> fuzz $t for $seconds s ($(ls "corpus/$t" | wc -l) inputs in corpus/$t)" >&2
    status=0
    # The binary itself, not `cargo fuzz run`: that checks the build again, seconds per target.
    nice -n 10 "target/$TRIPLE/release/$t" -artifact_prefix="$DIR/artifacts/$t/" \
        -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        "$scratch/$t" "corpus/$t" >"$log" 2>&1 || status=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    took=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    new=$(ls "$scratch/$t" | wc -l)
    if ((status == 0)); then
        result=ok
    else
        result="FAILED (exit $status)"
        failed+=("$t")
        cp "$log" "artifacts/$t/last-run.log"
        # What went wrong: the panic or libFuzzer's report, before the stack trace.
        grep -m1 -A12 -E "panicked at|^==[0-9]+== ERROR|ERROR: libFuzzer|out-of-memory|Timeout" "$log" >&2 || tail -n 30 "$log" >&2
        artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -1)
        echo "fuzz: $t found a problem; input: ${artifact:-none written, see $DIR/artifacts/$t/last-run.log} (reproduce: cd fuzz && cargo fuzz run ${FLAGS[*]} $t ${artifact:-ARTIFACT})" >&2
    fi
    summary+=("$(printf '%-18s %12s runs %5s s %9s exec/s %5s new inputs  %s' "$t" "${runs:-?}" "${took:-?}" \
        "$( [[ -n ${runs:-} && ${took:-0} -gt 0 ]] && echo $((runs / took)) || echo '?')" "$new" "$result")")
done
echo "==> fuzz summary (${seconds} s per target)" >&2
printf '    %s\n' "${summary[@]}" >&2
if ((${#failed[@]})); then
    echo "fuzz: findings in: ${failed[*]} (inputs in $DIR/artifacts/)" >&2
    exit 1
fi
