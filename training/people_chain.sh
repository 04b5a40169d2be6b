#!/bin/sh
# The people model (runs 9 -> 9b -> 10 -> 10b -> 10c -> 13c of training/README.md): six training commands, each
# continuing the checkpoint of the one before. About 2 hours 15 minutes of running on a 2-core machine (the README's
# budget paragraph).
#
#     sh training/people_chain.sh WORKDIR
#
# The shipped checkpoint is run 13c's last snapshot, WORKDIR/run13c-stage2-step1500 (run 13c starts from run 10c's
# snapshot at stage-2 step 1500; training/README.md says how both were chosen). Each step is deterministic for its seed
# and thread count (2, train.py's default), as every training run here; the chain as a whole has not been re-run.
set -e
W=${1:?usage: sh training/people_chain.sh WORKDIR}
mkdir -p "$W"
# run 9: a tower trained with small shifts, stage 2 with the language-routing loss from its start
python -m training.train --recipe people3 --shift 6 --language-routing 0.1 --out "$W/run9"
# run 9b: 1500 more stage-2 steps on a new pool (multiple choice forms)
python -m training.train --recipe people3 --shift 6 --language-routing 0.1 --init "$W/run9" --seed 1 \
    --tower-steps 0 --stage1-steps 0 --stage2-steps 1500 --stage2-restart 0 --lr 1e-3 --out "$W/run9b"
# run 10: stage 0 continued 6000 steps on more ways of drawing each shape, then 1500 stage-2 steps
python -m training.train --recipe people3 --shift 6 --language-routing 0.1 --variety --init "$W/run9b" --seed 3 \
    --tower-steps 6000 --tower-lr 1e-3 --stage1-steps 0 --stage2-steps 1500 --stage2-restart 0 --lr 1e-3 \
    --out "$W/run10"
# run 10b: stage 0 continued 5000 steps with 30 % clearly wide or tall pictures (the tower only)
python -m training.train --recipe people3 --shift 6 --language-routing 0.1 --variety --wide 0.3 --init "$W/run10" \
    --seed 4 --tower-steps 5000 --tower-lr 1e-3 --stage1-steps 0 --stage2-steps 0 --stage2-restart 0 --lr 1e-3 \
    --out "$W/run10b"
# run 10c: 2000 stage-2 steps on the new tower with the extra wordings, a snapshot every 500
python -m training.train --recipe people3 --shift 6 --language-routing 0.1 --variety --wide 0.3 --extra-phrasings \
    --init "$W/run10b" --seed 5 --tower-steps 0 --stage1-steps 0 --stage2-steps 2000 --stage2-restart 0 --lr 1e-3 \
    --save-every 500 --out "$W/run10c"
# run 13c: 1500 stage-2 steps more with the English wording grammar, a snapshot every 500
python -m training.train --recipe people3 --shift 6 --language-routing 0.1 --variety --wide 0.3 --extra-phrasings \
    --grammar-phrasings --init "$W/run10c-stage2-step1500" --seed 14 --tower-steps 0 --stage1-steps 0 \
    --stage2-steps 1500 --stage2-restart 0 --lr 5e-4 --stage2-lr 5e-4 --save-every 500 --out "$W/run13c"
