#!/usr/bin/env bash
# Runs every cargo-fuzz target of fuzz/ for SECONDS each (default 30), starting from its
# seeds (fuzz/seeds/<target>/, copied to a temp corpus so nothing is written into the
# repo), two targets at a time (FUZZ_JOBS). Fails when a target crashes, panics, leaks
# past libFuzzer's limits or spends more than 10 s on one input; the input that did it is
# kept in fuzz/artifacts/<target>/ (git-ignored) with the command to replay it.
#
#   bash scripts/fuzz.sh [SECONDS]
#
# Installs cargo-fuzz when missing; builds with the stable toolchain (RUSTC_BOOTSTRAP=1
# lets cargo-fuzz use the nightly-only sanitizer flags). Called by scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

secs="${1:-30}"
jobs="${FUZZ_JOBS:-2}"
case "$secs:$jobs" in
  *[!0-9:]* | :* | *: | *:0) echo "usage: $0 [SECONDS] (FUZZ_JOBS=N>0: targets run at once)" >&2; exit 2 ;;
esac
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz"
  cargo install cargo-fuzz --locked
fi

cd fuzz
# cargo-fuzz has no --locked: check here that fuzz/Cargo.lock is current.
if ! cargo metadata --locked --format-version 1 >/dev/null; then
  echo "fuzz: fuzz/Cargo.lock is out of date (a workspace crate's dependencies changed):" >&2
  echo "  refresh it with (cd fuzz && cargo metadata --format-version 1 >/dev/null) and commit it" >&2
  exit 1
fi
t0=$SECONDS
cargo fuzz build
echo "fuzz: built in $((SECONDS - t0)) s"
bin_dir="target/$(rustc -vV | sed -n 's/^host: //p')/release"
mapfile -t targets < <(cargo fuzz list)

work="$(mktemp -d "${TMPDIR:-/tmp}/xsknet-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# Runs one target; its log and any crash input go to $work/<target>/.
run_one() {
  local t="$1" dir="$work/$1"
  mkdir -p "$dir/corpus"
  if [ -d "seeds/$t" ]; then cp -r "seeds/$t/." "$dir/corpus/"; fi
  "$bin_dir/$t" -max_total_time="$secs" -timeout=10 -artifact_prefix="$dir/" \
    "$dir/corpus" >"$dir/log" 2>&1
}

failed=()
report() {
  local t="$1" rc="$2" dir="$work/$1"
  if [ "$rc" = 0 ]; then
    echo "fuzz: $t ok ($(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$dir/log" || echo 'no summary'))"
    return
  fi
  failed+=("$t")
  echo "fuzz: $t FAILED (exit $rc):"
  grep -E -A3 'panicked at|ERROR: |SUMMARY: ' "$dir/log" | head -n 30 | sed 's/^/    /' || true
  echo "    ..."
  tail -n 6 "$dir/log" | sed 's/^/    /'
  local a
  for a in "$dir"/crash-* "$dir"/timeout-* "$dir"/oom-* "$dir"/leak-*; do
    [ -e "$a" ] || continue
    mkdir -p "artifacts/$t"
    cp "$a" "artifacts/$t/"
    echo "    input kept: fuzz/artifacts/$t/$(basename "$a")"
    echo "    replay: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run $t artifacts/$t/$(basename "$a"))"
  done
}

t0=$SECONDS
i=0
while [ "$i" -lt "${#targets[@]}" ]; do
  batch=("${targets[@]:i:jobs}")
  pids=()
  for t in "${batch[@]}"; do
    run_one "$t" &
    pids+=("$!")
  done
  for k in "${!batch[@]}"; do
    rc=0
    wait "${pids[k]}" || rc=$?
    report "${batch[k]}" "$rc"
  done
  i=$((i + jobs))
done
echo "fuzz: ${#targets[@]} targets x ${secs} s in $((SECONDS - t0)) s"

if [ "${#failed[@]}" -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]}"
  exit 1
fi
