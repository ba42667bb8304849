#!/usr/bin/env bash
# Runs xdpwg's libFuzzer targets (the Fuzz/ package; the targets are in Sources/Fuzzing).
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [--merge] [TARGET...]
#
#   --seconds N  run each target N seconds (default 20)
#   --jobs J     J fuzzing processes per target (libFuzzer -fork=J; default 1)
#   --merge      afterwards, add the inputs that found new coverage to Fuzz/Corpus/TARGET
#                (libFuzzer -merge=1: only what the committed corpus does not cover yet)
#   TARGET...    some of: messages handshakeInitiation handshakeResponse handshakeCookie
#                transportOpen innerPacket uplinkFrame configuration uapi (default: all)
#
# Each target runs over a scratch copy of its committed corpus, so a short run leaves
# Fuzz/Corpus untouched. One line per target: executions, exec/s, coverage (libFuzzer's cov:
# and ft:), corpus size, crashes. A crash (or leak, timeout, out-of-memory) keeps its input
# in Fuzz/Crashes/TARGET/, prints how to reproduce it, and makes the script exit 1.
# A long run: scripts/fuzz.sh --seconds 3600 --jobs 2
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

all_targets=(messages handshakeInitiation handshakeResponse handshakeCookie transportOpen
             innerPacket uplinkFrame configuration uapi)
seconds=20
jobs=1
merge=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=${2:?--seconds needs a number}; shift 2 ;;
    --jobs) jobs=${2:?--jobs needs a number}; shift 2 ;;
    --merge) merge=1; shift ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    *)
      if [[ " ${all_targets[*]} " != *" $1 "* ]]; then
        echo "fuzz.sh: unknown target $1 (targets: ${all_targets[*]})" >&2; exit 2
      fi
      targets+=("$1"); shift ;;
  esac
done
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds must be a positive integer" >&2; exit 2; }
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --jobs must be a positive integer" >&2; exit 2; }
[ ${#targets[@]} -gt 0 ] || targets=("${all_targets[@]}")

scripts/install-deps.sh

# SwiftPM passes --sanitize values to swiftc as separate -sanitize= flags, and swiftc keeps
# only the last one: half the modules would get coverage without ASan, the other half ASan
# without coverage (and the fuzzer would see only the entry point). --sanitize fuzzer makes
# SwiftPM link the executables with libFuzzer's main; -Xswiftc -sanitize=fuzzer,address,
# which comes last on every swiftc command, instruments every Swift module with both. The C
# shims get -fsanitize=fuzzer from --sanitize and -fsanitize=address from -Xcc. The BPF
# objects are built by the build plugin's own clang -target bpf command, which takes none of
# these flags (nothing to instrument there: they run in the kernel).
build_flags=(-c release --sanitize fuzzer -Xswiftc -sanitize=fuzzer,address -Xcc -fsanitize=address)
echo "fuzz.sh: building the fuzz targets (swift build ${build_flags[*]})"
(cd Fuzz && swift build "${build_flags[@]}")
bin_dir=$(cd Fuzz && swift build "${build_flags[@]}" --show-bin-path)

scratch=$(mktemp -d "${TMPDIR:-/tmp}/xdpwg-fuzz.$$.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# Dictionary and hashing seeds fixed: a run depends on its inputs only.
export SWIFT_DETERMINISTIC_HASHING=1
# libFuzzer reports a crash with its stack; Swift's own backtracer, run inside the crashing
# process, reads memory that AddressSanitizer then reports as a second, unrelated overflow.
export SWIFT_BACKTRACE=enable=no

failed=()
summary=()
for target in "${targets[@]}"; do
  exe="$bin_dir/Fuzz${target^}"
  corpus="$scratch/$target"
  crashes="$root/Fuzz/Crashes/$target"
  mkdir -p "$corpus" "$crashes"
  cp Fuzz/Corpus/"$target"/* "$corpus"/ 2>/dev/null || true
  log="$scratch/$target.log"
  before=$(ls "$crashes" | wc -l)
  echo "fuzz.sh: $target for ${seconds}s ($jobs job(s))"
  args=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=4096
        -artifact_prefix="$crashes/")
  [ "$jobs" -gt 1 ] && args+=(-fork="$jobs")
  status=0
  "$exe" "${args[@]}" "$corpus" >"$log" 2>&1 || status=$?
  after=$(ls "$crashes" | wc -l)

  # The last status line: "#N ... cov: C ft: F corp: K/SIZE ..." (fork mode: "corp: K").
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -1 || true)
  execs=$(grep -oE '^stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  [ -n "$execs" ] || execs=$(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
  rate=$(grep -oE '^stat::average_exec_per_sec: *[0-9]+' "$log" | grep -oE '[0-9]+$' || true)
  [ -n "$rate" ] || rate=$(( ${execs:-0} / seconds ))
  cov=$(grep -oE 'cov: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo "?")
  ft=$(grep -oE 'ft: [0-9]+' <<<"$last" | grep -oE '[0-9]+' || echo "?")
  files=$(ls "$corpus" | wc -l)
  bytes=$(du -sb "$corpus" | cut -f1)
  new_crashes=$((after - before))
  line=$(printf '%-20s %10s execs %8s exec/s  cov %6s  ft %6s  corpus %5s files %8s B  crashes %s' \
         "$target" "${execs:-?}" "$rate" "$cov" "$ft" "$files" "$bytes" "$new_crashes")
  summary+=("$line")
  echo "$line"

  if [ "$status" -ne 0 ] || [ "$new_crashes" -gt 0 ]; then
    failed+=("$target")
    grep -E 'ERROR: |fuzz finding|Fatal error|SUMMARY' "$log" | head -5 || true
    cp "$log" "$crashes/last-run.log"
    for input in $(ls -t "$crashes" | grep -vE '^last-run\.log$' | head -"$((new_crashes > 0 ? new_crashes : 1))"); do
      echo "  kept: Fuzz/Crashes/$target/$input"
      echo "  reproduce: SWIFT_BACKTRACE=enable=no $exe Fuzz/Crashes/$target/$input"
      echo "  then fix it, and: mkdir -p Fuzz/Regressions/$target && cp Fuzz/Crashes/$target/$input Fuzz/Regressions/$target/"
    done
    echo "  log: Fuzz/Crashes/$target/last-run.log"
  fi

  if [ "$merge" -eq 1 ]; then
    count=$(ls Fuzz/Corpus/"$target" | wc -l)
    "$exe" -merge=1 -timeout=10 -rss_limit_mb=4096 Fuzz/Corpus/"$target" "$corpus" >"$scratch/$target.merge.log" 2>&1 \
      || { echo "fuzz.sh: merging $target failed (see below)" >&2; tail -5 "$scratch/$target.merge.log" >&2; failed+=("$target"); }
    echo "  merged: $(( $(ls Fuzz/Corpus/"$target" | wc -l) - count )) new inputs into Fuzz/Corpus/$target"
  fi
  rmdir "$crashes" 2>/dev/null || true
done

echo
echo "fuzz.sh summary (${seconds}s per target, $jobs job(s)):"
printf '  %s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: FAILED: ${failed[*]}" >&2
  exit 1
fi
