#!/usr/bin/env bash
# Regenerates every measured table of the README from the code at this commit, into out/readme/
# (one text file per table, each beginning with the command that made it). About 35 minutes on
# a 2-core machine; needs ../shared/data/clean (SHARED=... to point elsewhere) and `make setup`.
#
#   bash scripts/readme_numbers.sh            # everything
#   bash scripts/readme_numbers.sh demo bench # only some: demo bench perception tools throughput kernels serve
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
SHARED=${SHARED:-../shared/data/clean}
OUT=${OUT:-out/readme}
mkdir -p "$OUT"
what=("$@")
[ ${#what[@]} -eq 0 ] && what=(demo bench perception tools throughput kernels serve)

run() {  # run FILE CMD...: the command line, then its output (stdout and stderr), into FILE
  local file=$1; shift
  echo "+ $*" | tee "$file"
  "$@" >>"$file" 2>&1
}

degrade() {  # degrade OUT_DIR ARGS...: build a benchmark folder once (kept between runs)
  local dir=$1; shift
  [ -f "$dir/manifest.json" ] || $PY -m agentir degrade "$SHARED/CBSD68" "$dir" --split held-out --seed 0 "$@" -q
}

for w in "${what[@]}"; do
  case $w in
    demo) run "$OUT/demo.txt" make demo ;;
    bench)
      degrade "$OUT/bench_heldout" --per-combo 12
      run "$OUT/bench.txt" $PY -m agentir bench "$OUT/bench_heldout" --workers 2 \
        --policies input,default,paper,rules,random,fixed,no-reflection,no-rollback,allinone,random-gt ;;
    perception)
      degrade "$OUT/perc_mixed" --per-combo 34
      degrade "$OUT/perc_levels" --per-combo 34 --levels low,medium,high,very_high
      run "$OUT/perception.txt" $PY -m agentir bench perception "$OUT/perc_mixed" "$OUT/perc_levels" --clean-root "$SHARED" -q ;;
    tools)
      degrade "$OUT/singles" --per-combo 4 --levels low,medium,high,very_high
      run "$OUT/tools.txt" $PY -m agentir bench tools "$OUT/singles" ;;
    throughput)
      : >"$OUT/throughput.txt"
      for args in "--tool bench_cnn --size 64x64" "--tool bench_cnn --size 128x128" "--tool bench_cnn --size 256x256" "--tool dct_denoise --size 256x256"; do
        # shellcheck disable=SC2086
        run "$OUT/throughput.part" $PY -m agentir bench throughput --jobs 16 --compare --rounds 3 $args
        cat "$OUT/throughput.part" >>"$OUT/throughput.txt"
      done
      rm -f "$OUT/throughput.part" ;;
    kernels) run "$OUT/kernels.txt" $PY -m agentir bench kernels --sizes 540x960 1080x1920 --repeats 10 ;;
    serve)
      : >"$OUT/serve.txt"
      for args in "--clients 4 --jobs 32 --transport http" "--clients 4 --jobs 32 --transport ws" "--clients 1 --jobs 16 --transport http" "--clients 16 --jobs 64 --transport ws"; do
        # shellcheck disable=SC2086
        run "$OUT/serve.part" $PY -m agentir bench serve $args
        cat "$OUT/serve.part" >>"$OUT/serve.txt"
      done
      rm -f "$OUT/serve.part" ;;
    *) echo "unknown part $w (demo bench perception tools throughput kernels serve)" >&2; exit 2 ;;
  esac
done
echo "wrote $OUT/"
