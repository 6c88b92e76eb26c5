"""The `maskdepth` command line: subcommands and argument parsing, nothing else.

    maskdepth make-data OUT.zip [--size 192] [--num-bg 1000] [--num-fg 100] [--per-pair 2] ...
    maskdepth check-data DATA [DATA ...]
    maskdepth index --bg A.zip --fg-bg B.zip --mask C.zip --depth D.zip --out manifest.csv
    maskdepth train CONFIG.yaml [key=value ...]
    maskdepth evaluate CHECKPOINT [--data PATH] [--split test] [--out metrics.json] [--report DIR [--worst 8]]
    maskdepth compare RUN [RUN ...] [--out compare.png]
    maskdepth predict CHECKPOINT --bg BG --fg-bg FGBG|DIR|GLOB [--out DIR] [--batch-size 8] [--device auto]
    maskdepth predict CHECKPOINT --pairs pairs.csv [--out DIR]
    maskdepth predict CHECKPOINT --bg BG --video IN.mp4 [--out OUT.mp4] [--frames DIR]

Heavy modules (torch, the data pipeline) are imported inside each handler so that
`maskdepth --help` is instant. A user error (`MaskDepthError`, or an OS error such as a full
disk) is printed as one line, without a traceback, and the exit status is 2.
"""

from __future__ import annotations

import argparse
import errno
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from maskdepth import __version__
from maskdepth.errors import MaskDepthError


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _cmd_make_data(args: argparse.Namespace) -> int:
    from maskdepth.synth import make_dataset

    summary = make_dataset(
        args.out,
        size=args.size,
        num_bg=args.num_bg,
        num_fg=args.num_fg,
        per_pair=args.per_pair,
        seed=args.seed,
        fg_per_bg=args.fg_per_bg,
        workers=args.workers,
        overwrite=args.overwrite,
        image_format=args.format,
        progress=not args.quiet,
    )
    print(summary.format() if hasattr(summary, "format") else summary)
    return 0


def _cmd_check_data(args: argparse.Namespace) -> int:
    from maskdepth.data.check import check_data

    report = check_data(args.data, size=args.size, limit=args.limit, progress=not args.quiet)
    print(report.format())
    return 0 if report.ok else 1


def _cmd_index(args: argparse.Namespace) -> int:
    from maskdepth.data.manifest import build_manifest

    report = build_manifest(
        bg=args.bg,
        fg_bg=args.fg_bg,
        mask=args.mask,
        depth=args.depth,
        bg_pattern=args.bg_pattern,
        out=args.out,
    )
    print(report.format())
    return 0 if report.ok else 1


def _cmd_train(args: argparse.Namespace) -> int:
    from maskdepth.config import load_config
    from maskdepth.train import fit

    cfg = load_config(args.config, args.overrides)
    fit(cfg)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from maskdepth.inference import evaluate_checkpoint, format_metrics

    results = evaluate_checkpoint(
        args.checkpoint,
        data=args.data,
        split=args.split,
        out=args.out,
        batch_size=args.batch_size,
        overrides=args.overrides,
        other_data=args.data is not None,  # --data names the data on purpose: evaluated, with a note
        report=args.report,
        worst=args.worst,
    )
    print(format_metrics(results))
    if args.out:
        print(f"wrote {args.out}")
    if args.report:
        print(f"wrote the failure report {results['report']}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from maskdepth.compare import compare_runs

    path, table = compare_runs(args.runs, args.out)
    print(table)
    print(f"wrote {path}")
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from maskdepth.errors import ConfigError

    given = (("--fg-bg", args.fg_bg), ("--pairs", args.pairs), ("--video", args.video))
    sources = [flag for flag, value in given if value]
    if len(sources) != 1:
        raise ConfigError(f"give one of --fg-bg, --pairs or --video, got {' and '.join(sources) or 'none'}")
    if args.pairs is None and args.bg is None:
        raise ConfigError(f"{sources[0]} needs --bg, the background image")
    if args.frames is not None and args.video is None:
        raise ConfigError("--frames writes the frames of --video; for images use --out")
    common = dict(device=args.device, batch_size=args.batch_size, amp=args.amp, progress=not args.quiet)
    if args.video is not None:
        from maskdepth.video import predict_video

        out = args.out or str(Path(args.video).with_name(Path(args.video).stem + "_pred.mp4"))
        path, count = predict_video(args.checkpoint, bg=args.bg, video=args.video, out=out, frames=args.frames,
                                    keep_going=args.keep_going, **common)
        print(f"wrote {path} ({count} frames: input | mask | depth)" + (f" and {args.frames}/" if args.frames else ""))
        return 0
    from maskdepth.inference import predict_pairs

    written = predict_pairs(args.checkpoint, bg=args.bg, fg_bg=args.fg_bg, pairs=args.pairs,
                            out=args.out or "predictions", **common)
    for path in written:
        print(path)
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from maskdepth.checkpoint import resolve_checkpoint
    from maskdepth.export import export_checkpoint

    checkpoint = resolve_checkpoint(args.checkpoint)  # a run directory: its best.pt (else last.pt)
    out = args.out or str(checkpoint.with_suffix(".onnx" if args.format == "onnx" else ".ts.pt"))
    for path in export_checkpoint(checkpoint, out, fmt=args.format, size=args.size, exporter=args.exporter):
        print(path)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand (also used by the tests)."""
    parser = argparse.ArgumentParser(
        prog="maskdepth",
        description="Foreground mask and depth from (bg, fg_bg) image pairs.",
    )
    parser.add_argument("--version", action="version", version=f"maskdepth {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_data_commands(sub)
    _add_model_commands(sub)
    return parser


def _add_data_commands(sub: Any) -> None:
    """make-data, check-data, index."""
    p = sub.add_parser(
        "make-data",
        help="generate a synthetic dataset archive",
        description="Render a procedural dataset: num_bg * num_fg (or --fg-per-bg) * 2 (flip) * per_pair samples.",
    )
    p.add_argument("out", metavar="OUT.zip", help="archive to write (written to a temp file, renamed when complete)")
    p.add_argument("--size", type=int, default=192, help="image side in pixels, >= 32 (default 192)")
    p.add_argument("--num-bg", type=int, default=1000,
                   help="number of background scenes (default 1000: scene diversity is what makes depth "
                        "generalise to unseen scenes, docs/results.md; the original dataset had 100)")
    p.add_argument("--num-fg", type=int, default=100, help="number of foreground objects (default 100)")
    p.add_argument("--per-pair", type=int, default=2, help="placements per bg x fg x flip (default 2)")
    p.add_argument("--fg-per-bg", type=int, default=None, metavar="K",
                   help="objects per scene, dealt from the pool of --num-fg so each object appears equally "
                        "often (default: every object with every scene); many scenes and many objects in "
                        "a small archive")
    p.add_argument("--seed", type=int, default=0, help="random seed; same arguments give a byte-identical archive")
    p.add_argument("--workers", type=int, default=None, help="processes (default: all cores)")
    p.add_argument("--format", choices=["jpg", "png"], default="jpg",
                   help="jpg like the original, or png with 16-bit depth")
    p.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_make_data)

    p = sub.add_parser(
        "check-data",
        help="verify that every entry decodes and pairs; print statistics",
        description="Decode every entry, check pairing, sizes and value ranges, print statistics. "
        "Exit status 0 if clean, 1 if problems were found (each one named).",
    )
    p.add_argument("data", nargs="+", metavar="DATA", help="a zip with its manifest, or a manifest.csv")
    p.add_argument("--size", type=int, default=None,
                   help="expected image side (default: from dataset.json or the first image)")
    p.add_argument("--limit", type=int, default=None, help="check only the first N samples")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_check_data)

    p = sub.add_parser(
        "index",
        help="build a manifest for archives that have none (the original S15 layout)",
        description="Pair fg_bg, mask and depth entries by file stem, and fg_bg to bg by the key that "
        "--bg-pattern captures. Unpaired entries are named, never guessed.",
    )
    p.add_argument("--bg", required=True, help="zip of backgrounds")
    p.add_argument("--fg-bg", required=True, help="zip of composites")
    p.add_argument("--mask", required=True, help="zip of masks")
    p.add_argument("--depth", required=True, help="zip of depth maps")
    p.add_argument(
        "--bg-pattern",
        default=None,
        help="regex matched from the start of each stem; its first group is the key that pairs an fg_bg with its "
        "background (a second group becomes fg_id). Applied to fg_bg and bg stems alike; a bg stem it does not "
        "match is its own key, so 'bg192_(\\d+)' and '(bg192_\\d+)' both pair fg_bg/bg192_001_fg001_05.jpg with "
        "bg_192/bg192_001.jpg. Default '^(.+?)_(fg[^_]*)': the stem up to '_fg' is the bg stem",
    )
    p.add_argument("--out", required=True, help="manifest.csv to write")
    p.set_defaults(func=_cmd_index)


def _add_model_commands(sub: Any) -> None:
    """train, evaluate, compare, predict, export."""
    for add in (_add_train, _add_evaluate, _add_compare, _add_predict, _add_export):
        add(sub)


def _add_train(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train from a YAML config, resuming the run if it has a checkpoint",
        description="Train from CONFIG.yaml with key=value overrides, e.g. "
        "`maskdepth train configs/quick.yaml train.epochs=3 data.size=64`.",
    )
    p.add_argument("config", metavar="CONFIG.yaml")
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.set_defaults(func=_cmd_train)


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="full metric set of a checkpoint on a split",
        description="Evaluate a checkpoint; the data, size and normalisation come from its config unless overridden.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--data", default=None, help="dataset (default: the checkpoint's data.path); "
                   "other data than it trained on is evaluated, with a note")
    p.add_argument("--split", choices=["train", "val", "test", "all"], default="test")
    p.add_argument("--out", default=None, help="write the metrics as JSON here")
    p.add_argument("--batch-size", type=_positive_int, default=None)
    p.add_argument("--report", default=None, metavar="DIR",
                   help="also write a failure report here: the worst samples, errors by depth band, object size and "
                        "scene kind, histograms; DIR/index.md shows them")
    p.add_argument("--worst", type=_positive_int, default=8, metavar="K",
                   help="rows of the report's worst-sample grids (default 8)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. data.num_workers=2")
    p.set_defaults(func=_cmd_evaluate)


def _add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="overlay the curves of several runs; print each run's best and last epoch",
        description="Read each RUN's metrics.csv and config.yaml (a run still training is read as of its last "
                    "finished epoch) and draw one panel per loss and validation metric, one colour per run, with "
                    "the config keys that differ in the legend.",
    )
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directories")
    p.add_argument("--out", default="compare.png", metavar="FILE.png", help="the PNG to write (default compare.png)")
    p.set_defaults(func=_cmd_compare)


def _add_predict(sub: Any) -> None:
    p = sub.add_parser(
        "predict",
        help="predict mask and depth for image pairs, folders or a video",
        description="Images: BG and FGBG are two files, two folders of files with matching names, two globs, or one "
                    "background file with a folder or glob of composites; or --pairs CSV. Writes per composite "
                    "NAME_mask.png (0/255), NAME_depth.png (16-bit, depth*65535), NAME_depth_color.png and "
                    "NAME_overlay.png. Video: --bg BG --video IN.mp4 writes OUT.mp4 with input | mask | depth "
                    "side by side (needs PyAV: pip install av). Inputs are resized to the training size and back.",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--bg", default=None, help="background image (or a folder/glob matching --fg-bg by name)")
    p.add_argument("--fg-bg", default=None, help="composite image, folder or glob")
    p.add_argument("--pairs", default=None, metavar="CSV",
                   help="a CSV with bg,fg_bg columns (paths relative to the CSV's folder), instead of --bg/--fg-bg")
    p.add_argument("--video", default=None, metavar="IN.mp4", help="a video shot in front of --bg")
    p.add_argument("--out", default=None,
                   help="output folder (default: predictions), or with --video the video to write "
                        "(.mp4, .mov, .mkv, .avi; default: IN_pred.mp4)")
    p.add_argument("--frames", default=None, metavar="DIR",
                   help="with --video: also write frame_NNNNNN_mask.png and frame_NNNNNN_depth.png here (those of "
                        "an earlier run in DIR are removed first)")
    p.add_argument("--keep-going", action="store_true",
                   help="with --video: write the frames that decode of a video cut short (default: an error)")
    p.add_argument("--batch-size", type=_positive_int, default=8, help="pairs or frames per forward pass (default 8)")
    p.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu, cuda, cuda:N or mps")
    p.add_argument("--amp", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="autocast precision (default auto: bf16 or fp16 on CUDA, fp32 elsewhere)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_predict)


def _add_export(sub: Any) -> None:
    p = sub.add_parser(
        "export",
        help="export a checkpoint to ONNX or TorchScript",
        description="Write CHECKPOINT as an ONNX or TorchScript file taking (bg, fg_bg) float [B,3,H,W] in [0, 1] "
                    "and returning (mask probability, depth), normalisation inside, batch/H/W dynamic; plus "
                    "FILE.json describing it. No --fp16: TensorRT and onnxruntime's GPU providers choose half "
                    "precision from the fp32 graph (e.g. trtexec --onnx=FILE --fp16).",
    )
    p.add_argument("checkpoint", metavar="CHECKPOINT")
    p.add_argument("--format", choices=["onnx", "torchscript"], default="onnx")
    p.add_argument("--out", default=None, help="file to write (default: CHECKPOINT with .onnx or .ts.pt)")
    p.add_argument("--size", type=_positive_int, default=None,
                   help="side of the traced example input (default: the training size; a multiple of the stride)")
    p.add_argument("--exporter", choices=["auto", "legacy", "dynamo"], default="auto",
                   help="ONNX exporter: torch's TorchScript-based one (legacy, default where torch has it) or dynamo "
                        "(needs onnxscript)")
    p.set_defaults(func=_cmd_export)


def _one_line(exc: BaseException) -> str:
    """The error's message on one line. A multi-line message (an entry list, then a hint) is
    joined; an error re-raised from a DataLoader worker carries the worker's traceback, of which
    only the message after the error's type name is kept."""
    text = str(exc).strip()
    if "Traceback (most recent call last)" in text:
        found = list(re.finditer(r"^[A-Za-z_][\w.]*(?:Error|Exception): ", text, re.MULTILINE))
        if found:
            text = text[found[-1].end():]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) if lines else type(exc).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script. Returns the process exit status."""
    parser = build_parser()
    # key=value overrides may also come after options (`evaluate CK --split val device=cpu`),
    # where argparse no longer fills the positional list: collect them here.
    args, extra = parser.parse_known_args(argv)
    if extra:
        if hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
            args.overrides = [*args.overrides, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    try:
        return int(args.func(args) or 0)
    except MaskDepthError as exc:
        print(f"maskdepth: error: {_one_line(exc)}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            where = f": {exc.filename}" if exc.filename else ""
            print(f"maskdepth: error: no space left on device{where}", file=sys.stderr)
        else:
            print(f"maskdepth: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        # a bare KeyboardInterrupt (Ctrl-C outside training) has an empty message, yet is truthy
        print(f"maskdepth: {_one_line(exc) if str(exc).strip() else 'interrupted'}", file=sys.stderr)
        return 130
    finally:
        # Flush before a possible os._exit in a DataLoader worker teardown.
        sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
