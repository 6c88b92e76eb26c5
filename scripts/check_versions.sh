#!/usr/bin/env bash
# Runs the fast tests (-m "not slow") in two virtual environments, built here once and reused:
#
#   floor  Python 3.10, every dependency at the lower bound declared in pyproject.toml
#          (torch, torchvision, numpy, pillow, ... exactly at it; the dev tools at the oldest
#          release of their lower bound's series: pytest-xdist 3.0 was never released, 3.0.2 was)
#   colab  Colab's current stack: Python 3.13, torch 2.11, torchvision 0.26, numpy 2.1,
#          pillow 11.3; the rest is whatever pip picks
#
# Not part of CI: it downloads torch twice (a few GB). Results are recorded in docs/versions.md.
#
#   bash scripts/check_versions.sh              # both stacks
#   bash scripts/check_versions.sh floor        # one of them
#   VENVS=/work/venvs bash scripts/check_versions.sh
#
# Environment:
#   VENVS        where the venvs live (default ${XDG_CACHE_HOME:-~/.cache}/maskdepth-versions);
#                an existing venv is reused, and reinstalled only when its pins or pyproject change
#   PY310 PY313  interpreters to build them with (default: pyenv's newest 3.10.x / 3.13.x, else
#                python3.10 / python3.13 on PATH)
#   TORCH_INDEX  where torch and torchvision come from (default: PyTorch's CPU wheel index when it
#                answers, else PyPI, whose Linux wheels are CUDA builds that also run on the CPU)
#   PYTEST_ARGS  extra pytest arguments (default: -n 2)
#
# Exit status: 0 when every stack passed, 1 otherwise.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENVS=${VENVS:-${XDG_CACHE_HOME:-$HOME/.cache}/maskdepth-versions}
PYTEST_ARGS=${PYTEST_ARGS:--n 2}
CPU_INDEX=https://download.pytorch.org/whl/cpu
STACKS=("${@:-floor colab}")
read -r -a STACKS <<<"${STACKS[*]}"
mkdir -p "$VENVS"
unset PYTHONPATH PIP_REQUIRE_VIRTUALENV

find_python() {  # find_python 3.10 -> path of an interpreter of that minor version
    local minor=$1 root cand
    root=$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")
    cand=$(ls -d "$root"/versions/"$minor".[0-9]* 2>/dev/null | sort -V | tail -n 1)
    if [[ -n $cand && -x $cand/bin/python ]]; then echo "$cand/bin/python"; return; fi
    command -v "python$minor" || true
}

constraints() {  # constraints STACK -> pip constraints on stdout
    case $1 in
    floor)
        # "name>=X" in pyproject.toml's dependencies -> name==X; dev extras -> name==X.*
        sed -n '/^dependencies = \[/,/^\]/p' "$REPO/pyproject.toml" |
            grep -o '"[A-Za-z0-9_.-]*>=[0-9.]*"' | tr -d '"' | sed 's/>=/==/'
        sed -n 's/^dev = \[\(.*\)\]/\1/p' "$REPO/pyproject.toml" |
            grep -o '"[A-Za-z0-9_.-]*>=[0-9.]*"' | tr -d '"' | sed 's/>=\(.*\)/==\1.*/'
        ;;
    colab)
        printf '%s\n' 'torch==2.11.*' 'torchvision==0.26.*' 'numpy==2.1.*' 'pillow==11.3.*'
        ;;
    *) echo "unknown stack $1 (floor, colab)" >&2; return 1 ;;
    esac
}

python_of() { case $1 in floor) echo "${PY310:-$(find_python 3.10)}" ;; colab) echo "${PY313:-$(find_python 3.13)}" ;; esac; }

torch_index() {
    if [[ -n ${TORCH_INDEX:-} ]]; then echo "$TORCH_INDEX"; return; fi
    if curl -sf --max-time 10 -o /dev/null "$CPU_INDEX/torch/"; then echo "$CPU_INDEX"; fi
}

build() {  # build STACK -> venv ready, or return 1
    local stack=$1 venv=$VENVS/$1 ilog=$VENVS/$1.install.log py cons stamp want idx
    py=$(python_of "$stack")
    if [[ -z $py ]]; then echo "[$stack] no Python interpreter found (set PY310/PY313)"; return 1; fi
    cons=$VENVS/$stack.constraints.txt
    constraints "$stack" >"$cons" || return 1
    want=$(cat "$cons" "$REPO/pyproject.toml" | sha256sum | cut -c1-16)
    stamp=$venv/.maskdepth-versions.stamp
    if [[ -x $venv/bin/python && -f $stamp && $(cat "$stamp") == "$want" ]]; then
        echo "[$stack] reusing $venv"
        return 0
    fi
    [[ -x $venv/bin/python ]] || "$py" -m venv "$venv" || return 1
    echo "[$stack] installing into $venv ($("$venv/bin/python" -V)), pins: $(tr '\n' ' ' <"$cons")"
    echo "[$stack] pip's output: $ilog"
    pip_() { "$venv/bin/python" -m pip install --disable-pip-version-check "$@" >>"$ilog" 2>&1 ||
        { tail -n 30 "$ilog"; return 1; }; }
    : >"$ilog"
    pip_ -U pip || return 1
    idx=$(torch_index)
    if [[ -n $idx ]]; then  # torch first, from the CPU index; the rest from PyPI
        echo "[$stack] torch and torchvision from $idx"
        pip_ -c "$cons" --index-url "$idx" torch torchvision || return 1
    else
        echo "[$stack] torch and torchvision from PyPI (CPU index unreachable)"
    fi
    pip_ -c "$cons" -e "$REPO[dev]" || return 1
    echo "$want" >"$stamp"
}

versions() {  # one line: the versions that matter, read from the venv itself
    "$VENVS/$1/bin/python" - <<'EOF' 2>/dev/null || echo "(versions unreadable)"
import platform
from importlib.metadata import version
names = ["torch", "torchvision", "numpy", "pillow", "matplotlib", "pytorch-msssim", "pyyaml", "tqdm",
         "pytest", "pytest-xdist", "nbclient", "ipykernel"]
print(f"python {platform.python_version()}, " + ", ".join(f"{n} {version(n)}" for n in names))
EOF
}

declare -A RESULT VERS
status=0
for stack in "${STACKS[@]}"; do
    log=$VENVS/$stack.pytest.log
    if ! build "$stack"; then
        RESULT[$stack]="install failed"; VERS[$stack]=""; status=1; continue
    fi
    VERS[$stack]=$(versions "$stack")
    echo "[$stack] ${VERS[$stack]}"
    echo "[$stack] pytest -m 'not slow' $PYTEST_ARGS (log: $log)"
    # shellcheck disable=SC2086
    (cd "$REPO" && "$VENVS/$stack/bin/python" -m pytest -q -m "not slow" -p no:cacheprovider $PYTEST_ARGS) \
        >"$log" 2>&1
    rc=$?
    summary=$(grep -E '(passed|failed|errors?|skipped|deselected|no tests ran).* in [0-9.]+s' "$log" | tail -n 1 |
        sed 's/^=* *//; s/ *=*$//')
    RESULT[$stack]="${summary:-no summary, see $log} (exit $rc)"
    [[ $rc -eq 0 ]] || status=1
    grep -E '^(FAILED|ERROR) ' "$log" | sed "s/^/[$stack]   /"
done

echo
echo "== check_versions summary ($(date -u +%Y-%m-%dT%H:%MZ)) =="
for stack in "${STACKS[@]}"; do
    printf '%-6s %s\n' "$stack" "${RESULT[$stack]}"
    [[ -n ${VERS[$stack]} ]] && printf '       %s\n' "${VERS[$stack]}"
done
exit $status
