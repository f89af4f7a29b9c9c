#!/usr/bin/env bash
# The study in compare-gsm8k-smollm2.md, end to end, on CPU: GSM8K (the copy in ../shared/data, MIT licence) and
# the embedded SmolLM2-135M. Every step is cached in the store: a killed run resumes, a re-run is free.
#   docs/studies/compare-gsm8k-smollm2.sh [STORE] [DATA]
set -euo pipefail
STORE=${1:-study-store}
DATA=${2:-../shared/data/gsm8k}
C="curate --store $STORE"
RUNS="--model smollm2-135m --epochs 2 --lr 5e-5 --max-len 512 --batch-size 4"

$C import "$DATA/train.jsonl" --name gsm8k-train
$C import "$DATA/test.jsonl" --name gsm8k-test
$C select gsm8k-train --method random --budget 200 --seed 0 --name pool          # every arm selects from it
$C select gsm8k-test --method random --budget 40 --seed 0 --name heldout         # scored after every run

# 1. a row budget: 16 rows per arm, 3 seeds
$C compare pool --eval heldout --arms fisher,random,random-tokens,longest,base --budget 16 --seeds 3 $RUNS \
    --name cmp-rows16
# 2. a token budget: 2,048 trained tokens per arm, 3 seeds (random is the token-matched control here)
$C compare pool --eval heldout --arms fisher,random,longest,base --budget-tokens 2048 --seeds 3 $RUNS \
    --name cmp-tokens2k
# 3. token-clean at a token budget (its natural one), one seed, on a 48-row pool: its kept tokens spread over
#    every row of the pool (3 to 25 of the top 8% in each of the 200 rows above), so each of its runs trains on
#    the whole pool. Its reference model is fine-tuned on 64 warm-up rows that share nothing with the pool.
$C select gsm8k-train --method decontam --against pool --name train-minus-pool
$C select train-minus-pool --method random --budget 64 --seed 1 --name warmup
$C select pool --method random --budget 48 --seed 2 --name pool48
$C compare pool48 --eval heldout --arms token-clean,random,random-tokens,base --budget-tokens 2048 --seeds 1 $RUNS \
    --set token-clean.reference-from=warmup --set token-clean.ref-epochs=2 --set token-clean.ref-lr=5e-5 \
    --set token-clean.ref-batch-size=4 --name cmp-tc48
# 4. RL: a difficulty band against random prompts, the same GRPO steps, held-out reward (sample-math: graded
#    arithmetic word problems; see the study for why not GSM8K)
$C sample sample-math --n 48 --seed 0 --name math-pool
$C sample sample-math --n 24 --seed 1 --name math-heldout
$C compare math-pool --trainer grpo --reward math --eval math-heldout --arms difficulty,random,base --budget 8 \
    --seeds 2 --steps 4 --group 4 --batch-size 4 --lr 1e-5 --max-new-tokens 96 --model smollm2-135m \
    --set difficulty.n=4 --set difficulty.max-tokens=96 --set difficulty.score=learnability --name cmp-rl
