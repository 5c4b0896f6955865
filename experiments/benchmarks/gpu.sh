#!/usr/bin/env bash
# Every benchmark workload on a GPU in one command, within a time budget.
#
#   experiments/benchmarks/gpu.sh --prepare     before the run, in the checkout the device tool
#                                               sends: copies the cat files from
#                                               ../shared/data/catvnoncat (or $CAT_SOURCE) into
#                                               .carry/ (ignored by git), which the run carries
#   experiments/benchmarks/gpu.sh [options] OUTDIR
#     --cpu          a dry run on the CPU (also chosen when nvidia-smi finds no GPU)
#     --quick        tiny sizes and few variants: the same steps, for the dry run's test
#     --budget S     seconds for the whole run (default 450); each phase gets at most what is
#                    left, and a phase that would get under 15 s is skipped
#     --phases LIST  a subset of check,w123,w4,w4-loops,w4-off,compile (default: all)
#
# Phases, in this order: check (gpu_check.py: float32/bfloat16 against float64), w123
# (run.py workloads 1-3), w4 (workload 4, XLA's default flags), w4-loops (workload 4's JAX
# variants with XLA command buffers taking over while loops and conditionals), w4-off (the
# same with no command buffers), compile (torch.compile in workload 1: minutes of compiling).
# Writes into OUTDIR: results.json, results.md (tables, checks, targets), gpu.log (all that
# was printed) and flags.txt (each phase's JAX/XLA settings). Installs nothing unless a
# module nnfun needs is missing; then it installs the wheels carried in .whl/. Exits 1 when
# a check fails or a phase fails or runs out of time.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
py=${PYTHON:-python3}
all_phases=check,w123,w4,w4-loops,w4-off,compile
cpu=0 quick=0 prepare=0 budget=450 phases=$all_phases out=
reserve=10 # seconds kept for the report

while [ $# -gt 0 ]; do
  case $1 in
    --prepare) prepare=1 ;;
    --cpu) cpu=1 ;;
    --quick) quick=1 ;;
    --budget) budget=${2-} && shift ;;
    --phases) phases=${2-} && shift ;;
    -h | --help) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0" && exit 0 ;;
    -*) echo "gpu.sh: unknown option $1 (see --help)" >&2 && exit 2 ;;
    *) out=$1 ;;
  esac
  shift
done
if ! [[ $budget =~ ^[0-9]+$ ]]; then
  echo "gpu.sh: --budget expects whole seconds, got '$budget'" >&2
  exit 2
fi
for name in ${phases//,/ }; do
  if [[ ",$all_phases," != *",$name,"* ]]; then
    echo "gpu.sh: --phases expects names from $all_phases, got '$name'" >&2
    exit 2
  fi
done

prepare() {
  local src=${CAT_SOURCE:-$root/../shared/data/catvnoncat} dst=$root/.carry/catvnoncat
  if [ ! -f "$src/train_catvnoncat.h5" ] || [ ! -f "$src/test_catvnoncat.h5" ]; then
    echo "gpu.sh --prepare: no cat files in $src (set CAT_SOURCE to their folder)" >&2
    return 1
  fi
  mkdir -p "$dst" && cp -f "$src/train_catvnoncat.h5" "$src/test_catvnoncat.h5" "$dst/" || return 1
  git -C "$root" check-ignore -q .carry/ || echo "warning: .carry/ is not ignored by git"
  echo "prepared $(du -sh "$root/.carry" | cut -f1) in $root/.carry: carry it (carry: [\".carry\"])"
}

# phase NAME LIMIT FLAGS COMMAND...: runs COMMAND with XLA_FLAGS=FLAGS for at most LIMIT
# seconds (less when the budget has less left) and records how it ended in phases.tsv.
phase() {
  local name=$1 limit=$2 flags=$3 status t0=$SECONDS rc
  shift 3
  if [[ ",$phases," != *",$name,"* ]]; then
    status="not asked for"
  else
    local left=$((budget - (SECONDS - start) - reserve))
    if [ "$left" -lt 15 ]; then
      status="skipped: out of time"
    else
      [ "$limit" -gt "$left" ] && limit=$left
      echo "== $name: at most ${limit} s ($((SECONDS - start)) s used); XLA_FLAGS='$flags'"
      echo "$name: XLA_FLAGS='$flags' JAX_PLATFORMS=$JAX_PLATFORMS" >>"$parts/flags.txt"
      XLA_FLAGS=$flags timeout -k 5 "$limit" "$@"
      rc=$?
      case $rc in
        0) status=ok ;;
        124 | 137) status="timed out after ${limit} s" ;;
        *) status="failed (exit $rc)" ;;
      esac
    fi
  fi
  echo "== $name: $status"
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" $((SECONDS - t0)) "$flags" >>"$parts/phases.tsv"
}

run_all() {
  if [ $cpu = 0 ] && ! nvidia-smi -L >/dev/null 2>&1; then
    echo "nvidia-smi finds no GPU: a dry run on the CPU"
    cpu=1
  fi
  if [ $cpu = 1 ]; then
    export JAX_PLATFORMS=cpu
  else # a rerun on the same machine compiles nothing twice
    export JAX_PLATFORMS=cuda JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/nnfun-jax-cache}
  fi
  export PYTHONUNBUFFERED=1 PYTHONPATH=$root${PYTHONPATH:+:$PYTHONPATH}
  local need
  need=$("$py" "$here/gpu_env.py" missing) || return 1
  if [ -n "$need" ] && compgen -G "$root/.whl/*.whl" >/dev/null; then
    echo "missing: $need; installing the wheels in .whl/"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      --target /tmp/nnfun-site "$root"/.whl/*.whl && export PYTHONPATH=/tmp/nnfun-site:$PYTHONPATH
    need=$("$py" "$here/gpu_env.py" missing)
  fi
  if [ -n "$need" ]; then
    echo "missing modules: $need (carry their wheels in .whl/: see experiments/benchmarks/README.md)"
    return 1
  fi
  "$py" "$here/gpu_env.py" describe "$parts/env.json"
  [ $cpu = 0 ] && nvidia-smi
  echo "XLA_PYTHON_CLIENT_PREALLOCATE=${XLA_PYTHON_CLIENT_PREALLOCATE-} (unset: JAX takes 75% of the GPU at start)" >"$parts/flags.txt"

  local cat_dir=$root/.carry/catvnoncat base=${XLA_FLAGS:-}
  [ -f "$cat_dir/train_catvnoncat.h5" ] || cat_dir=$root/../shared/data/catvnoncat
  local run=("$py" "$here/run.py" --cat-dir "$cat_dir") check=("$py" "$here/gpu_check.py")
  local jax_w4="nnfun fit (autodiff);nnfun fit (manual);jax scan, whole run;jax jit step, Python loop"
  local w123=(--skip "torch.compile") w4=(--repeats 3 --loop-epochs 100) w4_jax=(--repeats 3 --only "$jax_w4")
  if [ $quick = 1 ]; then
    run+=(--quick) check+=(--quick)
    w123=(--only "nnfun fit (autodiff);jax scan")
    w4=(--regimes planar --only "jax scan, whole run;numpy loop" --loop-epochs 10)
    w4_jax=(--regimes planar --only "jax scan, whole run")
  fi
  local loops="${base:+$base }--xla_gpu_enable_command_buffer=+WHILE,+CONDITIONAL"
  local off="${base:+$base }--xla_gpu_enable_command_buffer="

  phase check 90 "$base" "${check[@]}" --cat-dir "$cat_dir" --out "$parts/check.json"
  phase w123 210 "$base" "${run[@]}" --workloads 1,2,3 "${w123[@]}" --out "$parts/w123.json"
  phase w4 150 "$base" "${run[@]}" --workloads 4 "${w4[@]}" --out "$parts/w4-default.json"
  phase w4-loops 75 "$loops" "${run[@]}" --workloads 4 "${w4_jax[@]}" --out "$parts/w4-loops.json"
  phase w4-off 75 "$off" "${run[@]}" --workloads 4 "${w4_jax[@]}" --out "$parts/w4-off.json"
  phase compile 120 "$base" "${run[@]}" --workloads 1 --only "torch.compile" --repeats 3 --out "$parts/compile.json"

  cp "$parts/flags.txt" "$out/flags.txt"
  "$py" "$here/gpu_report.py" "$parts" "$out"
  local rc=$?
  echo "gpu.sh: $((SECONDS - start)) s in all; results in $out"
  return $rc
}

if [ $prepare = 1 ]; then
  prepare
  exit
fi
if [ -z "$out" ]; then
  echo "usage: gpu.sh [--cpu] [--quick] [--budget S] [--phases LIST] OUTDIR | gpu.sh --prepare" >&2
  exit 2
fi
mkdir -p "$out" && out=$(cd "$out" && pwd) || exit 2
parts=$(mktemp -d)
trap 'rm -rf "$parts"' EXIT
start=$SECONDS
run_all 2>&1 | tee "$out/gpu.log"
exit "${PIPESTATUS[0]}"
