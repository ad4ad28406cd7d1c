#!/usr/bin/env bash
# WSD (warmup-stable-decay, 20% 1-sqrt cooldown) against cosine at the same N and D: three byte-level GPT widths
# on the builtin corpus, two seeds each, then report.py writes the table and plot into README.md and plots/.
# 30 minutes on the 2-core CPU shared with other jobs (nice 10, load 20-30); re-running skips finished runs and
# resumes an interrupted one. See README.md.
#
#     bash experiments/wsd/run.sh [WORKDIR]        (default runs/wsd)
set -euo pipefail
cd "$(dirname "$0")/../.."

WORKDIR=${1:-runs/wsd}
PYTHON=${PYTHON:-.venv/bin/python}
STEPS=800

start=$(date +%s)
for width in 32 64 128; do
  for seed in 0 1; do
    for schedule in cosine wsd; do
      nice -n 10 "$PYTHON" -m bmjax.cli.train --config configs/gpt/tiny.py \
        --workdir "$WORKDIR/d$width-$schedule-seed$seed" \
        --config.model.d_model=$width --config.model.num_layers=2 --config.model.num_heads=4 \
        --config.data.seq_len=64 --config.data.batch_size=16 \
        --config.optim.schedule=$schedule --config.optim.cooldown_fraction=0.2 --config.optim.cooldown_shape=sqrt \
        --config.optim.lr=2e-3 --config.optim.min_lr=2e-4 --config.optim.warmup_steps=40 \
        --config.train.steps=$STEPS --config.train.seed=$seed --config.train.log_every=25 \
        --config.train.eval_every=$STEPS --config.train.eval_steps=0 --config.train.ckpt_every=$STEPS \
        --config.train.sample_tokens=0 --config.train.progress=False > /dev/null
    done
  done
done
echo "runs wall: $(( $(date +%s) - start )) s"
"$PYTHON" -m experiments.wsd.report "$WORKDIR"
