#!/usr/bin/env bash
# The second shipped architecture (vitlens_widgets/demo/demo_vit_12blocks.safetensors): 12 blocks, width 96, 3 heads.
# A shorter regime than the demo's (1,000 steps of batch 64 on 30,000 images, fp32, 1 thread), sized to ~45 minutes
# on a shared 2-core machine. Learning curve: training/logs/deep12.log.jsonl (stdout: training/logs/deep12.out).
# A first attempt (2,000 steps of batch 64 on 60,000 images) was stopped at step 500 when the shared machine slowed
# to ~5 s per step: training/logs/deep12_attempt1.*.
# (The recorded run wrote --out training/logs/deep12_vit.safetensors, copied to the path below.)
set -euo pipefail
OMP_NUM_THREADS=1 python -m vitlens_widgets.demo.train --depth 12 --width 96 --heads 3 --threads 1 \
  --steps 1000 --warmup 100 --lr 2e-3 --batch-size 64 --train-images 30000 --val-images 500 --eval-every 100 \
  --no-bf16 --out vitlens_widgets/demo/demo_vit_12blocks.safetensors --log training/logs/deep12.log.jsonl
