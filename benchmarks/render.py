"""python benchmarks/render.py [docs/results.md ...] [--results docs/results] [--check]

Rewrites the tables of docs/results.md from the benchmarks' data files (docs/results/*.json).
A person writes that page; this script only regenerates the text between a pair of markers

    <!-- table:quality.budget -->
    ...
    <!-- /table -->

here the table `budget` of docs/results/quality.json, as TABLES below lays it out. Everything
outside the markers is kept byte for byte. `NAME.meta` shows any data file's provenance (date,
command, machine, torch version). A data file that does not exist yet gives one line, at the first
of its tables (the others stay empty) and on stderr, naming the command that writes it; a table
whose rows the file lacks (a section that failed: its `errors`) one line too. `--check`
writes nothing and exits 1 when a page differs from what its data gives (tests/test_render.py runs
it on docs/results.md).

Only the standard library: it runs without torch, also as `python -m benchmarks.render`.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import string
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "docs" / "results"
PAGE = REPO / "docs" / "results.md"
PAGES = [PAGE, REPO / "README.md"]  # the README quotes one table (quality.headline)
MARKER = re.compile(r"(<!-- table:(?P<name>[\w.-]+) -->\n)(?P<body>.*?)(<!-- /table -->)", re.DOTALL)

# The command that writes each data file, for the line that stands in for a missing one.
WRITERS = {
    "report": "python -m benchmarks.report",
    "quality": "python -m benchmarks.quality",
    "data": "python -m benchmarks.data",
    "data_ablations": "python -m benchmarks.data --ablate shared mallopt cd-parser "
                      "--out docs/results/data_ablations.json",
    "model": "python -m benchmarks.model",
    "make_data": "python -m benchmarks.make_data",
    "full_size_job": "python -m benchmarks.full_size_job",
    "gpu": "bash benchmarks/gpu.sh (on a CUDA machine)",
    "depth_scale": "python -m benchmarks.quality --ablation-set depth --only ablation",
    "scale_cues": "python -m benchmarks.scale_cues CHECKPOINT UNSEEN.zip",
    "finetune": "python -m benchmarks.finetune",
    "long_run": "python -m benchmarks.long_run",
    "long_run_objects": "python -m benchmarks.long_run --archive objects",
}

# name -> (where the rows are in the data file, [(column header, cell template)], transposed).
# A path is dotted keys (and list indexes); several paths are concatenated. A template is a
# str.format template over one row; a cell whose fields are missing, None or not finite shows
# "–", and a bool field's spec picks a word: "{ok:yes|**no**}". A column whose fields no row has
# is left out. Transposed: the path names one dict, shown as a two-column table (a line a column).
Column = tuple[str, str]
Spec = tuple[str | list[str], list[Column], bool]

_METHOD = [("IoU", "{iou:.3f}"), ("Dice", "{dice:.3f}"), ("RMSE", "{rmse:.4f}"), ("abs_rel", "{abs_rel:.3f}"),
           ("δ1", "{delta1:.3f}"), ("training s", "{training_s:g}"), ("parameters", "{params:,}")]
_RUN = [("model", "{label}"), ("budget s", "{budget_s:g}"), ("batch", "{batch}"),
        ("steps (planned)", "{steps} ({planned_steps})"), ("epochs", "{epochs}"), ("images seen", "{images:,}"),
        ("fit wall s", "{fit_wall_s:.0f}"), ("sum of epoch s", "{epoch_s:.0f}"), ("test eval s", "{eval_s:.0f}")]
_CURVE = [("epoch", "{epoch}"), ("step", "{steps}"), ("train depth loss", "{train_depth_loss:.4f}"),
          ("train RMSE", "{train_rmse:.3f}"), ("val RMSE", "{val_rmse:.3f}"), ("unseen RMSE", "{unseen_rmse:.3f}"),
          ("train δ1", "{train_delta1:.3f}"), ("val δ1", "{val_delta1:.3f}"), ("unseen δ1", "{unseen_delta1:.3f}"),
          ("unseen IoU", "{unseen_iou:.3f}"), ("gap", "{gap:.3f}")]
_BANDS = [("true depth (x 20 m)", "{lo:.2f} – {hi:.2f}"), ("share of pixels", "{share:.3f}"), ("δ1", "{delta1:.3f}"),
          ("median pred / true", "{median_ratio:.3f}")]
_THROUGHPUT = [("px", "{size}"), ("workers", "{workers}"), ("decode limit /s", "{limit:,.0f}"),
               ("strict limit /s", "{limit_strict:,.0f}"), ("ours /s", "{ours:,.0f}"), ("naive /s", "{naive:,.0f}"),
               ("ours / limit", "{ours_per_limit:.2f}"), ("ours / strict", "{ours_per_strict:.2f}"),
               ("ours / naive", "{ours_per_naive:.1f}"), ("ours uint8 /s", "{ours_uint8:,.0f}")]
_INDEX = [("samples", "{samples:,}"), ("zip entries", "{entries:,}"), ("index s", "{index_s:.2f}"),
          ("open s", "{open_s:.2f}"), ("index MB", "{index_mb:.1f}"), ("manifest MB", "{manifest_mb:.1f}"),
          ("private MB after open", "{anon_after_open_mb:,.0f}"), ("peak RSS MB", "{peak_rss_mb:,.0f}"),
          ("pickle MB", "{pickle_mb:.1f}"), ("zip MB", "{zip_mb:,.0f}"), ("zip written s", "{write_s:.2f}"),
          ("missing", "{missing:,}")]
_TARGET = "{%s:met|NOT met} ({%s:.%df} vs {%s:.%df})"
_ABLATION = [("piece", "{piece}"), ("batches", "{batches}"), ("workers", "{workers}"), ("run", "{run}"),
             ("with /s", "{with:,.0f}"), ("without /s", "{without:,.0f}"), ("with / without", "{ratio:.2f}"),
             ("with / without, range over runs", "{ratio_min:.2f}-{ratio_max:.2f}"), ("per", "{per} s")]
_CD_PARSER = [("samples", "{samples:,}"), ("index", "{parser}"), ("index s", "{index_s:.2f}"),
              ("index s, range over runs", "{index_s_min:g}-{index_s_max:g}"), ("index MB", "{index_mb:.0f}"),
              ("private MB after open", "{private_mb:,.0f}"), ("peak RSS MB", "{peak_rss_mb:,.0f}")]

TABLES: dict[str, Spec] = {
    # benchmarks/report.py
    "report.summary": ("summary", [
        ("px", "{px}"), ("model", "{label}"), ("IoU (unseen)", "{iou:.3f}"), ("RMSE (unseen)", "{rmse:.4f}"),
        ("δ1 (unseen)", "{delta1:.3f}"), ("training s", "{training_s:.0f}")], False),
    "report.targets": ("targets", [
        ("px", "{px}"), ("MaskDepthNet > seed on IoU", _TARGET % ("iou_vs_seed", "iou", 3, "seed_iou", 3)),
        ("MaskDepthNet < seed on RMSE", _TARGET % ("rmse_vs_seed", "rmse", 4, "seed_rmse", 4)),
        ("MaskDepthNet > background subtraction on IoU", _TARGET % ("iou_vs_bgsub", "iou", 3, "bgsub_iou", 3))],
        False),
    "report.archives": ("archives", [
        ("px", "{px}"), ("archive", "{role}"),
        ("made by", "`make-data --size {px} --num-bg {num_bg} --num-fg {num_fg} --per-pair {per_pair} --seed {seed}`"),
        ("samples", "{samples:,}"), ("train samples", "{train_samples:,}"),
        ("train backgrounds", "{train_backgrounds}"), ("evaluated", "{evaluated}")], False),
    **{f"report.quality_{px}": (f"quality.{px}.methods", [("method", "{method}"), *_METHOD], False)
       for px in (64, 192)},
    **{f"report.runs_{px}": (f"quality.{px}.runs", _RUN, False) for px in (64, 192)},
    "report.speed": ("speed", [
        ("px", "{size}"), ("batch", "{batch}"), ("model", "{label}"), ("parameters", "{params:,}"),
        ("GFLOP/img (fwd)", "{gflops:.2f}"), ("train img/s", "{train_ips:.1f}"), ("infer img/s", "{infer_ips:.1f}"),
        ("ms / train step", "{train_ms_per_step:.0f}")], False),
    "report.speedup": ("speedup", [
        ("px", "{size}"), ("training, MaskDepthNet / seed", "x{train_x:.2f}"),
        ("inference, MaskDepthNet / seed", "x{infer_x:.2f}")], False),
    "report.data_pipeline": ("data_pipeline.rows", _THROUGHPUT, False),
    "report.make_data": ("make_data", [
        ("samples", "{samples:,}"), ("px", "{px}"), ("seed", "{seed}"), ("seconds", "{seconds:.1f}"),
        ("samples/s", "{samples_per_s:.0f}")], False),
    "report.index": ("index", _INDEX, False),
    "report.resolution": ("resolution", [
        ("px", "{size}"), ("model", "{label}"), ("ms / image", "{ms_per_image:.1f}"),
        ("vs smallest", "x{vs_smallest:.1f}"), ("pixels vs smallest", "x{pixels_vs_smallest:.0f}")], False),
    "report.epoch_workers": ("epoch_workers.rows", [
        ("workers", "{workers}"), ("loader only s", "{loader_s:.2f}"), ("training epoch s", "{epoch_s:.2f}"),
        ("img/s", "{img_s:.1f}")], False),
    "report.timings": ("timings", [("section", "{section}"), ("seconds", "{seconds:.0f}")], False),
    # benchmarks/quality.py
    "quality.archives": ("archives", [
        ("archive", "{name}"), ("backgrounds", "{num_bg:,}"), ("objects", "{num_fg}"),
        ("objects per scene", "{fg_per_bg}"), ("flips", "{flips}"),
        ("placements", "{per_pair}"), ("samples", "{samples:,}"), ("seed", "{seed}"), ("px", "{size}")], False),
    "quality.settings": ("settings", [
        ("budget per budget run, min", "{minutes:g}"), ("torch threads per budget run", "{threads}"),
        ("epochs per ablation run", "{ablation_epochs}"), ("steps per ablation run", "{ablation_steps}"),
        ("batch", "{batch}"), ("runs at a time", "{jobs}"),
        ("step time of the ablation's first row, s", "{reference_step_s:.2f}")], True),
    "quality.budget": (["budget.*", "baselines"], [
        ("method", "{method}"), ("archive", "{archive}"), ("unseen δ1", "{unseen_delta1:.3f}"),
        ("unseen RMSE", "{unseen_rmse:.3f}"), ("unseen abs_rel", "{unseen_abs_rel:.3f}"),
        ("unseen IoU", "{unseen_iou:.3f}"), ("epochs", "{epochs}"), ("steps", "{steps}"),
        ("training clock, min", "{training_min:g}")], False),
    # the README's one results table: the budget runs and the baselines, metric and scale-invariant side by side
    "quality.headline": (["budget.*", "baselines"], [
        ("method", "{method}"), ("trained on", "{archive}"), ("unseen δ1 ↑", "{unseen_delta1:.3f}"),
        ("unseen δ1 median-scaled ↑", "{unseen_delta1_ms:.3f}"), ("unseen RMSE ↓", "{unseen_rmse:.3f}"),
        ("unseen abs_rel ↓", "{unseen_abs_rel:.3f}"), ("unseen IoU ↑", "{unseen_iou:.3f}")], False),
    # issue 22: one change at a time against configs/quick.yaml, metric and scale-invariant side by side
    "depth_scale.ablation": ("ablation", [
        ("change", "{change}"), ("overrides", "`{overrides}`"), ("trained on", "{archive}"), ("steps", "{steps}"),
        ("unseen δ1 ↑", "{unseen_delta1:.3f}"), ("δ1 median-scaled ↑", "{unseen_delta1_ms:.3f}"),
        ("abs_rel ↓", "{unseen_abs_rel:.3f}"), ("abs_rel median-scaled ↓", "{unseen_abs_rel_ms:.3f}"),
        ("SILog ↓", "{unseen_silog:.2f}"), ("RMSE ↓", "{unseen_rmse:.4f}"), ("IoU ↑", "{unseen_iou:.3f}"),
        ("parameters", "{params:,}")], False),
    # the same rows taken together over seeds: an option's effect against the baseline's seed spread
    "depth_scale.seeds": ("seeds", [
        ("change", "{change}"), ("trained on", "{archive}"), ("seeds", "{seeds}"),
        ("unseen δ1 ↑ mean (range)", "{unseen_delta1_mean:.3f} ({unseen_delta1_min:.3f} – {unseen_delta1_max:.3f})"),
        ("δ1 median-scaled ↑", "{unseen_delta1_ms_mean:.3f} ({unseen_delta1_ms_min:.3f} – {unseen_delta1_ms_max:.3f})"),
        ("abs_rel ↓", "{unseen_abs_rel_mean:.3f} ({unseen_abs_rel_min:.3f} – {unseen_abs_rel_max:.3f})"),
        ("RMSE ↓", "{unseen_rmse_mean:.4f} ({unseen_rmse_min:.4f} – {unseen_rmse_max:.4f})"),
        ("IoU ↑", "{unseen_iou_mean:.3f} ({unseen_iou_min:.3f} – {unseen_iou_max:.3f})")], False),
    "quality.targets": ("targets", [
        ("archive", "{archive}"), ("δ1 ≥ 0.75", "{delta1_ok:yes|**no**} ({unseen_delta1:.3f})"),
        ("RMSE ≤ half the mean predictor's", "{rmse_ok:yes|**no**} ({unseen_rmse:.3f} vs {half_mean_rmse:.3f})"),
        ("IoU ≥ 0.94", "{iou_ok:yes|**no**} ({unseen_iou:.3f})"),
        ("gap unseen − train: first → last epoch", "{gap_first:.3f} → {gap_last:.3f}")], False),
    **{f"quality.curve_{a}": (f"budget.{a}.curve", _CURVE, False) for a in ("diverse", "s15")},
    **{f"quality.bands_{a}": (f"budget.{a}.bands", _BANDS, False) for a in ("diverse", "s15")},
    "quality.ablation": ("ablation", [
        ("change (alone, vs the old default)", "{change}"), ("archive", "{archive}"),
        ("unseen δ1", "{unseen_delta1:.3f}"), ("unseen RMSE", "{unseen_rmse:.3f}"), ("unseen IoU", "{unseen_iou:.3f}"),
        ("val RMSE", "{val_rmse:.3f}"), ("train RMSE", "{train_rmse:.3f}"),
        ("gap val − train", "{gap_val_train:.3f}"),
        ("gap unseen − train", "{gap_unseen_train:.3f}"), ("step time", "{step_time_rel:.2f}x"),
        ("parameters", "{params:,}")], False),
    # benchmarks/finetune.py (issue 22, item 5): scratch vs from 64 px weights, the same steps at 192 px;
    # metric and scale-invariant depth side by side, then how soon each reaches scratch's final val figures
    "finetune.runs": ("runs", [
        ("run", "{run}"), ("starts from", "{init}"), ("steps", "{steps}"), ("val IoU ↑", "{val_iou:.3f}"),
        ("val δ1 ↑", "{val_delta1:.3f}"), ("unseen δ1 ↑", "{unseen_delta1:.3f}"),
        ("δ1 median-scaled ↑", "{unseen_delta1_ms:.3f}"), ("abs_rel ↓", "{unseen_abs_rel:.3f}"),
        ("abs_rel median-scaled ↓", "{unseen_abs_rel_ms:.3f}"), ("SILog ↓", "{unseen_silog:.2f}"),
        ("RMSE ↓", "{unseen_rmse:.4f}"), ("unseen IoU ↑", "{unseen_iou:.3f}"),
        ("steps to scratch's final val IoU", "{steps_to_iou}"),
        ("steps to scratch's final val δ1", "{steps_to_delta1}")], False),
    "finetune.reach": ("runs", [
        ("run", "{run}"), ("64 px stage s", "{stage_s:.0f}"), ("training s", "{training_s:.0f}"),
        ("val IoU target (scratch's final)", "{target_iou:.3f}"), ("steps to it", "{steps_to_iou}"),
        ("s to it", "{s_to_iou:.0f}"), ("s incl. the 64 px stage", "{total_s_to_iou:.0f}"),
        ("step equivalents incl. the stage", "{total_steps_to_iou:.0f}"),
        ("val δ1 target (scratch's final)", "{target_delta1:.3f}"), ("steps to it", "{steps_to_delta1}"),
        ("s to it", "{s_to_delta1:.0f}"), ("s incl. the 64 px stage", "{total_s_to_delta1:.0f}"),
        ("step equivalents incl. the stage", "{total_steps_to_delta1:.0f}")], False),
    "finetune.curves": ("curves.*", [
        ("run", "{run}"), ("step", "{steps}"), ("s", "{seconds:.0f}"), ("val IoU", "{val_iou:.3f}"),
        ("val δ1", "{val_delta1:.3f}"), ("val δ1 median-scaled", "{val_delta1_ms:.3f}"),
        ("unseen IoU", "{unseen_iou:.3f}"), ("unseen δ1", "{unseen_delta1:.3f}"),
        ("unseen δ1 median-scaled", "{unseen_delta1_ms:.3f}"), ("unseen abs_rel", "{unseen_abs_rel:.3f}"),
        ("unseen RMSE", "{unseen_rmse:.4f}")], False),
    "finetune.settings": ("settings", [
        ("image side of the compared runs, px", "{size}"), ("steps per run", "{steps}"), ("batch", "{batch}"),
        ("evaluations after step 0", "{epochs}"), ("first stage: side px, steps, batch",
                                                  "{stage_size}, {stage_steps}, {stage_batch}"),
        ("torch threads", "{threads}"), ("config", "`{config}`")], True),
    # benchmarks/long_run.py (issue 22, item 6): configs/quick.yaml for long on 1,000 scenes, every epoch
    "long_run.curve": ("curve", [
        ("epoch", "{epoch}"), ("step", "{steps}"), ("training min", "{minutes:g}"),
        ("train δ1", "{train_delta1:.3f}"), ("val δ1", "{val_delta1:.3f}"), ("unseen δ1 ↑", "{unseen_delta1:.3f}"),
        ("unseen δ1 median-scaled ↑", "{unseen_delta1_ms:.3f}"), ("unseen abs_rel ↓", "{unseen_abs_rel:.3f}"),
        ("unseen SILog ↓", "{unseen_silog:.2f}"), ("unseen RMSE ↓", "{unseen_rmse:.4f}"),
        ("unseen IoU ↑", "{unseen_iou:.3f}")], False),
    "long_run.level_off": ("level_off", [
        ("figure", "{figure}"), ("best", "{best:.4f}"), ("at step", "{best_step}"), ("last", "{last:.4f}"),
        ("settles (stays within ± tolerance of the best) at step", "{settled_step} (± {tolerance:g})"),
        ("training min to there", "{settled_minutes:g}"),
        ("change over the last third (from step)", "{last_third_gain:+.4f} ({last_third_from_step})")], False),
    "long_run.baseline": ("baseline", [
        ("method", "{method}"), ("unseen δ1", "{delta1:.3f}"), ("unseen δ1 median-scaled", "{delta1_ms:.3f}"),
        ("unseen abs_rel", "{abs_rel:.3f}"), ("unseen RMSE", "{rmse:.4f}")], False),
    "long_run.object_swap": ("object_swap", [
        ("val split of", "{val_of}"), ("images", "{images}"), ("IoU ↑", "{iou:.3f}"), ("δ1 ↑", "{all_delta1:.3f}"),
        ("δ1 median-scaled ↑", "{all_delta1_ms:.3f}"), ("RMSE ↓", "{all_rmse:.4f}"),
        ("δ1 inside the object", "{inside_delta1:.3f}"), ("δ1 outside it", "{outside_delta1:.3f}"),
        ("δ1 median-scaled outside", "{outside_delta1_ms:.3f}")], False),
    # benchmarks/full_size_job.py
    "full_size_job.run": ("run", [
        ("archive", "`{archive}`"), ("archive GB", "{archive_gb:.2f}"),
        ("on disk in the job's folder, GB", "{disk_gb:.2f}"),
        ("cores (nproc)", "{nproc}"), ("RAM GB", "{ram_gb:.1f}"), ("available at the start, GB", "{available_gb:.1f}"),
        ("load average at the start (1 / 5 / 15 min)", "{load_1:.1f} / {load_5:.1f} / {load_15:.1f}"),
        ("load average at the end (1 min)", "{load_end:.1f}"), ("minutes in all", "{total_min:.0f}")], True),
    "full_size_job.steps": ("steps", [
        ("step", "{name}"), ("s", "{wall_s:,.1f}"), ("CPU s", "{cpu_s:,.1f}"), ("work s", "{work_s:,.2f}"),
        ("largest process peak MB", "{self_peak_mb:,.0f}"), ("tree RSS peak MB", "{tree_rss_mb:,.0f}"),
        ("tree PSS peak MB", "{tree_pss_mb:,.0f}"), ("tree anon peak MB", "{tree_anon_mb:,.0f}"),
        ("processes", "{processes}"), ("load", "{load:.1f}"), ("exit status", "{status}")], False),
    "full_size_job.open": ("open", [
        ("step", "{name}"), ("samples", "{samples:,}"), ("entries", "{entries:,}"), ("index MB", "{index_mb:.0f}"),
        ("RSS before the open MB", "{rss_before_mb:,.0f}"), ("RSS after the open MB", "{rss_open_mb:,.0f}"),
        ("RSS after one sample MB", "{rss_mb:,.0f}")], False),
    "full_size_job.twice": ("twice", [
        ("step", "{name}"), ("main RSS before MB", "{rss_before_mb:,.0f}"),
        ("after section 1 MB", "{rss_after_1_mb:,.0f}"), ("after section 2 MB", "{rss_after_2_mb:,.0f}"),
        ("main peak MB", "{main_peak_mb:,.0f}")], False),
    "full_size_job.loader": ("loader", [
        ("step", "{name}"), ("samples", "{samples:,}"), ("samples/s", "{samples_per_s:,.0f}")], False),
    "full_size_job.estimates": ("estimates", [
        ("figure", "{figure}"), ("README's estimate before the job", "{readme:,g}"), ("measured", "{measured:,g}")],
        False),
    "full_size_job.colab": ("colab", [
        ("in_memory", "{in_memory}"), ("DataLoader workers", "{workers}"),
        ("private GB, peak of the tree", "{private_gb:.1f}"), ("PSS GB, peak of the tree", "{pss_gb:.1f}"),
        ("archive GB", "{archive_gb:.2f}"), ("private GB with a 6 GB archive", "{need_gb:.1f}"),
        ("of which Python, torch, index, workers", "{overhead_gb:.1f}")], False),
    # benchmarks/gpu.py (bash benchmarks/gpu.sh)
    "gpu.models": ("bench_model", [
        ("px", "{size}"), ("batch", "{batch}"), ("model", "{model}"), ("compile", "{compile:on|off}"),
        ("train img/s", "{train_ips:,.0f}"), ("infer img/s", "{infer_ips:,.0f}"), ("peak MB", "{peak_mem_mb:,.0f}"),
        ("error", "{error}")], False),
    "gpu.train": ("train", [
        ("config", "{config}"), ("px", "{size}"), ("batch", "{batch}"), ("DataLoader workers", "{num_workers}"),
        ("archive samples", "{samples:,}"), ("make-data s", "{make_data_s:.0f}"), ("epoch timed", "{epoch}"),
        ("steps in it", "{steps}"), ("epoch s (incl. validation)", "{epoch_s:.1f}"), ("img/s", "{img_s:,.0f}"),
        ("a 400k-sample epoch, min", "{epoch_400k_min:.1f}"), ("peak GPU MB", "{peak_mem_mb:,.0f}")], True),
    # benchmarks/data.py alone
    "data.throughput": ("throughput", [
        ("px", "{size}"), ("workers", "{workers}"), ("decode limit /CPU-s", "{limit_cpu:,.0f}"),
        ("strict limit /CPU-s", "{limit_strict_cpu:,.0f}"), ("ours /CPU-s", "{ours_cpu:,.0f}"),
        ("naive /CPU-s", "{naive_cpu:,.0f}"), ("ours uint8 /CPU-s", "{ours_uint8_cpu:,.0f}"),
        ("ds[i] /CPU-s", "{dataset_only_cpu:,.0f}"), ("ours / limit", "{ours_per_limit:.2f}"),
        ("ours uint8 / limit", "{ours_uint8_per_limit:.2f}"), ("ds[i] / limit", "{dataset_only_per_limit:.2f}"),
        ("ours /s", "{ours:,.0f}"), ("ours uint8 /s", "{ours_uint8:,.0f}")], False),
    "data.index": ("index", _INDEX, False),
    "data.ablations": ("ablations", _ABLATION, False),
    "data.cd_parser": ("cd_parser", _CD_PARSER, False),
    # benchmarks/data.py --ablate ..., the run that the data layer's docstrings cite
    "data_ablations.ablations": ("ablations", _ABLATION, False),
    "data_ablations.cd_parser": ("cd_parser", _CD_PARSER, False),
    # benchmarks/make_data.py
    "make_data.rates": ("rates", [
        ("px", "{size}"), ("processes", "{workers}"), ("samples/s", "{samples_per_s:,.0f}"),
        ("sampling phase samples/s", "{sampling_per_s:,.0f}"),
        ("prepare s per scene or object", "{prepare_s_per_item:.2f}"), ("kB per sample", "{kb_per_sample:.1f}"),
        ("main MB", "{main_rss_mb:,.0f}"), ("worker MB", "{worker_rss_mb:,.0f}")],
        False),
    "make_data.estimate": ("estimate", [
        ("samples", "{samples:,}"), ("px", "{size}"), ("processes", "{workers}"), ("minutes", "{minutes:.0f}"),
        ("archive GB", "{archive_gb:.1f}"), ("main process MB", "{main_mb:,.0f}"),
        ("per worker MB", "{worker_mb:,.0f}")], False),
    # benchmarks/model.py
    "model.steps": ("results", [
        ("px", "{size}"), ("batch", "{batch}"), ("model", "{model}"), ("parameters", "{params:,}"),
        ("GFLOP/img (fwd)", "{gflops:.2f}"), ("train img/s", "{train_ips:.1f}"), ("infer img/s", "{infer_ips:.1f}"),
        ("ms / train step", "{train_ms_per_step:.0f}")], False),
    # scripts/demo.py (make demo): a user tool, its figures transcribed once
    "demo.runs": ("runs", [
        ("recipe", "{recipe}"), ("samples", "{samples:,}"), ("px", "{size}"), ("scenes", "{num_bg}"),
        ("objects", "{num_fg}"), ("epochs", "{epochs}"), ("minutes", "{minutes:g}"), ("IoU", "{iou:.3f}"),
        ("Dice", "{dice:.3f}"), ("RMSE", "{rmse:.3f}"), ("δ1", "{delta1:.3f}")], False),
}
# benchmarks/long_run.py --archive objects writes long_run_objects.json: the same tables
TABLES.update({"long_run_objects." + name.split(".", 1)[1]: spec for name, spec in list(TABLES.items())
               if name.startswith("long_run.")})


class RenderError(Exception):
    """A table that cannot be rendered: unknown name, or a data file without the rows it needs."""


class NoRows(Exception):
    """A data file without the rows a table needs (a section of the benchmark failed, or an older
    file): the table shows one line instead, with the failure the benchmark recorded, if any."""


class _Blank(Exception):
    """A cell field that is missing, None or not finite: the cell shows an en dash."""


class _Cells(string.Formatter):
    def get_value(self, key: int | str, args: Any, kwargs: dict[str, Any]) -> Any:
        value = kwargs.get(str(key))
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            raise _Blank
        return value

    def format_field(self, value: Any, format_spec: str) -> str:
        if isinstance(value, bool):
            yes, _, no = format_spec.partition("|")
            return (yes if value else no) if format_spec else str(value)
        return format(value, format_spec)


_CELLS = _Cells()


def cell(template: str, row: dict[str, Any]) -> str:
    """One table cell: `template` filled from `row`, or an en dash when a field it needs is absent."""
    try:
        return _CELLS.format(template, **row).replace("|", "\\|")
    except _Blank:
        return "–"


def _fields(template: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows])


def lookup(data: Any, path: str) -> Any:
    """`data` at a dotted path: dict keys and list indexes; `*` maps the rest of the path over
    every value of a dict or list and concatenates what it finds."""
    head, _, rest = path.partition(".")
    if head == "*":
        values = data.values() if isinstance(data, dict) else data
        found = [lookup(v, rest) if rest else v for v in values]
        return [r for f in found for r in (f if isinstance(f, list) else [f])]
    if isinstance(data, list) and head.isdigit() and int(head) < len(data):
        value = data[int(head)]
    elif isinstance(data, dict) and head in data:
        value = data[head]
    else:
        raise KeyError(head)
    return lookup(value, rest) if rest else value


def _meta_table(meta: dict[str, Any]) -> str:
    def show(key: str, value: Any) -> str:
        if isinstance(value, dict):
            return "; ".join(f"{k.replace('_', ' ')} {show(k, v)}" for k, v in value.items())
        if isinstance(value, list):
            return ", ".join(show(key, v) for v in value)
        if value is None:
            return "–"
        return f"`{value}`" if key == "command" else str(value)

    return markdown_table(["run", ""], [[key.replace("_", " "), show(key, value).replace("|", "\\|")]
                                        for key, value in meta.items()])


def render_table(name: str, data: dict[str, Any]) -> str:
    """The markdown table `name` (a key of TABLES, or FILE.meta) from its data file's contents."""
    if name.endswith(".meta"):
        if "meta" not in data:
            raise NoRows("no 'meta'")
        return _meta_table(data["meta"])
    if name not in TABLES:
        raise RenderError(f"unknown table {name!r}; known: {', '.join(sorted(TABLES))} and FILE.meta")
    paths, columns, transposed = TABLES[name]
    rows: list[dict[str, Any]] = []
    for path in [paths] if isinstance(paths, str) else paths:
        try:
            found = lookup(data, path)
        except KeyError:
            error = data.get("errors", {}).get(path.split(".", 1)[0])
            raise NoRows(f"no {path!r}" + (f": {error}" if error else "")) from None
        rows += found if isinstance(found, list) else [found]
    # a column that no row has a figure for is left out (a benchmark's output may lack a measurement)
    columns = [(h, t) for h, t in columns if not rows or all(any(f in r for r in rows) for f in _fields(t))]
    if transposed:
        return markdown_table(["", ""], [[header, cell(template, rows[0])] for header, template in columns])
    return markdown_table([h for h, _ in columns], [[cell(t, row) for _, t in columns] for row in rows])


def stale_note(data: dict[str, Any]) -> str:
    """The line under a table whose data file's meta says its sources changed since (tests/test_figures.py)."""
    stale = data.get("meta", {}).get("stale")
    if not stale:
        return ""
    return (f"\n*Stale: source changed since the measurement ({', '.join(stale['files'])}, {stale['since']}): "
            f"{stale['why']}.*\n")


def missing_line(stem: str, results: Path) -> str:
    writer = WRITERS.get(stem, f"the benchmark that writes {stem}.json")
    return f"Not measured yet: {_shown(results / (stem + '.json'))} does not exist; {writer} writes it."


def render_text(text: str, results: Path = RESULTS) -> tuple[str, list[str]]:
    """`text` with every marked table regenerated from the data files in `results`, and the lines
    that stand in for missing data files or rows."""
    cache: dict[str, Any] = {}
    missing: list[str] = []
    noted: set[str] = set()  # data files whose stale note is already on the page (once, at the first table)

    def body(match: re.Match[str]) -> str:
        name = match["name"]
        stem = name.split(".", 1)[0]
        if stem not in cache:
            path = results / f"{stem}.json"
            try:
                cache[stem] = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
            except ValueError as exc:
                raise RenderError(f"{_shown(path)} is not valid JSON: {exc}") from None
        if cache[stem] is None:  # one line, at the first of the file's tables
            line = missing_line(stem, results)
            if line in missing:
                return match[1] + match[4]
        else:
            try:
                note = "" if stem in noted else stale_note(cache[stem])
                noted.add(stem)
                return match[1] + render_table(name, cache[stem]) + "\n" + note + match[4]
            except NoRows as exc:
                line = f"Not measured: {_shown(results / (stem + '.json'))} has {exc}."
        missing.append(line)
        return match[1] + line + "\n" + match[4]

    return MARKER.sub(body, text), missing


def _shown(path: Path) -> str:
    try:
        return path.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return path.as_posix()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[1])
    parser.add_argument("pages", nargs="*", type=Path, default=PAGES,
                        help="markdown files (default docs/results.md and README.md)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="folder of the data files (default docs/results)")
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a page is not up to date")
    args = parser.parse_args(argv)
    stale = []
    for page in args.pages:
        old = page.read_text(encoding="utf-8")
        try:
            new, missing = render_text(old, args.results)
        except RenderError as exc:
            print(f"{_shown(page)}: {exc}", file=sys.stderr)
            return 2
        for line in missing:
            print(line, file=sys.stderr)
        if new == old:
            continue
        stale.append(page)
        if not args.check:
            page.write_text(new, encoding="utf-8")
            print(f"rewrote the tables of {_shown(page)}")
    if args.check and stale:
        print(f"not up to date with its data: {', '.join(map(_shown, stale))}; run python benchmarks/render.py",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
