#!/usr/bin/env bash
# Training-speed call 3: fairseq's adam (FP16Optimizer) against the plugin's fused_adam (--memory-efficient-fp16),
# both models, fairseq-train, 32k dictionary, WMT-length sentences, fp16, --max-tokens 16384; then host profiles.
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl >/dev/null 2>&1
export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
N=.carry/news; R=$OUT; mkdir -p /tmp/logs; UPD=${UPD:-150}; UF=${UF:-1}
S=$N/newstest2012.en,$N/newstest2013.en,$N/newstest2014.en; T=$N/newstest2012.de,$N/newstest2013.de,$N/newstest2014.de
DICT=${DICT:-32000}; D=/tmp/d$DICT
[ -d $D/data-bin ] || python3 -m fairseq_resmlp_tools.bench.train_data --src $S --tgt $T --vocab 8000 --dict-size $DICT --repeat 8 --out $D > /tmp/data.log 2>&1 || tail -5 /tmp/data.log
(nvidia-smi --query-gpu=name --format=csv,noheader; python3 -c "import torch; print(torch.__version__)"; nproc) > $R/gpu.txt
BASE="$D/data-bin --user-dir fairseq_resmlp --task translation --share-all-embeddings --adam-betas (0.9,0.98) --lr 5e-4 --lr-scheduler inverse_sqrt --warmup-updates 100 --dropout 0.1 --criterion label_smoothed_cross_entropy --label-smoothing 0.1 --max-tokens 16384 --seed 1 --disable-validation --no-save --log-format json --log-interval 10 --num-workers 2 --fp16 --update-freq $UF"
ADAM="--optimizer adam"; FUSED="--optimizer fused_adam --memory-efficient-fp16"
# Launchers: stock fairseq-train; cuDNN attention off for the whole process (fairseq's Transformer too); the plugin's
# cross-attention with PyTorch's default backend choice (cuDNN on H100), as before this change.
cat > /tmp/launch_nocudnn.py <<'PY'
import sys, torch
torch.backends.cuda.enable_cudnn_sdp(False)
from fairseq_cli.train import cli_main
sys.argv = ["fairseq-train"] + sys.argv[1:]
cli_main()
PY
cat > /tmp/launch_cudnn.py <<'PY'
import contextlib, sys
from fairseq_cli.train import cli_main  # first: it configures logging
import fairseq_resmlp.modules.cross_attention as ca
ca.sdpa_backends = contextlib.nullcontext
sys.argv = ["fairseq-train"] + sys.argv[1:]
cli_main()
PY
cat > /tmp/launch_fs.py <<'PY'
import sys, torch, torch.multiprocessing as mp
mp.set_sharing_strategy("file_system")
if "nocudnn" in sys.argv[1]:
    torch.backends.cuda.enable_cudnn_sdp(False)
from fairseq_cli.train import cli_main
sys.argv = ["fairseq-train"] + sys.argv[2:]
cli_main()
PY
cat > /tmp/launch_prof_cudnn.py <<'PY'
import contextlib, sys
from fairseq_resmlp_tools.bench.profile_train import main
import fairseq_resmlp.modules.cross_attention as ca
ca.sdpa_backends = contextlib.nullcontext
sys.exit(main(sys.argv[1:]))
PY
cat > /tmp/launch_prof_nocudnn.py <<'PY'
import sys, torch
torch.backends.cuda.enable_cudnn_sdp(False)
from fairseq_resmlp_tools.bench.profile_train import main
sys.exit(main(sys.argv[1:]))
PY
train() { # name timeout arch extra...
  local name=$1 t=$2 arch=$3; shift 3; local t0=$(date +%s); local launch="fairseq-train"
  case $name in *nocudnn*) launch="python3 /tmp/launch_nocudnn.py";; *_cudnn) launch="python3 /tmp/launch_cudnn.py";; esac
  case $name in *_fs*) launch="python3 /tmp/launch_fs.py $name";; esac
  timeout $t $launch $BASE --arch $arch --max-update $UPD "$@" > /tmp/log_$name.txt 2>&1
  echo "uf${UF}_$name rc=$? wall=$(( $(date +%s) - t0 ))s" >> $R/runs.txt
  python3 .carry/stats.py "d${DICT}_uf${UF}_$name" /tmp/log_$name.txt >> $R/train.txt
  cp /tmp/log_$name.txt /tmp/logs/uf${UF}_$name.txt; tar czf $R/logs_uf$UF.tgz -C /tmp/logs .
}
host() { # name arch extra...
  local name=$1 arch=$2; shift 2
  timeout 200 python3 -m fairseq_resmlp_tools.bench.profile_train --host --wait 10 --active 20 --top 45 --out /tmp/h_$name -- $BASE --arch $arch --max-update 100 "$@" > /tmp/hlog_$name.txt 2>&1
  cp /tmp/h_$name/host_profile.txt $R/host_$name.txt 2>/dev/null || tail -20 /tmp/hlog_$name.txt > $R/host_$name.txt
}
for step in ${STEPS:-T_adam R6_adam R6_fused T_fused}; do
  case $step in
    T_adam) train T_adam 150 transformer_wmt_en_de $ADAM;;
    T_fused) train T_fused 150 transformer_wmt_en_de $FUSED;;
    T_adam_nocudnn) train T_adam_nocudnn 150 transformer_wmt_en_de $ADAM;;
    T_fused_nocudnn) train T_fused_nocudnn 150 transformer_wmt_en_de $FUSED;;
    R6_fused_cudnn) train R6_fused_cudnn 150 resmlp_6 $FUSED;;
    R12_fused_cudnn) train R12_fused_cudnn 150 resmlp_12 $FUSED;;
    R6_adam) train R6_adam 150 resmlp_6 $ADAM;;
    R6_fused) train R6_fused 150 resmlp_6 $FUSED;;
    R12_adam) train R12_adam 150 resmlp_12 $ADAM;;
    R12_fused) train R12_fused 150 resmlp_12 $FUSED;;
    R6_fused_compile) train R6_fused_compile 300 resmlp_6 $FUSED --compile-layers;;
    R12_fused_compile) train R12_fused_compile 300 resmlp_12 $FUSED --compile-layers;;
    R6_adam_cudnn) train R6_adam_cudnn 200 resmlp_6 $ADAM;;
    R6_fused_w0) train R6_fused_w0 150 resmlp_6 $FUSED --num-workers 0;;
    R6_fused_fs) train R6_fused_fs 150 resmlp_6 $FUSED;;
    R6_fused_compile_w0) train R6_fused_compile_w0 300 resmlp_6 $FUSED --compile-layers --num-workers 0;;
    R6_fused_compile_fs) train R6_fused_compile_fs 300 resmlp_6 $FUSED --compile-layers;;
    T_fused_nocudnn_w0) train T_fused_nocudnn_w0 150 transformer_wmt_en_de $FUSED --num-workers 0;;
    T_fused_fs_nocudnn) train T_fused_fs_nocudnn 150 transformer_wmt_en_de $FUSED;;
    R12_fused_fs) train R12_fused_fs 150 resmlp_12 $FUSED;;
    R6_chunk) train R6_chunk 150 resmlp_6 $FUSED --criterion label_smoothed_cross_entropy_chunked;;
    H_R6_fused) host R6_fused resmlp_6 $FUSED;;
    H_R6_adam) host R6_adam resmlp_6 $ADAM;;
    H_T_fused) host T_fused transformer_wmt_en_de $FUSED;;
    H_R6_compile) host R6_compile resmlp_6 $FUSED --compile-layers;;
    P_R6_fused) timeout 150 python3 -m fairseq_resmlp_tools.bench.profile_train --out /tmp/p_R6 -- $BASE --arch resmlp_6 --max-update 100 $FUSED > /tmp/plog.txt 2>&1; cp /tmp/p_R6/summary.md $R/kernel_profile_R6_fused.md || tail -20 /tmp/plog.txt > $R/kernel_profile_R6_fused.md;;
    P_R6_adam_cudnn) timeout 150 python3 /tmp/launch_prof_cudnn.py --out /tmp/p_R6c -- $BASE --arch resmlp_6 --max-update 100 $ADAM > /tmp/plogc.txt 2>&1; cp /tmp/p_R6c/summary.md $R/kernel_profile_R6_adam_cudnn.md || tail -20 /tmp/plogc.txt > $R/kernel_profile_R6_adam_cudnn.md;;
    P_T_fused_nocudnn) timeout 150 python3 /tmp/launch_prof_nocudnn.py --out /tmp/p_T -- $BASE --arch transformer_wmt_en_de --max-update 100 $FUSED > /tmp/plogT.txt 2>&1; cp /tmp/p_T/summary.md $R/kernel_profile_T_fused_nocudnn.md || tail -20 /tmp/plogT.txt > $R/kernel_profile_T_fused_nocudnn.md;;
  esac
done
cat $R/train.txt $R/runs.txt
