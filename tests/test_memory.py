"""Peak memory when a notebook session opens the data twice (section 1, then section 2).

    pytest tests/test_memory.py

On a 12.7 GB Colab runtime a 6 GB archive held in RAM twice would not fit. The notebook picks
memory-mapping for such an archive (`colab.choose_in_memory`); this test checks the other half:
that a finished `fit` (and `evaluate_checkpoint`) lets go of an in-RAM archive, so training a
second run in the same process, on another archive, does not add a second copy. It runs in a
fresh interpreter and reads its peak RSS (VmHWM) after each step, with archives padded to
64 MB so a copy stands well above the noise. (Kept alive on purpose, the first archive adds
~1.1x its size to the second peak and the test fails.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

PADDING = 64 << 20

SCRIPT = r"""
import json, sys
from maskdepth.config import load_config
from maskdepth.inference import evaluate_checkpoint
from maskdepth.train import fit

def peak():  # bytes: this process's peak RSS (VmHWM; ru_maxrss would carry the forking parent's peak over exec)
    line = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024

config, overrides, run2, data2 = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], sys.argv[4]
peaks = {"start": peak()}
fit(load_config(config, overrides))
peaks["first fit"] = peak()
evaluate_checkpoint(json.loads(sys.argv[2])[1].split("=", 1)[1] + "/checkpoints/last.pt", split="val")
peaks["evaluate"] = peak()
fit(load_config(config, overrides + ["run_dir=" + run2, "data.path=" + data2]))
peaks["second fit"] = peak()
print(json.dumps(peaks))
"""


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_a_second_run_in_the_same_process_does_not_hold_a_second_copy_of_the_data(
    tiny_data: Path, tiny_overrides: list[str], tmp_path: Path
) -> None:
    archive = tmp_path / "padded.zip"
    shutil.copy(tiny_data, archive)
    with zipfile.ZipFile(archive, "a", compression=zipfile.ZIP_STORED) as z:
        z.writestr("padding.bin", os.urandom(PADDING))
    overrides = [o for o in tiny_overrides if not o.startswith(("data.path=", "run_dir="))]
    overrides = [f"data.path={archive}", f"run_dir={tmp_path / 'run1'}", *overrides, "data.in_memory=true",
                 "train.epochs=1", "train.max_steps_per_epoch=2"]
    repo = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(repo / "configs" / "quick.yaml"), json.dumps(overrides),
                             str(tmp_path / "run2"), str(shutil.copy(archive, tmp_path / "other.zip"))],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    peaks = json.loads(result.stdout.strip().splitlines()[-1])
    size = archive.stat().st_size
    assert peaks["first fit"] - peaks["start"] > 0.9 * size, peaks  # the archive was in RAM ...
    # Section 2's archive (another file) takes the place of section 1's, instead of adding to it.
    assert peaks["second fit"] - peaks["first fit"] < 0.5 * size, peaks
