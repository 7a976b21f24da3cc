#!/usr/bin/env bash
# Every benchmark behind RESULTS.md's tables, with its arguments, one after another (`make bench-all`).
# Run it after retraining a model (docs/training.md, "Retraining"); on 2 CPU cores it takes hours, so
# start it with nohup. Each benchmark writes outputs/bench/NAME.log (and NAME.json where it can); the
# summary at the end gives each one's exit status and minutes.
#
#   benchmarks/all.sh                      # all of them
#   benchmarks/all.sh caption_bits fuzz    # only these (names as in the list below)
set -u
PY=${PY:-.venv/bin/python}
OUT=${BENCH_OUT:-outputs/bench}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=${HF_HUB_OFFLINE:-1}

# name | command (the quality and caption figures first: the speed ones want an idle machine and come last)
BENCHMARKS=(
  "lic_vs_webp|benchmarks/lic_vs_webp.py --scenes 100 --out $OUT/lic_vs_webp"
  "plain_texture|benchmarks/plain_texture.py --scenes 100 --semantic --json $OUT/plain_texture.json"
  "finetune_compare|benchmarks/finetune_compare.py --scenes 200 --json $OUT/finetune_compare.json"
  "caption_quality_val|benchmarks/caption_quality.py --json $OUT/caption_quality_val.json"
  "caption_quality_clip_alone|benchmarks/caption_quality.py --rank-lm-weight 0 --scenes 0 --clip-scenes 200 --select-scenes 1000 --beams 2 4 8 --rate-aware-beams 4 8 --json $OUT/caption_quality_clip_alone.json"
  "caption_quality_test|benchmarks/caption_quality.py --scenes 0 --clip-scenes 0 --select-scenes 1000 --select-split test --beams 4 --rate-aware-beams 4 --json $OUT/caption_quality_test.json"
  "caption_bits|benchmarks/caption_bits.py --captions 200 --determinism 50 --json $OUT/caption_bits.json"
  "referee_accuracy|benchmarks/referee_accuracy.py --scenes 1000 --json $OUT/referee_accuracy.json"
  "pick_guidance|benchmarks/pick_guidance.py --scenes 200 --json $OUT/pick_guidance.json"
  "restore_acceptance|benchmarks/restore_acceptance.py --scenes 200 --json $OUT/restore_acceptance.json"
  "out_of_domain|benchmarks/out_of_domain.py --figures $OUT/out_of_domain --json $OUT/out_of_domain.json"
  "eval|-m itc_core.cli eval --dataset tiny --limit 200 --out $OUT/eval-tiny-200"
  "fuzz|benchmarks/fuzz_itc.py --json $OUT/fuzz.json"
  "bitstream_v2|benchmarks/bitstream_v2.py --scenes 100 --timed 20 --json $OUT/bitstream_v2.json"
  "restore_speed|benchmarks/restore_speed.py"
  "cli_latency|benchmarks/cli_latency.py --scenes 100 --single-calls 20 --threads 1 --json $OUT/cli_latency.json"
)

known=" "
for entry in "${BENCHMARKS[@]}"; do known+="${entry%%|*} "; done
for name in "$@"; do
  [[ $known == *" $name "* ]] || { echo "benchmarks/all.sh: unknown benchmark '$name' (known:$known)" >&2; exit 2; }
done

summary=()
failed=0
for entry in "${BENCHMARKS[@]}"; do
  name=${entry%%|*}
  command=${entry#*|}
  if (($#)) && [[ " $* " != *" $name "* ]]; then continue; fi
  echo "== $name: $PY $command  (log: $OUT/$name.log)"
  start=$(date +%s)
  # shellcheck disable=SC2086  # the command's words are meant to split
  $PY $command > "$OUT/$name.log" 2>&1
  status=$?
  minutes=$(awk -v s="$(( $(date +%s) - start ))" 'BEGIN { printf "%.1f", s / 60 }')
  ((status)) && failed=1
  summary+=("$(printf '%-22s exit %-3s %6s min' "$name" "$status" "$minutes")")
  tail -n 3 "$OUT/$name.log"
done
echo "== summary (logs in $OUT/)"
printf '%s\n' "${summary[@]}"
exit $failed
