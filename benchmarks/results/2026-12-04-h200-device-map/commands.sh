#!/usr/bin/env bash
# Session 33, second run: rebuild; the CUDA tests that failed or did not run; the 8B split; one
# process vs two ranks sharing the GPU. /tmp/s34.
set -uo pipefail
R=/tmp/s34
W=/tmp/mb
mkdir -p $R $W
exec >> $R/run.log 2>&1
build=build-gpu
pcre=$(ldconfig -p | awk '/libpcre2-8\.so\.0 /{print $NF; exit}')
torch_prefix=$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')
t0=$(date +%s)
stamp() { echo "[$(( $(date +%s) - t0 )) s] $*"; }
stamp start
mkdir -p "$HOME/.cache/mechlens/tokenizers" && cp -rn .deps/tokenizers/. "$HOME/.cache/mechlens/tokenizers/"
[ -f $W/llama3-8b/config.json ] || (PYTHONUNBUFFERED=1 python3 benchmarks/make_checkpoints.py --out $W --tokenizers .deps/tokenizers --only llama3-8b > $R/ckpt.log 2>&1; echo "ckpt rc=$?" >> $R/ckpt.log) &
ck=$!
cmake -S . -B $build -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_PREFIX_PATH=$torch_prefix" "-DMECHLENS_EXTRA_INCLUDE=$PWD/.deps/include" -DMECHLENS_FMT_HEADER_ONLY=ON "-DMECHLENS_PCRE2_LIBRARY=$pcre" > $R/configure.log 2>&1 || { tail -30 $R/configure.log; echo FAILED; exit 1; }
cmake --build $build -j 16 > $R/build.log 2>&1 || { grep -B2 -A12 -m 5 'error' $R/build.log; echo FAILED; exit 1; }
stamp built
(cd $build && MECHLENS_TEST_DEVICE=cuda ctest --output-on-failure --timeout 900 -j 3 \
   -R '^(models|models_cuda|cli|tokenizer_vocabularies)$') > $R/ctest-cuda.log 2>&1
stamp "ctest cuda rc=$?: $(grep -E 'tests passed|tests failed' $R/ctest-cuda.log)"
grep -E "Test +#" $R/ctest-cuda.log | tail -8
wait $ck
M=$W/llama3-8b
cat $M/*.safetensors > /dev/null
stamp "bench_device_map start"
$build/benchmarks/bench_device_map --model $M --map 0:16=cuda:0,16:32=cpu --repeats 2 > $R/device_map.txt 2>&1; stamp "bench_device_map rc=$?"
tail -2 $R/device_map.txt
common=(--model $M --dtype bfloat16 --progress off --n-pairs 100)
rm -rf $W/runs
s=$(date +%s.%N); $build/examples/dec7/dec7_kv_transfer "${common[@]}" --device cuda --out $W/runs/one > $R/one.log 2>&1; rc=$?; e=$(date +%s.%N)
stamp "one process rc=$rc $(awk "BEGIN{print $e - $s}") s"
s=$(date +%s.%N); torchrun --nproc-per-node 2 --no-python $build/examples/dec7/dec7_kv_transfer "${common[@]}" --device cuda --out $W/runs/two > $R/two.log 2>&1; rc=$?; e=$(date +%s.%N)
stamp "two ranks on one GPU rc=$rc $(awk "BEGIN{print $e - $s}") s"
for f in generations.jsonl phase1/summary.json phase1/table.txt; do
  cmp $W/runs/one/$f $W/runs/two/$f && echo "identical: $f ($(wc -c < $W/runs/one/$f) bytes)"
done
ls $W/runs/two
wc -l $W/runs/one/generations.jsonl $W/runs/two/generations.rank-*.jsonl
head -c 600 $W/runs/two/generations.jsonl | tr ',' '\n' | grep -A8 made_with | head -8
cp $W/runs/one/phase1/table.txt $R/phase1_table.txt
stamp DONE
