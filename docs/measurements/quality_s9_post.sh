# Session 9 post-hook: decoding checks on the call's trained models. R = the results folder; NAME, DATA, LP.
set -u
run=$R/$NAME/runs/gate-s1
D=.carry/q6/$DATA
echo "== gate-s1 no_cuda_graphs"; date +%T
python3 -m fairseq_resmlp_tools.evaluate $run/checkpoint_avg3.pt --data $D --split valid --beam 4 --lenpen $LP --max-tokens 4000 --force --output $R/post_gate_nographs.json --generate-args --model-overrides "{'no_cuda_graphs': True}" 2>&1 | tail -3
python3 - "$R" "$NAME" "$LP" <<'PY'
import json, sys
R, name, lp = sys.argv[1:]
a = json.load(open(f"{R}/post_gate_nographs.json"))["metrics"]["sacrebleu"]["detail"]
b = json.load(open(f"{R}/{name}/runs/gate-s1/eval/valid_avg.lenpen{lp}.json"))["metrics"]["sacrebleu"]["detail"]
print("no graphs:", a); print("graphs:   ", b)
ha = open(f"{R}/post_gate_nographs.hyp").read().splitlines()
hb = open(f"{R}/{name}/runs/gate-s1/eval/valid_avg.hyp").read().splitlines()
print("hypotheses that differ:", sum(x != y for x, y in zip(ha, hb)), "of", len(hb), len(ha))
PY
date +%T
