#!/usr/bin/env bash
# Everything a session with a CUDA GPU checks and measures for issue 6, in one bounded call:
# the CUDA-only tests, the bench with a 10-agent population (as shipped, then with
# ddpg-adam's update eager), the
# CUDA-graph experiment, CLI runs on CUDA (resume bit-exactness, a population), the compile
# variants. ONLY="part ..." runs just those parts.
# Each part has its own time limit, so one hanging part cannot eat the others' time.
# On a machine without a package registry, bench/gpu_wheels.sh (run where pip works) makes
# the wheels to carry; install them there as that script says.
#
#   bench/gpu_session.sh OUT_DIR        # logs and results under OUT_DIR; the parts that ran on
#                                       # an H200 took 12-241 s each, all together more than one
#                                       # 10-minute device call: split them with ONLY
#   ONLY="cuda-tests bench-td3 cli-td3-graph bench-vadam-graph cli-vadam-graph" \
#       bench/gpu_session.sh OUT_DIR   # the parts that have not run on a GPU yet (~10 min)
set -u
out=${1:?usage: bench/gpu_session.sh OUT_DIR}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MUJOCO_GL=${MUJOCO_GL:-egl}  # MUJOCO_GL=disable where EGL is missing
py=${PYTHON:-python3}
device=${DEVICE:-cuda}  # DEVICE=cpu tries the script out on a machine without a GPU
[ "$device" = cuda ] && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv
$py -c "import torch, gymnasium, mujoco, stable_baselines3 as s; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(), '| gymnasium', gymnasium.__version__, '| mujoco', mujoco.__version__, '| sb3', s.__version__, '| cpus', __import__('os').cpu_count())"

part() {  # part NAME LIMIT_S COMMAND...: runs it, keeps its log, prints its tail
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    [[ " ${ONLY:-$name} " == *" $name "* ]] || return 0  # ONLY="bench cli": just those parts
    timeout "$limit" "$@" >"$out/$name.log" 2>&1
    echo "== $name: exit $? after $((SECONDS - start)) s"
    tail -n "${TAIL:-12}" "$out/$name.log"
}

cli_checks() {  # cli_checks AGENT [--set K=V ...]: a resumed run ends with the straight
    # run's weights bit for bit; a population of that agent runs
    local d agent=$1
    shift
    d=$(mktemp -d)
    local sets=(--set learning_starts=1000 --set eval_every=0 --set eval_episodes=1 "$@")
    local where=(--agent "$agent" --device "$device" --log-dir "$d" --no-progress)
    local common=("${where[@]}" --seed 0 "${sets[@]}")
    $py -P -m vadam_rl.commands.cli train "${common[@]}" --total-steps 3000 --run-name straight || return 1
    $py -P -m vadam_rl.commands.cli train "${common[@]}" --total-steps 2000 --run-name split || return 1
    $py -P -m vadam_rl.commands.cli train --resume "$d/split" --total-steps 3000 --no-progress || return 1
    $py - "$d/straight/checkpoint.pt" "$d/split/checkpoint.pt" <<'PY' || return 1
import sys, torch
a, b = (torch.load(p, map_location="cpu", weights_only=False) for p in sys.argv[1:])
def leaves(tree, path=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from leaves(v, f"{path}/{k}")
    elif isinstance(tree, (list, tuple)):
        for i, v in enumerate(tree):
            yield from leaves(v, f"{path}/{i}")
    else:
        yield path, tree
la, lb = dict(leaves(a["agent"])), dict(leaves(b["agent"]))
assert la.keys() == lb.keys()
bad = [k for k in la if isinstance(la[k], torch.Tensor) and not torch.equal(la[k], lb[k])]
print(f"agent state: {len(la)} leaves, {len(bad)} differ after a resume: {bad[:5]}")
assert a["progress"]["step"] == b["progress"]["step"] == 3000 and not bad
PY
    $py -P -m vadam_rl.commands.cli train "${where[@]}" --seeds 0-1 "${sets[@]}" --total-steps 2000 || return 1
    ls "$d"
}
export -f cli_checks
export py device

# In order of what matters most if time runs out (the bench keeps finished parts in parts.json).
part cuda-tests 90 $py -P -m pytest -q -p no:cacheprovider -m cuda tests/test_buffer.py tests/test_sb3_bridge.py tests/test_cuda_graph.py
# td3 with its two phases as CUDA graphs, one agent and a population of 10, against SB3's TD3
# (LeanRL publishes 936 steps/s on an H100 with compile and CUDA graphs, CleanRL 272).
TAIL=20 part bench-td3 270 $py bench/run.py --device "$device" --short --population 10 --no-processes --presets td3 td3-vadam --out "$out/bench-td3"
part cli-td3-graph 80 bash -c "cli_checks td3"
TAIL=30 part bench 270 $py bench/run.py --device "$device" --short --population 10 --out "$out/bench"
TAIL=20 part bench-eager 200 $py bench/run.py --device "$device" --short --population 10 --no-processes --no-cuda-graph --out "$out/bench-eager"
part graph 90 $py bench/cuda_graph_update.py
TAIL=20 part bench-vadam-graph 200 $py bench/run.py --device "$device" --short --population 10 --no-processes --set cuda_graph=true --out "$out/bench-vadam-graph"
TAIL=20 part bench-pop-async 200 $py bench/run.py --device "$device" --short --population 10 --no-processes --population-set async_envs=true --out "$out/bench-pop-async"
part cli 100 bash -c "cli_checks ddpg-vadam"
part cli-graph 80 bash -c "cli_checks ddpg-adam --set cuda_graph=true"
part cli-vadam-graph 80 bash -c "cli_checks ddpg-vadam --set cuda_graph=true"
part compile 80 $py bench/compile_update.py --device "$device" --updates 500
