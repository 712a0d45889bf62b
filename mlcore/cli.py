"""Command line: ``python -m mlcore train | infer | evaluate | infer-slide | make-slide``.

    python -m mlcore train    --config CONFIG.json --out DIR [--stage all|sparse|correlation|completion]
                              [--epochs N] [--device auto|cpu|cuda] [--seed S] [--ensemble N] [--baseline single|sparse]
                              [--resume] [--no-tta]
    python -m mlcore infer    --checkpoint DIR/model.pt --image IMG [IMG ...] --mask MASK.npy [MASK ...] --out OUTDIR
                              [--label-set NAME ...] [--overlays NAME ...|all|none] [--no-tta]
    python -m mlcore evaluate --checkpoint DIR/model.pt --dataset NAME=FORMAT:PATH --label-set NAME [--against OTHER.pt] [--json]
                              [--concept-map CONCEPTS.json] [--no-tta]
    python -m mlcore infer-slide --checkpoint M --slide S --nuclei N.geojson --out OUT.geojson [--label-set NAME]
                              [--device auto|cpu|cuda] [--batch-size B] [--tta]

Test-time augmentation (the mean over the 8 flips and rotations of each crop) is on by default for tiles
(infer, evaluate) and off for slides: on the validation split it raised the cross-trained model's macro-F1 on
CoNSeP by 0.023 and on PanNuke by 0.031 in every one of five seeds, and it costs 8 forward passes per nucleus.
    python -m mlcore make-slide --shared-data DIR --out DIR [--nuclei N] [--mpp M] [--svs]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np

from mlcore.config import (MAX_ENSEMBLE, STAGE_NUMBER, STAGES, TTA_DEFAULT_SLIDES, TTA_DEFAULT_TILES, TTA_HELP,
                           ConfigError, DatasetSpec, TrainConfig, load_config_file)
from mlcore.types import DataError, NucleusDataset, file_part


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mlcore", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the cross-trained model (or a baseline)")
    train.add_argument("--config", required=True, type=Path, help="CONFIG.json: datasets and training settings")
    train.add_argument("--out", required=True, type=Path, help="output folder (model.pt, metrics.json, stageN.pt)")
    train.add_argument("--stage", default="all", choices=("all",) + STAGES,
                       help="run every stage, or one stage starting from the previous stage's checkpoint in --out")
    train.add_argument("--epochs", type=int, help="epochs for every stage run (overrides the config)")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"), help="default: the config's, else auto")
    train.add_argument("--seed", type=int, help="random seed (overrides the config)")
    train.add_argument("--tta", action=argparse.BooleanOptionalAction, default=TTA_DEFAULT_TILES,
                       help=f"score the validation nuclei with {TTA_HELP} as well, as infer and evaluate classify by "
                            f"default (metrics.json: label_sets_tta; default: {'on' if TTA_DEFAULT_TILES else 'off'}; "
                            "--no-tta: the one-view figures only)")
    train.add_argument("--ensemble", type=int, metavar="N",
                       help="train N models with the seeds SEED, SEED+1, ... on the same split and average their "
                            "predictions (two were about as good as the better of the two seeds: README), at N times "
                            "the training and inference time (overrides the config's model.ensemble, default 1)")
    train.add_argument("--baseline", choices=("single", "sparse"),
                       help="single: one model per dataset on its own label set; sparse: stage 1 only")
    train.add_argument("--resume", action="store_true",
                       help="go on with an interrupted training in --out (the same command otherwise): from its "
                            "last finished epoch (last.pt) or stage (stageN.pt), drawing as the uninterrupted "
                            "training would, so that it ends with the same model")

    infer = commands.add_parser("infer", help="classify the nuclei of one image or of many")
    infer.add_argument("--checkpoint", required=True, type=Path)
    infer.add_argument("--image", required=True, type=Path, nargs="+", dest="images", metavar="IMG",
                       help="one image or several (the model is loaded once for all of them)")
    infer.add_argument("--mask", required=True, type=Path, nargs="+", dest="masks", metavar="MASK",
                       help="each image's instance map, in the same order: .npy (H x W ints) or a label PNG")
    infer.add_argument("--out", required=True, type=Path)
    infer.add_argument("--label-set", nargs="+", dest="label_sets", metavar="NAME",
                       help="label sets to write (default: all of the model's)")
    infer.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    infer.add_argument("--tta", action=argparse.BooleanOptionalAction, default=TTA_DEFAULT_TILES,
                       help=f"{TTA_HELP} (default: {'on' if TTA_DEFAULT_TILES else 'off'}; --no-tta classifies each "
                            "crop once, 8 times faster)")
    infer.add_argument("--overlay-compression", type=int, default=0, choices=range(10), metavar="0-9",
                       help="zlib level of the overlay PNGs: 0 (default) stores them uncompressed, which is "
                            "fastest (about 3 MB per 1000 x 1000 tile); 1 halves the size and costs about as "
                            "much time as classifying 300 nuclei per overlay")
    infer.add_argument("--overlays", nargs="+", metavar="NAME|all|none",
                       help="the label sets to draw a full-resolution preview PNG for (outlines in class colours): "
                            "names, all, or none (default: the first label set written; a preview of a "
                            "1000 x 1000 tile is 3 MB)")
    infer.add_argument("--no-overlays", dest="overlays", action="store_const", const=["none"],
                       help="the same as --overlays none: write only the class arrays and the JSON")

    evaluate = commands.add_parser("evaluate", help="metrics of a checkpoint on a labelled dataset")
    evaluate.add_argument("--checkpoint", required=True, type=Path)
    evaluate.add_argument("--dataset", required=True, metavar="NAME=FORMAT:PATH")
    evaluate.add_argument("--label-set", required=True, dest="label_set", metavar="NAME",
                          help="the dataset's own label set (taxonomy); with --concept-map it need not be one "
                               "of the model's")
    evaluate.add_argument("--concept-map", type=Path, dest="concept_map", metavar="CONCEPTS.json",
                          help="score concept completion instead: how often the dataset's nuclei get a "
                               "concept-equivalent class in each of the model's other label sets")
    evaluate.add_argument("--against", type=Path, metavar="OTHER.pt",
                          help="also score another checkpoint (an earlier version, another seed) on the same nuclei: "
                               "the macro-F1 difference and its paired bootstrap 95%% interval")
    evaluate.add_argument("--json", action="store_true", help="print the metrics as JSON")
    evaluate.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    evaluate.add_argument("--tta", action=argparse.BooleanOptionalAction, default=TTA_DEFAULT_TILES,
                          help=f"{TTA_HELP} (default: {'on' if TTA_DEFAULT_TILES else 'off'}, as infer predicts; "
                               "--no-tta scores one pass)")

    infer_slide = commands.add_parser("infer-slide", help="classify the nuclei of a whole slide, streamed")
    infer_slide.add_argument("--checkpoint", required=True, type=Path)
    infer_slide.add_argument("--slide", required=True, type=Path, help="SVS, NDPI, MRXS, tiled TIFF, DICOM...")
    infer_slide.add_argument("--nuclei", required=True, type=Path,
                             help="the slide's nuclei: a QuPath GeoJSON export, or an instance-mask TIFF (.tif)")
    infer_slide.add_argument("--out", required=True, type=Path, help="classified nuclei, a QuPath GeoJSON")
    infer_slide.add_argument("--label-set", dest="label_set", metavar="NAME",
                             help="the label set whose classes are written (default: the model's first)")
    infer_slide.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    infer_slide.add_argument("--batch-size", type=int, default=512, dest="batch_size")
    infer_slide.add_argument("--tta", action=argparse.BooleanOptionalAction, default=TTA_DEFAULT_SLIDES,
                             help=f"{TTA_HELP} (default: {'on' if TTA_DEFAULT_SLIDES else 'off'} on a slide, whose "
                                  "millions of nuclei would take 8 times as long)")

    make_slide = commands.add_parser("make-slide", help="a test or benchmark slide built from the shared real tiles")
    make_slide.add_argument("--shared-data", required=True, type=Path, dest="shared_data",
                            help="the shared data folder (consep/, pannuke/)")
    make_slide.add_argument("--out", required=True, type=Path, help="output folder")
    make_slide.add_argument("--nuclei", type=int,
                            help="a benchmark slide of at least this many nuclei (default: the small test slide)")
    make_slide.add_argument("--mpp", type=float, default=0.25, help="microns per pixel recorded in the slide")
    make_slide.add_argument("--svs", action="store_true", help="write an Aperio SVS instead of a generic tiled TIFF")
    make_slide.add_argument("--dataset", default="consep", choices=("consep", "pannuke"))

    args = parser.parse_args(argv)
    commands_by_name = {"train": command_train, "infer": command_infer, "evaluate": command_evaluate,
                        "infer-slide": command_infer_slide, "make-slide": command_make_slide}
    try:
        return commands_by_name[args.command](args)
    except (ConfigError, DataError, ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:   # an output that cannot be written: a read-only folder, a file where a folder goes
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def writable_folder(path: Path, option: str) -> None:
    """``path`` is a folder this process can write into (made if missing), checked before any work."""
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{option} {path}: is a file, not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{option} {path}: cannot be made ({exc.strerror or exc})") from None
    if not os.access(path, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: this user may not write into it")


def writable_file(path: Path, option: str) -> None:
    """``path`` can be written as a file (its missing folders can be made there), checked before any work and
    without making anything."""
    if path.is_dir():
        raise ConfigError(f"{option} {path}: is a folder; name the file to write")
    existing = path.absolute().parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {path}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {path}: this user may not write into {existing}")


# ----------------------------------------------------------------------------------------------- train


def read_datasets(specs: list[DatasetSpec], progress=None) -> list[NucleusDataset]:
    from mlcore.readers import nucleus_noun, open_dataset
    from mlcore.types import left_out_text

    datasets = []
    for spec in specs:
        reader = open_dataset(spec.format, spec.path, name=spec.name, class_names=spec.class_names,
                              label_set_name=spec.label_set or spec.name, labelled=spec.labelled)
        images = []
        left_out: dict[str, int] = {}
        for image in reader:
            images.append(image)
            for reason, count in image.left_out.items():
                left_out[reason] = left_out.get(reason, 0) + count
            if spec.max_images is not None and len(images) >= spec.max_images:
                break
        if progress:
            note = left_out_text(left_out, nucleus_noun(spec.format))
            progress(f"read {spec.name}: {len(images)} images ({spec.format}, {spec.path})"
                     + (f"; {note}" if note else ""))
        datasets.append(NucleusDataset(spec.name, spec.format, reader.label_set, images))
    return datasets


class TqdmProgress:
    """A tqdm bar per (stage, epoch) showing loss and tqdm's own ETA; the callback train_all calls."""

    def __init__(self, enabled: bool = True):
        from tqdm import tqdm

        self.tqdm = tqdm
        self.enabled = enabled
        self.bar = None
        self.key = None

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        if event.get("stage") == "crops":
            return
        key = (event.get("member"), event["stage"], event["epoch"])
        member = f"model {event['member']}/{event['members']}, " if event.get("member") else ""
        if event["steps"] == 0:
            self.close()
            print(f"{member}stage {event['stage']}: {event['epochs']} epochs", file=sys.stderr, flush=True)
            return
        if key != self.key:
            self.close()
            self.key = key
            self.bar = self.tqdm(total=event["steps"], desc=f"{member}{event['stage']} {event['epoch']}/{event['epochs']}",
                                 unit="batch", file=sys.stderr, leave=True, dynamic_ncols=True)
        self.bar.update(event["step"] - self.bar.n)
        eta = event.get("eta_s")
        postfix = {}
        if event.get("epoch_loss") is not None:   # the epoch's mean so far: one batch's swings with its nuclei
            postfix["loss"] = f"{event['epoch_loss']:.4f}"
        if eta is not None and not math.isnan(eta):
            postfix["stage_eta"] = f"{eta:.0f}s"
        self.bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.bar, self.key = None, None


def _metrics_lines(metrics: dict) -> list[str]:
    return [f"  {name}: n={m['n']} accuracy={m['accuracy']:.3f} macro_f1={m['macro_f1']:.3f} "
            f"weighted_f1={m['weighted_f1']:.3f}" for name, m in metrics.items()]


def _report_validation(result, table, tta: bool, metrics_path: Path, say) -> dict:
    """Print the trained model's validation metrics, one view (as training measured them) and, with ``tta``,
    with test-time augmentation, which metrics.json then carries as ``label_sets_tta``; returns those."""
    from mlcore.train import evaluate

    for member in result.members:   # an ensemble's: each model alone first, then their average
        say(f"validation, the model of seed {member['seed']} alone, one view:")
        for line in _metrics_lines(member["metrics"]):
            say(line)
    say("validation, one view" + (f", the ensemble of {len(result.members)} seeds:" if result.members else ":"))
    for line in _metrics_lines(result.metrics):
        say(line)
    if not tta or not len(result.val_rows):
        return {}
    tta_metrics = evaluate(result.model, table, result.val_rows, tta=True)
    say("validation, test-time augmentation (8 views, as infer and evaluate classify by default):")
    for line in _metrics_lines(tta_metrics):
        say(line)
    payload = json.loads(metrics_path.read_text())
    metrics_path.write_text(json.dumps({**payload, "label_sets_tta": tta_metrics}, indent=1))
    return tta_metrics


def command_train(args) -> int:
    specs, config, _ = load_config_file(args.config)  # before importing torch: config errors come fast
    if args.epochs is not None:
        if args.epochs < 1:
            raise ConfigError("--epochs must be at least 1")
        config.epochs = {stage: args.epochs for stage in STAGES}
    if args.device:
        config.device = args.device
    if args.seed is not None:
        config.seed = args.seed
        config.split_seed = args.seed
    if args.ensemble is not None:
        if not 1 <= args.ensemble <= MAX_ENSEMBLE:
            raise ConfigError(f"--ensemble {args.ensemble}: give 1 to {MAX_ENSEMBLE} models")
        config.ensemble = args.ensemble
    config.validate()
    if args.resume and not _has_checkpoints(args.out):
        # Before the data is read (minutes) and without making the folder (a typo left an empty one behind).
        raise ConfigError(f"--resume: {args.out} holds no checkpoint of this training (last.pt or a stage's "
                          "stageN.pt); train without --resume")
    writable_folder(args.out, "--out")   # before the data is read and an epoch is trained
    if args.resume and args.stage != "all":
        raise ConfigError("--resume goes on with the stages the command trains; leave --stage out")
    if args.resume and args.baseline == "single":
        raise ConfigError("--resume goes on with the merged model or --baseline sparse; --baseline single trains "
                          "one short model per dataset: run it again")
    from mlcore.data import build_table, default_cache_dir, split_by_group, split_notes
    from mlcore.distributed import init_distributed
    from mlcore.train import train_all

    context = init_distributed()
    say = (lambda text: print(text, file=sys.stderr, flush=True)) if context.is_main else (lambda text: None)
    if not any(spec.labelled for spec in specs):
        raise ConfigError("config field datasets: at least one dataset must be labelled")

    started = time.perf_counter()
    datasets = read_datasets(specs, say)
    cache_dir = Path(config.cache_dir) if config.cache_dir else default_cache_dir() / "crops"
    table = build_table(datasets, cache_dir=cache_dir, crop_size=config.crop_spec)
    say(f"{len(table)} nuclei, label sets: {', '.join(f'{s.name} ({len(s)})' for s in table.label_sets)} "
        f"[{time.perf_counter() - started:.1f}s]")
    for note in split_notes(table, split_by_group(table, config.val_fraction, config.split_seed)[1]):
        say(f"note: {note}")
    progress = TqdmProgress(enabled=context.is_main)

    if args.baseline == "single":
        return _train_single(args, table, config, progress, say)

    stages = STAGES if args.stage == "all" else (args.stage,)
    if args.baseline == "sparse":
        if args.stage not in ("all", "sparse"):
            raise ConfigError("--baseline sparse trains stage 1 only; leave --stage out")
        stages = ("sparse",)
    init, history = None, None
    if args.resume:
        init, stages, history = _resume_point(args.out, stages, config, table)
        say(f"resuming from {init.name}: stage{'s' if len(stages) > 1 else ''} {', '.join(stages)} to go")
    elif stages[0] != "sparse":
        init = args.out / f"stage{STAGE_NUMBER[stages[0]] - 1}.pt"
        if not init.is_file():
            raise ConfigError(f"--stage {stages[0]} starts from {init}, which does not exist: "
                              f"run the previous stage first")
    if len(table.label_sets) < 2 and stages != ("sparse",):
        raise ConfigError("the correlation and completion stages need at least two labelled datasets with "
                          "different label sets (use --baseline sparse for one)")
    try:
        result = train_all(table, config=config, stages=stages, progress=progress, init_checkpoint=init,
                           out_dir=args.out, history=history)
    except KeyboardInterrupt:
        progress.close()
        if context.is_main and (args.out / "last.pt").is_file():
            say(f"interrupted: the same command with --resume goes on from the last finished epoch in {args.out}")
        elif context.is_main:
            say("interrupted before the first epoch ended: nothing to resume from; run the command again")
        return 130
    progress.close()
    if context.is_main:
        say(f"wrote {result.checkpoint_path} and {args.out / 'metrics.json'} "
            f"[{time.perf_counter() - started:.1f}s]")
        _report_validation(result, table, args.tta, args.out / "metrics.json", say)
    if context.enabled:
        import torch.distributed as dist

        dist.destroy_process_group()
    return 0


# Settings that may differ between a training and its resumption: where and how fast it runs, not what it draws.
RESUMABLE_CHANGES = ("device", "num_threads", "cache_dir")


def _has_checkpoints(out: Path) -> bool:
    names = ("last.pt", *(f"stage{number}.pt" for number in STAGE_NUMBER.values()))
    return out.is_dir() and any((out / name).is_file() for name in names)


def _resume_point(out: Path, stages: tuple[str, ...], config: TrainConfig, table) -> tuple[Path, tuple, list]:
    """Where ``train --resume`` goes on in ``out``: the checkpoint, the stages left and the history so far. The
    unfinished stage of ``last.pt`` (written after every epoch of a single model), or else the stage after the last
    finished one (``stageN.pt``); the settings and the validation split must be the interrupted training's."""
    from mlcore.checkpoint import load_checkpoint
    from mlcore.data import split_by_group

    point = None
    last = out / "last.pt"
    if config.ensemble == 1 and last.is_file():   # an ensemble writes stage checkpoints only
        checkpoint = load_checkpoint(last)
        if not checkpoint.stage_complete and checkpoint.stage in stages:
            point = last, checkpoint, stages[stages.index(checkpoint.stage):]
    for stage in reversed(stages if point is None else ()):
        path = out / f"stage{STAGE_NUMBER[stage]}.pt"
        if path.is_file():
            remaining = stages[stages.index(stage) + 1:]
            if not remaining:
                raise ConfigError(f"--resume: the training in {out} finished ({path.name} is its last stage's); "
                                  "nothing to resume")
            point = path, load_checkpoint(path), remaining
            break
    if point is None:
        raise ConfigError(f"--resume: {out} holds no checkpoint of this training (last.pt or a stage's stageN.pt); "
                          "train without --resume")
    path, checkpoint, remaining = point
    mine, theirs = (
        {k: v for k, v in c.to_dict().items() if k not in RESUMABLE_CHANGES} for c in (config, checkpoint.config))
    changed = [key for key in mine if json.dumps(mine[key], sort_keys=True) != json.dumps(theirs.get(key), sort_keys=True)]
    if changed:
        raise ConfigError(f"--resume: {path.name} was trained with other settings ("
                          + "; ".join(f"{key} {theirs.get(key)!r}, now {mine[key]!r}" for key in changed)
                          + "): give the command and config it was started with")
    extra = checkpoint.raw.get("extra", {})
    _, val_rows = split_by_group(table, config.val_fraction, config.split_seed)
    if "val_rows" in extra and not np.array_equal(np.asarray(extra["val_rows"]), val_rows):
        raise ConfigError("--resume: the datasets differ from those the interrupted training read (its validation "
                          "nuclei are not the same): give the config it was started with")
    return path, remaining, list(extra.get("history") or [])


def _train_single(args, table, config: TrainConfig, progress, say) -> int:
    """One sparse-stage model per labelled dataset on its own label set, same split and settings."""
    from mlcore.data import split_by_group
    from mlcore.train import single_baseline_config, train_all

    combined = {"baseline": "single", "label_sets": {}, "models": {}, **({"label_sets_tta": {}} if args.tta else {})}
    for index, name in enumerate(table.dataset_names):
        rows = np.flatnonzero(table.dataset_index == index)
        known_sets = [d for d in range(len(table.label_sets)) if (table.labels[rows, d] != -1).any()]
        if not known_sets:
            continue  # an unlabelled dataset has no single-dataset model
        own = [table.label_sets[d] for d in known_sets]
        sub_table = table.subset(rows).with_label_sets(own)
        say(f"single-dataset model for {name} ({', '.join(s.name for s in own)})")
        train_rows, val_rows = split_by_group(sub_table, config.val_fraction, config.split_seed)
        result = train_all(sub_table, config=single_baseline_config(config, len(train_rows)), stages=("sparse",),
                           progress=progress, out_dir=args.out / name, train_rows=train_rows, val_rows=val_rows)
        progress.close()
        combined["models"][name] = str(result.checkpoint_path)
        combined["label_sets"].update(result.metrics)
        tta_metrics = _report_validation(result, sub_table, args.tta, args.out / name / "metrics.json", say)
        if args.tta:
            combined["label_sets_tta"].update(tta_metrics)
    (args.out / "metrics.json").write_text(json.dumps(combined, indent=1))
    say(f"wrote {args.out / 'metrics.json'}")
    return 0


# ----------------------------------------------------------------------------------------------- infer


def _image_mask_pairs(images: list[Path], masks: list[Path]) -> list[tuple[Path, Path]]:
    """``--image`` and ``--mask`` paired in order, checked before the model loads: a batch must not stop at
    its 900th image for a typo, or write two images' outputs under one name."""
    if len(images) != len(masks):
        raise ConfigError(f"--image gives {len(images)} files and --mask {len(masks)}: give one mask per image, "
                          f"in the same order")
    for path in [*images, *masks]:
        if not path.is_file():
            raise DataError(path, "file not found")
    seen: dict[str, Path] = {}
    for image in images:
        stem = file_part(image.stem, "image")
        if stem in seen:
            raise ConfigError(f"--image {seen[stem]} and {image} would write the same output files ({stem}_...): "
                              f"rename one, or classify them into different --out folders")
        seen[stem] = image
    return list(zip(images, masks))


def overlay_label_sets(asked: list[str] | None, written: list[str]) -> list[str]:
    """The label sets ``--overlays`` draws a preview for, from those written. One by default: four
    full-resolution previews made a 1000 x 1000 tile's outputs 14 MB and took 25-50 ms of its 300-350 ms on
    the fast machines, for pictures that a batch of tiles rarely needs all of."""
    if asked is None:
        return written[:1]
    if len(asked) == 1 and asked[0] in ("all", "none") and asked[0] not in written:
        return list(written) if asked[0] == "all" else []
    for name in asked:
        if name not in written:
            raise ConfigError(f"--overlays {name!r} is not a label set written ({', '.join(written)}): give "
                              f"their names, all or none")
    return list(dict.fromkeys(asked))


def command_infer(args) -> int:
    from tqdm import tqdm

    from mlcore.checkpoint import load_checkpoint
    from mlcore.infer import infer_and_write
    from mlcore.predict import resolve_device

    pairs = _image_mask_pairs(args.images, args.masks)
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(args.checkpoint, device)
    model = checkpoint.model
    names = [s.name for s in model.label_sets]
    for name in args.label_sets or []:
        if name not in names:
            raise ConfigError(f"--label-set {name!r} is not one of the model's label sets ({', '.join(names)})")
    written = args.label_sets or names
    overlays = overlay_label_sets(args.overlays, written)
    writable_folder(args.out, "--out")   # made only once every option is known good
    started = time.perf_counter()
    count = files = 0
    failed: list[DataError] = []
    bar = tqdm(total=len(pairs), unit="image", file=sys.stderr, dynamic_ncols=True, desc="classify",
               disable=len(pairs) == 1)
    # The next image is read, and the one before written, while this one is classified (infer_and_write).
    for tile in infer_and_write(model, pairs, args.out, names=args.label_sets, overlays=overlays,
                                overlay_compression=args.overlay_compression, device=device, tta=args.tta):
        if tile.error is not None:
            if len(pairs) == 1:
                raise tile.error
            # One unreadable tile does not cost the batch the others: named now, counted at the end.
            bar.write(f"skipped: {tile.error}", file=sys.stderr)
            failed.append(tile.error)
        else:
            files += len(tile.outputs)
            count += len(tile.result.geometry.ids)
            bar.set_postfix({"nuclei": count}, refresh=False)
        bar.update()
    bar.close()
    seconds = time.perf_counter() - started
    images = f" in {len(pairs) - len(failed)} images" if len(pairs) > 1 else ""
    views = "8 views each (test-time augmentation; --no-tta: one, 8 times faster)" if args.tta else "one view each"
    print(f"{count} nuclei{images} in {seconds:.2f}s ({count / seconds if seconds else 0:.0f} nuclei/s, {views}); "
          f"wrote {files} files to {args.out}", file=sys.stderr)
    if len(overlays) < len(written) and args.overlays is None:  # --overlays leaves out what it was told to
        print(f"previews of {overlays[0]} only: --overlays all (or names) draws the other label sets' too",
              file=sys.stderr)
    if failed:
        print(f"error: {len(failed)} of {len(pairs)} images could not be read and have no outputs: "
              f"{', '.join(str(exc.path) for exc in failed)}", file=sys.stderr)
        return 2
    return 0


# -------------------------------------------------------------------------------------------- slides


def command_infer_slide(args) -> int:
    from tqdm import tqdm

    from mlcore.checkpoint import load_checkpoint
    from mlcore.infer import infer_slide
    from mlcore.predict import resolve_device
    from mlcore.slide_nuclei import (SlideNucleus, inside_slide, iter_geojson_nuclei, iter_mask_nuclei,
                                     write_geojson_nuclei)
    from mlcore.slides import open_slide, scale_to_model

    writable_file(args.out, "--out")   # before hours of classifying a slide
    device = resolve_device(args.device)
    model = load_checkpoint(args.checkpoint, device).model
    names = [s.name for s in model.label_sets]
    name = args.label_set or names[0]
    if name not in names:
        raise ConfigError(f"--label-set {name!r} is not one of the model's label sets ({', '.join(names)})")
    label_set = model.label_sets[names.index(name)]
    if args.batch_size < 1:
        raise ConfigError("--batch-size must be at least 1")
    if args.nuclei.suffix.lower() in (".tif", ".tiff"):
        nuclei = iter_mask_nuclei(args.nuclei)
    else:
        nuclei = iter_geojson_nuclei(args.nuclei)
    started = time.perf_counter()
    counts: dict = {}
    with open_slide(args.slide) as slide:
        nuclei = inside_slide(nuclei, slide.info.width, slide.info.height, counts)
        scale = scale_to_model(slide.info.mpp, model.mpp)
        print(f"{args.slide.name}: {slide.info.width} x {slide.info.height} px, MPP {slide.info.mpp or 'unknown'}; "
              f"model MPP {model.mpp}: {1 / scale:.3g} model pixels per slide pixel", file=sys.stderr)
        bar = tqdm(unit=" nuclei", file=sys.stderr, dynamic_ncols=True, desc="classify")

        def classified():
            for batch in infer_slide(model, slide, nuclei, batch_size=args.batch_size, device=device, tta=args.tta,
                                      read_ahead=True):
                prediction = batch.predictions[name]
                for row, nucleus in enumerate(batch.nuclei):
                    label = int(prediction.labels[row])
                    measurements = {**nucleus.measurements, f"{name}: probability": float(prediction.probs[row, label])}
                    yield (SlideNucleus(nucleus.outline, nucleus.bbox, nucleus.centroid, nucleus.area,
                                        label_set.classes[label], measurements),
                           label_set.classes[label], label_set.colors[label])
                bar.update(len(batch.nuclei))

        args.out.parent.mkdir(parents=True, exist_ok=True)
        partial = args.out.with_name(args.out.name + ".partial")
        try:
            count = write_geojson_nuclei(partial, classified())
            partial.replace(args.out)  # nothing half-written under the output's name
        finally:
            bar.close()
            partial.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    print(f"{count} nuclei in {seconds:.1f}s ({count / seconds if seconds else 0:.0f} nuclei/s); wrote {args.out}",
          file=sys.stderr)
    if counts.get("outside"):
        print(f"left out {counts['outside']} detections of {args.nuclei.name} that lie wholly right of or below "
              f"the slide", file=sys.stderr)
    return 0


def command_make_slide(args) -> int:
    from tqdm import tqdm

    from mlcore.slide_fixtures import build_benchmark_slide, build_test_slide

    writable_folder(args.out, "--out")
    started = time.perf_counter()
    if args.nuclei is None:
        paths = build_test_slide(args.shared_data, args.out, mpp=args.mpp, svs=args.svs, dataset=args.dataset)
    else:
        bars: dict[str, tqdm] = {}

        def progress(what: str, done: int, total: int) -> None:
            if what not in bars:
                for bar in bars.values():
                    bar.close()
                bars[what] = tqdm(total=total, desc=what, unit=" rows", file=sys.stderr, dynamic_ncols=True)
            bars[what].update(done + 1 - bars[what].n)

        try:
            paths = build_benchmark_slide(args.out, args.nuclei, shared_data=args.shared_data, mpp=args.mpp,
                                          svs=args.svs, dataset=args.dataset, progress=progress)
        finally:
            for bar in bars.values():
                bar.close()
    manifest = json.loads(paths["manifest"].read_text())
    print(f"{manifest['nuclei']} nuclei on a {manifest['width']} x {manifest['height']} slide at "
          f"{manifest['mpp']} um/px in {time.perf_counter() - started:.1f}s:", file=sys.stderr)
    for key, path in paths.items():
        print(f"  {key}: {path}", file=sys.stderr)
    return 0


# -------------------------------------------------------------------------------------------- evaluate


def parse_dataset_argument(value: str) -> tuple[str, str, Path]:
    name, sep, rest = value.partition("=")
    fmt, sep2, path = rest.partition(":")
    if not sep or not sep2 or not name or not fmt or not path:
        raise ConfigError(f"--dataset {value!r}: expected NAME=FORMAT:PATH, e.g. consep=hovernet:data/consep")
    return name, fmt, Path(path)


def command_evaluate(args) -> int:
    from mlcore.checkpoint import load_checkpoint
    from mlcore.data import build_table
    from mlcore.predict import resolve_device
    from mlcore.readers import read_dataset

    concept_map = None
    if args.concept_map is not None:
        from mlcore.concepts import load_concept_map

        concept_map = load_concept_map(args.concept_map)   # before the checkpoint: map errors come fast
    name, fmt, path = parse_dataset_argument(args.dataset)
    device = resolve_device(args.device)
    checkpoint = load_checkpoint(args.checkpoint, device)
    model = checkpoint.model
    by_name = {s.name: s for s in model.label_sets}
    if args.label_set not in by_name and concept_map is None:
        raise ConfigError(f"--label-set {args.label_set!r} is not one of the model's label sets "
                          f"({', '.join(by_name)}); with --concept-map any dataset's own label set can be scored")
    dataset = read_dataset(fmt, path, name=name, label_set_name=args.label_set)
    if dataset.label_set is None:
        raise ConfigError(f"dataset {name!r} has no labels to evaluate against")
    model_set = by_name.get(args.label_set)
    if model_set is not None and dataset.label_set.classes != model_set.classes:
        raise ConfigError(f"dataset {name!r} has classes {list(dataset.label_set.classes)}, but label set "
                          f"{model_set.name!r} has {list(model_set.classes)}: they must match (same names, same order)")
    other = None
    if args.against is not None:
        if concept_map is not None:
            raise ConfigError("--against compares macro-F1 in one label set; it does not combine with --concept-map")
        other = load_checkpoint(args.against, device).model
        if args.label_set not in {s.name for s in other.label_sets}:
            raise ConfigError(f"--against {args.against}: label set {args.label_set!r} is not one of its "
                              f"label sets ({', '.join(s.name for s in other.label_sets)})")
    table = build_table([dataset], [dataset.label_set], cache_dir=None, crop_size=model.crop_spec)
    if concept_map is not None:
        return _print_completion(model, table, concept_map, name, args.json, device, args.tta)
    from mlcore.train import compare_models, evaluate_with_logits, evaluation_rows

    label_set = model_set
    nuclei = len(evaluation_rows(model, table))
    with nuclei_bar(nuclei * (forward_passes(model) + (forward_passes(other) if other is not None else 0))) as bar:
        reports, outputs = evaluate_with_logits(model, table, device=device, tta=args.tta, progress=bar.update)
        if other is not None:
            try:   # the model's logits once: with TTA they are 8 forward passes a nucleus
                compared = compare_models(model, other, table, device=device, tta=args.tta, outputs=outputs,
                                          progress=bar.update)[label_set.name]
            except ValueError as exc:
                raise ConfigError(f"--against {args.against}: {exc}") from None
    metrics = reports[label_set.name]
    keys = ("n", "accuracy", "macro_f1", "weighted_f1", "per_class", "confusion")
    report = {"label_set": label_set.name, "tta": bool(args.tta), **{key: metrics[key] for key in keys}}
    if other is not None:
        # The path as typed: two runs' checkpoints share a file name (model.pt, stage1.pt).
        report["against"] = {"checkpoint": str(args.against), **{key: compared[key] for key in (
            "previous_macro_f1", "previous_accuracy", "difference_interval")}}
    if args.json:
        print(json.dumps(report))
    else:
        print(f"{label_set.name} on {name}: n={report['n']} accuracy={report['accuracy']:.4f} "
              f"macro_f1={report['macro_f1']:.4f} weighted_f1={report['weighted_f1']:.4f}"
              f"{' (test-time augmentation, 8 views; --no-tta: one)' if args.tta else ' (one view, --no-tta)'}")
        width = max(len(c) for c in label_set.classes)
        print(f"{'class':<{width}}  precision  recall  f1      support")
        for class_name, row in report["per_class"].items():
            print(f"{class_name:<{width}}  {row['precision']:.4f}     {row['recall']:.4f}  {row['f1']:.4f}  {row['support']}")
        print("confusion (rows = true, columns = predicted):")
        for row in report["confusion"]:
            print("  " + " ".join(f"{v:6d}" for v in row))
        if other is not None:
            print(against_line(report))
    return 0


def forward_passes(model) -> int:
    """How many times each nucleus goes through ``model``: once per member of a seed ensemble."""
    return len(getattr(model, "members", None) or [model])


def nuclei_bar(total: int):
    """``evaluate``'s bar of the nuclei classified (scoring thousands of them, 8 views each, takes minutes on a
    CPU), on stderr beside the report."""
    from tqdm import tqdm

    return tqdm(total=total, unit=" nuclei", file=sys.stderr, dynamic_ncols=True, desc="classify")


def against_line(report: dict) -> str:
    """``evaluate --against``'s verdict: the difference, its interval, and whether chance explains it."""
    against = report["against"]
    low, high = against["difference_interval"]
    verdict = ("higher beyond chance" if low > 0 else "lower beyond chance" if high < 0
               else "within chance: these nuclei cannot tell the two apart")
    return (f"against {against['checkpoint']}: macro_f1 {report['macro_f1']:.4f} vs {against['previous_macro_f1']:.4f}, "
            f"difference {report['macro_f1'] - against['previous_macro_f1']:+.4f} (95% interval {low:+.4f} to "
            f"{high:+.4f}): {verdict}")


def _print_completion(model, table, concept_map, dataset_name: str, as_json: bool, device, tta: bool = False) -> int:
    """``evaluate --concept-map``: completion of the dataset's labelled nuclei into the model's other label sets."""
    from mlcore.concepts import ConceptMapError, class_names_of, format_completion, model_completion
    from mlcore.types import MISSING

    source = table.label_sets[0]
    in_play = {s.name: s.classes for s in model.label_sets}
    in_play[source.name] = source.classes
    # Not strict: one map (benchmarks/configs/concepts.json) serves models trained on any of its
    # datasets; a label set that is neither the model's nor the dataset's is named on stderr.
    for note in concept_map.check(in_play, strict=False):
        print(f"note: {note}", file=sys.stderr)
    targets = concept_map.targets_for(source.name, [s.name for s in model.label_sets])
    if not targets:
        raise ConceptMapError(f"{concept_map.source}: no concept links label set {source.name!r} with one of the "
                              f"model's other label sets ({', '.join(s.name for s in model.label_sets)})")
    rows = np.flatnonzero(table.labels[:, 0] != MISSING)
    truth = class_names_of(table.labels[rows, 0], source.classes)
    with nuclei_bar(len(rows) * forward_passes(model)) as bar:
        report = model_completion(model, table.crops[rows], truth, source.name, concept_map, device=device,
                                  tta=tta, progress=bar.update)
    report = {"dataset": dataset_name, "label_set": source.name, "labelled": int(len(rows)), "tta": bool(tta),
              **report}
    if as_json:
        print(json.dumps(report))
    else:
        print(format_completion(report, f"{dataset_name} ({source.name}, {len(rows)} labelled nuclei): "
                                         f"concept completion into {', '.join(report['targets'])}"))
    return 0
