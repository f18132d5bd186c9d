#!/usr/bin/env bash
# Collect the wheels an offline CUDA machine lacks, so the GPU acceptance run can install without a network.
#
#   bash benchmarks/gpu_wheels.sh                       # into ./wheels, for this machine's Python and platform
#   bash benchmarks/gpu_wheels.sh --python 3.12 --platform manylinux_2_28_x86_64 --dest /tmp/wheels
#   bash benchmarks/gpu_wheels.sh --list                # only print the pinned list (no network)
#   bash benchmarks/gpu_wheels.sh --self-only           # only this package's own wheel (no network)
#
# The GPU machine is assumed to have PyTorch (a CUDA build) and transformers installed already; rented GPU
# images usually do, and torch's CUDA wheels are several GB. Everything else this package needs with its
# `dev` extra (trl, accelerate, datasets, evaluate, peft, bitsandbytes, tiktoken, ... and their own
# dependencies), plus torchao for FP8, is downloaded at the versions installed HERE (the machine this
# script runs on must have the package installed and working), for the target's Python and platform.
# On the GPU machine:
#
#   pip install --no-index --find-links wheels wheels/nanochat_hf-*.whl "nanochat-hf[test,chat,quant]"
#   python benchmarks/gpu_acceptance.py
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
dest="$repo/wheels"
python_version="$(python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
platform=""
mode="download"
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) dest="$2"; shift 2 ;;
    --python) python_version="$2"; shift 2 ;;
    --platform) platform="$2"; shift 2 ;;
    --list) mode="list"; shift ;;
    --self-only) mode="self"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "gpu_wheels.sh: unknown option '$1' (expected --dest DIR, --python X.Y, --platform TAG, --list, --self-only)" >&2; exit 2 ;;
  esac
done

# The pinned requirement list: the dependency closure of the extras the acceptance run uses (test, chat,
# quant; lm-eval and ruff are not needed on the GPU) as installed here, minus what the GPU
# machine brings (torch, transformers and their own dependency closures), plus torchao (FP8).
pinned_list() {
  python - "$@" <<'PY'
import importlib.metadata as md
import re

from packaging.requirements import Requirement


def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(name, extras=()):
    """Installed distributions `name` (with `extras`) needs, itself included."""
    seen, todo = {}, [(name, tuple(extras))]
    while todo:
        current, wanted = todo.pop()
        key = canonical(current)
        try:
            dist = md.distribution(current)
        except md.PackageNotFoundError:
            continue  # an optional dependency that is not installed here (e.g. for another platform)
        first_visit = key not in seen
        seen[key] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            for extra in ("",) + tuple(wanted):
                if requirement.marker is None or requirement.marker.evaluate({"extra": extra}):
                    if first_visit or extra:
                        todo.append((requirement.name, tuple(requirement.extras)))
                    break
    return seen


ours = closure("nanochat-hf", ("test", "chat", "quant"))
preinstalled = {**closure("torch"), **closure("transformers")}
for name, version in sorted(ours.items()):
    if name not in preinstalled and name != "nanochat-hf":
        print(f"{name}=={version}")
print("torchao")  # FP8 through accelerate; not a dependency of the package itself
PY
}

if [ "$mode" = "list" ]; then
  pinned_list
  exit 0
fi

mkdir -p "$dest"
# This package's own wheel (no network: setuptools and wheel are already installed here).
python -m pip wheel --quiet --no-deps --no-build-isolation --wheel-dir "$dest" "$repo"
if [ "$mode" = "self" ]; then
  ls "$dest"/nanochat_hf-*.whl
  exit 0
fi

list_file="$(mktemp)"
trap 'rm -f "$list_file"' EXIT
pinned_list > "$list_file"
target=(--python-version "$python_version" --only-binary=:all:)
[ -n "$platform" ] && target+=(--platform "$platform")
# --no-deps: the list already is the whole closure; torch and transformers must not be pulled in. A package
# without a wheel for the target comes as its source archive (pure-Python ones build offline).
while read -r requirement; do
  python -m pip download --quiet --no-deps --dest "$dest" "${target[@]}" "$requirement" 2>/dev/null \
    || python -m pip download --quiet --no-deps --dest "$dest" --no-binary :all: "$requirement" \
    || { echo "gpu_wheels.sh: could not download $requirement for Python $python_version ${platform:-(this platform)}" >&2; exit 1; }
done < "$list_file"
echo "$(ls "$dest" | wc -l) files in $dest; on the GPU machine:"
echo "  pip install --no-index --find-links $dest $dest/nanochat_hf-*.whl \"nanochat-hf[test,chat,quant]\""
