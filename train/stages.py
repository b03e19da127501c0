"""FVQ-Rater's two training stages on prepared datasets: Stage I (level words, cross-entropy), Stage II (MOS L1 with
LoRA, a pairwise ranking hinge), early stopping on val SRCC, and the linear score calibration."""

from __future__ import annotations

import math
import random
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from engines.rater import level_index
from train.clip_features import Dataset
from train.evaluate import evaluate_predictions


@dataclass
class StageSettings:
    epochs: int = 30
    lr: float = 1e-3
    batch_size: int = 32
    weight_decay: float = 0.01
    warmup_steps: int = 20
    patience: int = 6  # epochs without a better val SRCC before stopping
    max_steps_per_epoch: int | None = None
    rank_weight: float = 0.0  # Stage II: weight of a pairwise ranking hinge (in MOS points) next to the L1
    keep_last: bool = False  # keep the last epoch's weights, not the best-monitored one (no held-out split)


DIMS_WEIGHT = 0.5  # the dimension head's L1 next to the MOS L1 in Stage II (when the corpus labels dimensions)


def rank_loss(score: torch.Tensor, mos: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Pairwise hinge over a batch: every pair whose MOS differs by more than `margin` should be ordered the same
    way by the score, by at least the MOS gap (capped at 10 points). The L1 alone barely ranks the crowded top of
    the MOS scale (many mildly distorted clips sit at 90-97)."""
    ds = score[:, None] - score[None, :]
    dm = mos[:, None].float() - mos[None, :].float()
    valid = (dm > margin).float()
    hinge = torch.relu(dm.clamp(max=10.0) - ds) * valid
    return hinge.sum() / valid.sum().clamp(min=1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict_clips(rater, data: Dataset, batch_size: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(clip raw scores, clip expected levels, window raw scores): window outputs averaged per clip."""
    rater.model.eval()
    scores, expected = [], []
    centres = torch.tensor([10.0, 30.0, 50.0, 70.0, 90.0])
    for s in range(0, len(data), batch_size):
        out = rater.predict(data.batch(np.arange(s, min(len(data), s + batch_size))))
        scores.append(out["score"])
        expected.append((torch.from_numpy(out["level_logits"]).softmax(-1) * centres).sum(-1).numpy())
    w_scores, w_expected = np.concatenate(scores), np.concatenate(expected)
    n = len(data.clip_mos)
    counts = np.bincount(data.clip_of, minlength=n).clip(min=1)
    return (np.bincount(data.clip_of, w_scores, n) / counts, np.bincount(data.clip_of, w_expected, n) / counts, w_scores)


def train_stage(rater, stage: int, train: Dataset, val: Dataset | None, settings: StageSettings, seed: int,
                log=print) -> dict[str, Any]:
    """Trains one stage; keeps the weights of the epoch with the best val SRCC (early stopping)."""
    from train.model import stage1_loss, stage2_loss

    model = rater.model
    model.set_stage(stage)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train) / settings.batch_size)
    if settings.max_steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, settings.max_steps_per_epoch)
    total = max(1, steps_per_epoch * settings.epochs)

    def lr_at(step: int) -> float:  # linear warm-up, then cosine to 5%
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        t = (step - settings.warmup_steps) / max(1, total - settings.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    levels = torch.tensor([level_index(float(m)) for m in train.mos])
    rng = np.random.default_rng(seed + stage)
    best: dict[str, Any] = {"srcc": -math.inf, "epoch": -1}
    best_state = None
    history = []
    for epoch in range(settings.epochs):
        model.train()
        order = rng.permutation(len(train))
        losses = []
        bar = tqdm(range(steps_per_epoch), desc=f"stage {stage} epoch {epoch + 1}/{settings.epochs}",
                   leave=False, file=sys.stderr, disable=None)
        for step in bar:
            idx = order[step * settings.batch_size:(step + 1) * settings.batch_size]
            if len(idx) == 0:
                break
            out = model(rater.tensors(train.batch(idx)))
            if stage == 1:
                loss = stage1_loss(out, levels[idx])
            elif train.dims is not None:
                d = train.dims[idx]
                loss = stage2_loss(out, torch.from_numpy(train.mos[idx]), torch.from_numpy(np.nan_to_num(d)),
                                   torch.from_numpy(np.isfinite(d)), dims_weight=DIMS_WEIGHT)
            else:
                loss = stage2_loss(out, torch.from_numpy(train.mos[idx]))
            if stage == 2 and settings.rank_weight > 0:
                loss = loss + settings.rank_weight * rank_loss(out["score"], torch.from_numpy(train.mos[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            bar.set_postfix(loss=f"{np.mean(losses):.3f}")
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else 0.0}
        monitor = val if val is not None and len(val.clip_mos) >= 3 else train
        raw, expected, _ = predict_clips(rater, monitor)
        metrics = evaluate_predictions(expected if stage == 1 else raw, monitor.clip_mos)
        row.update({f"{'val' if monitor is val else 'train'}_{k}": v for k, v in metrics.items() if k != "n"})
        history.append(row)
        log(f"stage {stage} epoch {epoch + 1}: " + ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
                                                             for k, v in row.items() if k != "epoch"))
        if metrics["srcc"] > best["srcc"]:
            best = {"srcc": metrics["srcc"], "epoch": epoch + 1}
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch + 1 - best["epoch"] >= settings.patience:
            log(f"stage {stage}: early stop, best val SRCC {best['srcc']:.4f} at epoch {best['epoch']}")
            break
    if best_state is not None and not settings.keep_last:
        model.load_state_dict(best_state)
    return {"best_epoch": best["epoch"], "best_srcc": best["srcc"], "history": history,
            "settings": settings.__dict__}


def signal_stats(data: Dataset) -> tuple[np.ndarray, np.ndarray]:
    s = data.arrays["signals"].astype(np.float64)
    s = np.sign(s) * np.log1p(np.abs(s))
    return s.mean(0), s.std(0)


def linear_calibration(raw: np.ndarray, mos: np.ndarray) -> dict[str, float]:
    """Least-squares a, b with MOS ~ a * raw + b; identity unless it is well defined and increasing."""
    if len(raw) >= 3 and np.ptp(raw) > 1e-6:
        a, b = np.polyfit(raw.astype(np.float64), mos.astype(np.float64), 1)
        if a > 0:
            return {"a": float(a), "b": float(b)}
    return {"a": 1.0, "b": 0.0}


def fit(rater, train: Dataset, val: Dataset | None, stage1: StageSettings, stage2: StageSettings, seed: int,
        log=print) -> dict[str, Any]:
    """Stage I then Stage II on prepared datasets; sets the score calibration on val. Returns the training log."""
    seed_everything(seed)
    rater.model.set_signal_stats(*signal_stats(train))
    rater.config.rates_dimensions = train.dims is not None
    report = {"stage1": train_stage(rater, 1, train, val, stage1, seed, log),
              "stage2": train_stage(rater, 2, train, val, stage2, seed, log)}
    calib_set = val if val is not None and len(val.clip_mos) >= 3 else train
    raw, _, _ = predict_clips(rater, calib_set)
    rater.config.calibration = linear_calibration(raw, calib_set.clip_mos)
    return report


def blind_face_projector(rater) -> None:
    """Makes the face projector's output independent of the embedding: its LayerNorm gain goes to 0, so any
    input gives the LayerNorm's bias, which is exactly what the zeroed training embeddings gave. The live path
    feeds real embeddings; the model then reads the same face token it trained with (face or no face only)."""
    norm = rater.model.face_proj.net[0]
    with torch.no_grad():
        norm.weight.zero_()
