"""The study's protocol on real data (Gonthier, Gousseau & Ladjal, ICPR 2020 workshops; see PAPER.md).

From a pretrained base, fine-tune on a medium art dataset (RASTA-like: a folder of class sub-folders or a CSV,
multi-class) in the study's variants, with its optimiser (SGD, momentum 0.9, one learning rate per parameter group,
20 epochs, the epoch of lowest validation loss kept, centre crops):

- Mode A: new head LR 0.01, pretrained layers LR 0.001, trained twice (seeds 1 and 2);
- Mode B: ten times lower (0.001 / 0.0001);
- the end from scratch: conv2d0 … mixed3b kept and frozen, mixed4a … mixed5b re-initialised and trained;
- from scratch: the whole network from random weights (each from-scratch model's initialisation is kept).

Then the double fine-tuning grid: for each small multi-label dataset (Paintings- or IconArt-like CSV), the base and
the Mode A model fine-tuned on it (one LR 0.01 for all layers), scored by mAP; the medium models by top-1/3/5.
Every checkpoint is saved with ``ftprobe.save``; the models are compared with every metric (CKA and weights on the
medium test split, the top-k analyses on its train split, as the study), and one report is written.

    python examples/paper_study.py --medium rasta/ --small paintings.csv --small iconart.csv --out study/
    python examples/paper_study.py --preprocess caffe ...   # for Lucid-style (Keras/caffe) weights
    python examples/paper_study.py --smoke                    # CI: the demo's world and small CNN, 1 epoch

``--smoke`` downloads nothing: it exports the generated world of ``ftprobe demo`` to a temporary folder and uses the
demo's small CNN (pretrained for one epoch on the world's photos) as the base.
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

import ftprobe
from ftprobe.api import resolve_device
from ftprobe.core.loading import build_arch
from ftprobe.demo.findings import double_finding, findings_html, study_findings
from ftprobe.demo.protocol import LUCID, ImageTable, merge_results, read_table, save_checkpoint, study_layers
from ftprobe.demo.study import default_threads, finite_json, keep_pairs, write_outputs
from ftprobe.demo.train import evaluate, fit, freeze, replace_head, sgd

MODELS = ("pretrained", "mode_a1", "mode_a2", "mode_b", "end_scratch_init", "end_scratch", "scratch_init", "scratch")
PLOTTED = (("pretrained", "mode_a1"), ("mode_a1", "mode_a2"), ("mode_a1", "mode_b"),
           ("end_scratch_init", "end_scratch"), ("scratch_init", "scratch"),
           ("pretrained", "end_scratch"), ("pretrained", "scratch"))


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default="torchvision:googlenet:IMAGENET1K_V1", help="pretrained base model (spec)")
    p.add_argument("--medium", help="medium multi-class dataset: folder of class sub-folders, or CSV")
    p.add_argument("--medium-test", help="its test split (default: a seeded part of --medium)")
    p.add_argument("--small", action="append", default=[], help="small multi-label dataset CSV (repeatable)")
    p.add_argument("--out", default="paper-study", help="output folder (checkpoints, splits, report)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--size", type=int, default=224, help="shorter side resized (Lanczos), centre crop SIZE")
    p.add_argument("--preprocess", default="imagenet", choices=["imagenet", "caffe", "none"],
                   help="imagenet for torchvision weights, caffe (BGR, mean subtracted) for Lucid-style weights")
    p.add_argument("--lr-head", type=float, default=0.01)
    p.add_argument("--lr-backbone", type=float, default=0.001)
    p.add_argument("--lr-small", type=float, default=0.01, help="target stage of (double) fine-tuning, all layers")
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1, help="used when --medium-test is not given")
    p.add_argument("--k", type=int, action="append", help="top-k sizes (default 100 and 1000)")
    p.add_argument("--topk-limit", type=int, help="seeded subset of the train split for the top-k analyses")
    p.add_argument("--layers", nargs="+", choices=LUCID, help="the study's layers to compare (default: all 12)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch CPU threads (default: half the cores, at most 4)")
    p.add_argument("--smoke", action="store_true", help="CI: the demo world and its small CNN, 1 epoch, < 1 min")
    return p.parse_args(argv)


def smoke_setup(args: argparse.Namespace, tmp: Path) -> tuple[nn.Module, None, dict[str, Any]]:
    """Export a small demo world; pretrain the demo CNN on its photos for one epoch; tiny settings."""
    from ftprobe.demo.model import DemoNet
    from ftprobe.demo.variants import SPLITS
    from ftprobe.demo.world import OBJECTS, World, export_world

    world = World(32)
    paths = export_world(world, tmp, photos=range(180),
                         styles={"train": range(150), "test": range(SPLITS["test"], SPLITS["test"] + 60)},
                         objects=range(SPLITS["small_train"], SPLITS["small_train"] + 120))
    args.medium, args.medium_test, args.small = str(paths["styles/train"]), str(paths["styles/test"]), [
        str(paths["objects"])]
    args.epochs, args.size, args.batch_size, args.workers, args.k = 1, 32, 32, 0, [10]
    args.layers = args.layers or ["conv2d0", "mixed3b", "mixed4b", "mixed5b"]  # fewer report grids
    args.lr_head, args.lr_backbone, args.lr_small = 0.05, 0.005, 0.05
    base = DemoNet(len(OBJECTS), width=8, seed=args.seed)
    photos = read_table(paths["photos"])
    fit(base, sgd([(base.parameters(), 0.1)]), photos.loader(args.preprocess, 32, 32, shuffle=True), epochs=1)
    return base, None, {"width": 8}


def load_base(spec: str) -> tuple[nn.Module, str, dict[str, Any]]:
    """The base model, the architecture to save fine-tuned copies under, and its builder arguments."""
    loaded = ftprobe.load_model(spec)
    model = loaded.module
    if loaded.arch is None:
        raise SystemExit(f"--base {spec!r}: the variants rebuild the architecture (new heads, random initialisation); "
                         "pass a spec such as torchvision:googlenet:IMAGENET1K_V1 or a file saved by ftprobe.save")
    arch = ":".join(str(loaded.arch).split(":")[:2])  # "torchvision:googlenet" (no weights)
    kwargs: dict[str, Any] = {}
    if hasattr(model, "transform_input"):  # GoogLeNet / Inception: keep the input transform and drop aux heads
        kwargs = {"transform_input": bool(model.transform_input), "aux_logits": False, "init_weights": False}
        model.aux_logits, model.aux1, model.aux2 = False, None, None
    return model, arch, kwargs


def random_like(base: nn.Module, arch: str | None, kwargs: dict[str, Any], seed: int) -> nn.Module:
    """A randomly initialised model of the base's architecture (seeded)."""
    torch.manual_seed(seed)
    if arch is None:
        return type(base)(base.num_classes, base.width, seed=seed)  # the demo CNN
    return build_arch(arch, **({**kwargs, "init_weights": True} if kwargs else {}))


def train_variant(name: str, model: nn.Module, groups: list[tuple[Any, float]], data: dict[str, ImageTable],
                  args: argparse.Namespace, seed: int, frozen: Sequence[nn.Module] = ()) -> dict[str, Any]:
    """Fit with the study's optimiser, keep the best epoch on validation loss, score on the test split."""

    def load(table: ImageTable, train: bool) -> Any:
        return table.loader(args.preprocess, args.size, args.batch_size, shuffle=train, seed=seed,
                            workers=args.workers)

    hist = fit(model, sgd(groups), load(data["train"], True), epochs=args.epochs, val=load(data["val"], False),
               frozen=frozen, device=args.dev, log=print, name=name)
    return {"history": hist.to_dict(), "test": evaluate(model, load(data["test"], False), args.dev)}


def run(argv: list[str] | None = None) -> Path:
    args = parse(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    args.dev = resolve_device(args.device)
    torch.set_num_threads(args.threads or default_threads())
    tmp = tempfile.TemporaryDirectory(prefix="ftprobe-smoke-") if args.smoke else None
    if tmp is not None:
        base, arch, kwargs = smoke_setup(args, Path(tmp.name))
    elif not args.medium:
        raise SystemExit("--medium is required (or --smoke)")
    else:
        base, arch, kwargs = load_base(args.base)
    base.eval()
    medium = read_table(args.medium)
    if medium.multilabel:
        raise SystemExit(f"{args.medium}: the medium dataset must be multi-class (one label per image)")
    if args.medium_test:
        train, val = medium.split([1 - args.val_fraction, args.val_fraction], args.seed)
        test = read_table(args.medium_test)
    else:
        train, val, test = medium.split([1 - args.val_fraction - args.test_fraction, args.val_fraction,
                                         args.test_fraction], args.seed)
    data = {"train": train, "val": val, "test": test}
    n_cls = len(medium.classes)
    all_layers = study_layers(base)
    top = LUCID.index("mixed4a")
    upper = [path for lucid, path in all_layers.items() if LUCID.index(lucid) >= top]
    lower = [path for lucid, path in all_layers.items() if LUCID.index(lucid) < top]
    layers = {lucid: all_layers[lucid] for lucid in (args.layers or all_layers)}
    models: dict[str, nn.Module] = {"pretrained": base}
    record: dict[str, Any] = {}
    lr_h, lr_b = args.lr_head, args.lr_backbone
    for name, (h, b), seed in (("mode_a1", (lr_h, lr_b), 1), ("mode_a2", (lr_h, lr_b), 2),
                               ("mode_b", (lr_h / 10, lr_b / 10), 1)):
        m = replace_head(copy.deepcopy(base), n_cls, seed=args.seed + seed)
        head = {id(p) for p in _head(m)}
        record[name] = train_variant(name, m, [(_head(m), h), ([p for p in m.parameters() if id(p) not in head], b)],
                                     data, args, seed)
        models[name] = m
    end = replace_head(copy.deepcopy(base), n_cls, seed=args.seed + 3)
    fresh = random_like(base, arch, kwargs, args.seed + 3)
    for path in upper:
        end.get_submodule(path).load_state_dict(fresh.get_submodule(path).state_dict())
    models["end_scratch_init"] = copy.deepcopy(end)
    record["end_scratch"] = train_variant("end_scratch", end, [(end.parameters(), lr_h)], data, args, 3,
                                          frozen=freeze(end, lower))
    models["end_scratch"] = end
    scratch = replace_head(random_like(base, arch, kwargs, args.seed + 4), n_cls, seed=args.seed + 4)
    models["scratch_init"] = copy.deepcopy(scratch)
    record["scratch"] = train_variant("scratch", scratch, [(scratch.parameters(), lr_h)], data, args, 4)
    models["scratch"] = scratch
    for name, m in models.items():
        save_checkpoint(m, out / "checkpoints" / f"{name}.pt", arch, **{**kwargs, "num_classes": _classes(m)})
    grid = double_grid(args, base, models["mode_a1"], arch, kwargs, out)
    result = compare(args, models, data, list(layers.values()), out)
    findings = study_findings(result, base="pretrained", tuned="mode_a1", layers=list(layers.values()),
                              k=min(args.k or [100]))
    findings += [double_finding([g["single"]], [g["double"]], "mAP", g["dataset"]) for g in grid]
    acc = {f"{n} (medium test)": r["test"] for n, r in record.items()}
    acc.update({f"{g['route']}: {g['dataset']}": {"mAP": g[g["route"]]} for g in _routes(grid)})
    result.run["paper_study"] = {"findings": [f.to_dict() for f in findings], "accuracy": acc, "double_grid": grid,
                                 "smoke": args.smoke, "seconds": time.perf_counter() - t0}
    summary = [f"{name}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items() if k not in ("n", "loss"))
               for name, r in acc.items()] + [f.line() for f in findings]
    result.run = finite_json(result.run)
    report = write_outputs(result, out, summary,
                           extra_sections=[("The study's findings", findings_html(findings, acc), [])])
    print("\n".join(summary) + f"\nreport: {report} ({time.perf_counter() - t0:.0f} s)")
    if tmp is not None:
        tmp.cleanup()
    return report


def double_grid(args: argparse.Namespace, base: nn.Module, medium_model: nn.Module, arch: str | None,
                kwargs: dict[str, Any], out: Path) -> list[dict[str, Any]]:
    """Source → small against source → medium (Mode A) → small, one LR for all layers, mAP on the test split."""
    rows = []
    for path in args.small:
        table = read_table(path)
        if not table.multilabel:
            print(f"note: {path} is single-label; scored by top-1/3/5 instead of mAP")
        train, val, test = table.split([0.6, 0.2, 0.2], args.seed)
        data, row = {"train": train, "val": val, "test": test}, {"dataset": Path(path).stem}
        for route, start in (("single", base), ("double", medium_model)):
            m = replace_head(copy.deepcopy(start), len(table.classes), seed=args.seed + 5)
            r = train_variant(f"{route}:{row['dataset']}", m, [(m.parameters(), args.lr_small)], data, args, 5)
            row[route] = r["test"].get("mAP", r["test"].get("top1"))
            save_checkpoint(m, out / "checkpoints" / f"{route}_{row['dataset']}.pt", arch,
                            **{**kwargs, "num_classes": _classes(m)})
        rows.append(row)
    return rows


def compare(args: argparse.Namespace, models: dict[str, nn.Module], data: dict[str, ImageTable], layers: list[str],
            out: Path) -> ftprobe.Result:
    """CKA and weights on the medium test split, top-k analyses on its train split (one pass each), merged."""
    common = dict(labels=list(MODELS), layers=layers, pairs="all", preprocess=args.preprocess, size=args.size,
                  batch_size=args.batch_size, device=args.dev, workers=args.workers, seed=args.seed)
    ms = [models[n] for n in MODELS]
    test_csv = data["test"].write_csv(out / "splits" / "medium_test.csv")
    train_csv = data["train"].write_csv(out / "splits" / "medium_train.csv")
    first = ftprobe.compare(*ms, data=str(test_csv), metrics="cka,weight_l2", **common)
    second = ftprobe.compare(*ms, data=str(train_csv), metrics="topk_overlap,class_concentration",
                             options={"*": {"k": args.k or [100, 1000]}}, limit=args.topk_limit, **common)
    merged = merge_results(first, second, note="cka and weight_l2 ran on the medium test split")
    return keep_pairs(merged, PLOTTED)


def _head(m: nn.Module) -> list[nn.Parameter]:
    for attr in ("fc", "classifier", "head"):
        if isinstance(getattr(m, attr, None), nn.Module):
            return list(getattr(m, attr).parameters())
    raise TypeError(f"no classification head found on {type(m).__name__}")


def _classes(m: nn.Module) -> int:
    return [mod for mod in m.modules() if isinstance(mod, nn.Linear)][-1].out_features


def _routes(grid: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**g, "route": r} for g in grid for r in ("single", "double")]


if __name__ == "__main__":
    run()
