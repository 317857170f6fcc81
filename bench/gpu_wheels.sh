#!/usr/bin/env bash
# Wheels for a GPU machine that has Python 3.12 and torch but no package registry: every
# runtime dependency the image lacks, plus vadam-rl itself. Install them there with
#   pip install --no-index --no-deps --target /tmp/site DIR/*.whl && export PYTHONPATH=/tmp/site
# and run with MUJOCO_GL=disable where the image has no EGL (seen on the H200 image).
#
#   bench/gpu_wheels.sh DIR        # default DIR: .whl (git-excluded in this checkout)
set -euo pipefail
dir=${1:-.whl}
mkdir -p "$dir"
py=${PYTHON:-python3}
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
    platforms+=(--platform "$p")
done
"$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${platforms[@]}" -d "$dir" \
    gymnasium==1.4.0 farama-notifications==0.0.6 mujoco==4.0.0 mujoco-core==4.0.0 \
    mujoco-studio==4.0.0 glfw==2.11.0 pyopengl==3.1.10 stable-baselines3==2.9.2 tyro==1.0.17 \
    docstring-parser==0.18.0 typeguard==4.6.1
rm -f "$dir"/vadam_rl-*.whl
"$py" -m pip wheel -q --no-deps . -w "$dir"
ls "$dir"
