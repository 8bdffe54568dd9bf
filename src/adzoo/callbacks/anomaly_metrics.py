"""The one metric callback: every method is scored by this code, per category, then averaged.

Image metrics use the method's own score and the UniAD/ADer convention (max of a 16×16 average pool of
the map). Pixel metrics use the exact (one global sort) or streaming (fixed-memory histograms) back-end.
States are gathered across DDP ranks before computing; scores are never squashed or flipped.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback

from adzoo.metrics import avgpool_max_score, image_metrics, make_pixel_metrics
from adzoo.metrics.resample import ARTIFACT, PerImageHistograms, save_histograms
from adzoo.metrics.spro import au_spro, resize_channels
from adzoo.thresholds import Decision, PixelDecisionCounts, image_decision_metrics
from adzoo.utils.distributed import gather_objects
from adzoo.utils.io import atomic_write_text

log = logging.getLogger(__name__)

IMAGE_KEYS = ("image_auroc", "image_ap", "image_f1max")
PREDICTION_FIELDS = ("category", "path", "label", "pred_score", "avgpool_score")
DECISION_FIELDS = ("normalised_score", "is_anomalous")  # with a fitted decision (adzoo.thresholds)


#: beside the example panels: what each shows (image path, label, defect type, score), for the gallery's captions
EXAMPLES_INDEX = "examples.json"


class KeptExample(NamedTuple):
    """A test image kept for the example panels, with its mask, anomaly map and image score."""

    label: int
    score: float
    image: torch.Tensor
    mask: torch.Tensor
    anomaly_map: torch.Tensor
    path: str


def defect_type(path: str, label: int) -> str | None:
    """``good`` for a normal image; else the defect folder of the MVTec layout every folder source reads
    (``.../test/<defect>/<file>``), or None where the path does not say."""
    if label == 0:
        return "good"
    parts = Path(path).parts
    return parts[-2] if len(parts) >= 3 and parts[-3] == "test" else None


def prediction_fields(rows: list[dict[str, Any]]) -> list[str]:
    """predictions.csv's columns: the decision columns only when the rows carry them."""
    return [*PREDICTION_FIELDS, *(DECISION_FIELDS if rows and DECISION_FIELDS[0] in rows[0] else ())]


class _CategoryState:
    def __init__(self, backend: str, backend_kwargs: dict[str, Any], resample_bins: int) -> None:
        self.scores: list[torch.Tensor] = []
        self.pooled: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.paths: list[str] = []
        self.has_mask = True
        self.pixel = make_pixel_metrics(backend, **backend_kwargs)
        self.per_image = PerImageHistograms(resample_bins)  # for the leaderboard's bootstrap (pixel_hist.npz)
        self.pixel_decision: PixelDecisionCounts | None = None  # masks at the pixel threshold (test only)
        self.spro: list[tuple[str, np.ndarray]] = []  # (path, map) of each test image, for sPRO (when on)


class AnomalyMetrics(Callback):
    """Accumulates test (and validation) outputs per category and computes every adzoo metric.

    After a test epoch, :attr:`results` holds ``{"per_category": {cat: {metric: value}}, "mean": {...}}`` and
    :attr:`per_image` holds one row per test image; with ``output_dir`` set, ``predictions.csv`` is written
    there atomically, with ``pixel_hist.npz``: per-image pixel histograms (``resample_bins`` bins on the streaming
    lattice) from which the leaderboard bootstraps pixel metrics without the maps.

    ``spro_max_fpr`` (off by default) adds ``pixel_spro``, MVTec LOCO AD's AU-sPRO up to that FPR, where the test
    source has per-defect ground truth (``source.defect_channels(path)``): each test map of those categories is kept
    (memory: one float32 map per test image) and scored against its defects at the map's size.
    """

    def __init__(
        self,
        backend: str = "exact",
        bins: int = 4096,
        fpr_limit: float = 0.3,
        pool_kernel: int = 16,
        output_dir: str | None = None,
        log_images: int = 4,
        resample_bins: int = 1024,
        spro_max_fpr: float | None = None,
    ) -> None:
        super().__init__()
        self.backend = backend
        self.backend_kwargs: dict[str, Any] = {"fpr_limit": fpr_limit}
        if backend == "streaming":
            self.backend_kwargs["bins"] = bins
        make_pixel_metrics(backend, **self.backend_kwargs)  # fail fast on an unknown back-end
        self.fpr_limit = fpr_limit
        self.pool_kernel = pool_kernel
        self.output_dir = output_dir
        self.log_images = log_images
        self.resample_bins = int(resample_bins)
        PerImageHistograms(self.resample_bins)  # fail fast on a bad bin count
        if spro_max_fpr is not None and not 0.0 < float(spro_max_fpr) <= 1.0:
            raise ValueError(f"callbacks.metrics.spro_max_fpr must be in (0, 1] or null, got {spro_max_fpr}")
        self.spro_max_fpr = None if spro_max_fpr is None else float(spro_max_fpr)
        self._spro_source: Any = None  # the test source's defect_channels, while sPRO is on and available
        self._spro_warned = False
        self.results: dict[str, Any] = {}
        self.per_image: list[dict[str, Any]] = []
        self.histograms: dict[str, Any] = {}  # category -> CategoryHistograms of the last test epoch
        #: the decision fitted on the validation split (set by the app before testing): test metrics at it
        self.decision: Decision | None = None
        self._states: dict[str, _CategoryState] = {}
        # Per category, a few test images (anomalous, and the highest-scoring normal ones) with their mask and map:
        # for loggers and examples/ (see _keep_examples).
        self._examples: dict[str, tuple[dict[str, list[KeptExample]], list[KeptExample]]] = {}

    # -- accumulation ----------------------------------------------------------------------------------
    def _reset(self) -> None:
        self._states = {}
        self._examples = {}

    def _update(self, outputs: dict[str, Any], batch: dict[str, Any], keep_images: bool = False) -> None:
        """Add a batch; ``keep_images`` also keeps its per-image histograms (test only: only test writes them)."""
        maps = outputs["anomaly_map"].float()
        if maps.dim() == 4:
            maps = maps[:, 0]
        masks = outputs["mask"]
        if masks.dim() == 4:
            masks = masks[:, 0]
        masks = masks > 0.5
        labels = torch.as_tensor(outputs["label"]).view(-1)
        scores = outputs["pred_score"].float().view(-1)
        pooled = avgpool_max_score(maps, self.pool_kernel)
        has_mask = torch.as_tensor(outputs["has_mask"]).view(-1)
        categories = list(outputs["category"])
        for category in dict.fromkeys(categories):
            idx = torch.tensor([i for i, c in enumerate(categories) if c == category], device=maps.device)
            state = self._states.get(category)
            if state is None:
                state = self._states[category] = _CategoryState(self.backend, self.backend_kwargs, self.resample_bins)
            state.scores.append(scores[idx].cpu())
            state.pooled.append(pooled[idx].cpu())
            state.labels.append(labels[idx.cpu()].cpu())
            state.paths.extend(outputs["path"][i] for i in idx.tolist())
            category_has_mask = bool(has_mask[idx.cpu()].all())
            state.has_mask = state.has_mask and category_has_mask
            if category_has_mask:
                state.pixel.update(maps[idx], masks[idx])
                if keep_images:
                    state.per_image.update(maps[idx], masks[idx], [outputs["path"][i] for i in idx.tolist()])
                    if self._spro_source is not None:
                        state.spro.extend(zip([outputs["path"][i] for i in idx.tolist()], maps[idx].cpu().numpy()))
                    if self.decision is not None and self.decision.pixel_threshold is not None:
                        if state.pixel_decision is None:
                            state.pixel_decision = PixelDecisionCounts(self.decision.pixel_threshold)
                        state.pixel_decision.update(maps[idx], masks[idx])
        if self.log_images > 0:
            self._keep_examples(batch, maps, masks, labels, scores, categories, list(outputs["path"]))

    def _keep_examples(
        self,
        batch: dict[str, Any],
        maps: torch.Tensor,
        masks: torch.Tensor,
        labels: torch.Tensor,
        scores: torch.Tensor,
        categories: list[str],
        paths: list[str],
    ) -> None:
        """Per category, the first ``log_images`` anomalous images of each defect type and the ``log_images``
        highest-scoring normal ones (the likeliest false positives, which a reviewer needs beside the defects);
        :meth:`_chosen` mixes them."""
        for i, category in enumerate(categories):
            anomalous, normal = self._examples.setdefault(category, ({}, []))
            label, score = int(labels[i]), float(scores[i])
            defect = defect_type(paths[i], label) or ""
            if label == 1 and len(anomalous.get(defect, ())) >= self.log_images:
                continue
            if label == 0 and len(normal) >= self.log_images and score <= normal[-1].score:
                continue
            item = KeptExample(label, score, batch["image"][i].cpu(), masks[i].cpu(), maps[i].cpu(), paths[i])
            if label == 1:
                anomalous.setdefault(defect, []).append(item)
            else:
                normal.append(item)
                normal.sort(key=lambda k: -k.score)
                del normal[self.log_images :]

    def _chosen(self, category: str) -> list[KeptExample]:
        """``log_images`` examples: anomalous ones first, one defect type after the other in the order they came
        (so the row shows several kinds of defect), with a quarter (at least one) of the places kept for the
        highest-scoring normal images; a kind that runs short leaves its places to the other."""
        by_defect, normal = self._examples[category]
        anomalous = [k for rank in itertools.zip_longest(*by_defect.values()) for k in rank if k is not None]
        normals = min(len(normal), max(1, self.log_images // 4) if self.log_images > 1 else int(not anomalous))
        anomalies = min(len(anomalous), self.log_images - normals)
        normals = min(len(normal), self.log_images - anomalies)
        return [*anomalous[:anomalies], *normal[:normals]]

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()
        self._spro_source = None
        if self.spro_max_fpr is not None:
            source = getattr(getattr(trainer, "datamodule", None), "source", None)
            if callable(getattr(source, "defect_channels", None)):
                self._spro_source = source
            elif not self._spro_warned:
                self._spro_warned = True
                log.warning(
                    "callbacks.metrics.spro_max_fpr=%s: the data source %s has no per-defect ground truth "
                    "(defect_channels, MVTec LOCO AD's); pixel_spro is not computed",
                    self.spro_max_fpr,
                    type(source).__name__,
                )

    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset()

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._update(outputs, batch, keep_images=True)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if not trainer.sanity_checking:
            self._update(outputs, batch)

    # -- computation -----------------------------------------------------------------------------------
    def _gathered(self) -> dict[str, dict[str, Any]]:
        """Every rank's per-category state, merged (identity without DDP)."""
        local = {
            category: {
                "scores": torch.cat(s.scores),
                "pooled": torch.cat(s.pooled),
                "labels": torch.cat(s.labels),
                "paths": s.paths,
                "has_mask": s.has_mask,
                "pixel": s.pixel.state() if s.has_mask else None,
                "per_image": s.per_image.state() if s.has_mask else None,
                "pixel_decision": s.pixel_decision.state() if s.has_mask and s.pixel_decision else None,
                "spro": s.spro if s.has_mask else [],
            }
            for category, s in self._states.items()
        }
        merged: dict[str, dict[str, Any]] = {}
        for rank_states in gather_objects(local):
            for category, st in rank_states.items():
                if category not in merged:
                    pixel = make_pixel_metrics(self.backend, **self.backend_kwargs)
                    per_image = PerImageHistograms(self.resample_bins)
                    decided = PixelDecisionCounts(self.decision.pixel_threshold) if self._pixel_decided else None
                    merged[category] = {**st, "pixel_metrics": pixel, "per_image_hist": per_image,
                                        "pixel_decided": decided}  # fmt: skip
                    if st["pixel"] is not None:
                        pixel.merge(st["pixel"])
                        per_image.merge(st["per_image"])
                    if decided is not None and st["pixel_decision"] is not None:
                        decided.merge(st["pixel_decision"])
                    continue
                m = merged[category]
                for key in ("scores", "pooled", "labels"):
                    m[key] = torch.cat([m[key], st[key]])
                m["paths"] = m["paths"] + st["paths"]
                m["spro"] = m["spro"] + st["spro"]
                m["has_mask"] = m["has_mask"] and st["has_mask"]
                if st["pixel"] is not None:
                    m["pixel_metrics"].merge(st["pixel"])
                    m["per_image_hist"].merge(st["per_image"])
                if m["pixel_decided"] is not None and st["pixel_decision"] is not None:
                    m["pixel_decided"].merge(st["pixel_decision"])
        return merged

    @property
    def _pixel_decided(self) -> bool:
        return self.decision is not None and self.decision.pixel_threshold is not None

    def compute(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        per_category: dict[str, dict[str, float]] = {}
        notes: dict[str, str] = {}
        rows: list[dict[str, Any]] = []
        self.histograms = {}
        for category, st in sorted(self._gathered().items()):
            metrics: dict[str, float] = {}
            own = image_metrics(st["scores"], st["labels"])
            pooled = image_metrics(st["pooled"], st["labels"])
            metrics.update({k: float(own[k]) for k in IMAGE_KEYS})
            metrics.update({f"{k}_avgpool": float(pooled[k]) for k in IMAGE_KEYS})
            if self.decision is not None:  # the test metrics at the validation-fitted thresholds
                metrics.update(image_decision_metrics(st["scores"], st["labels"], self.decision.image_threshold))
            if st["has_mask"]:
                metrics.update({k: float(v) for k, v in st["pixel_metrics"].compute().items()})
                hist = st["per_image_hist"].finish()
                if hist is not None:
                    self.histograms[category] = hist
                if st["pixel_decided"] is not None and st["pixel_decided"].tp + st["pixel_decided"].fn > 0:
                    metrics.update(st["pixel_decided"].compute())
                if st["has_mask"] and st["spro"] and self._spro_source is not None:
                    metrics["pixel_spro"] = self._spro(category, st["spro"])
            else:
                notes[category] = "no pixel ground truth: pixel metrics skipped"
            if int(st["labels"].sum()) in (0, len(st["labels"])):
                notes[category] = "only one image label present: image metrics undefined (nan)"
            per_category[category] = metrics
            for path, score, pool, label in zip(st["paths"], st["scores"], st["pooled"], st["labels"]):
                row = {
                    "category": category,
                    "path": path,
                    "label": int(label),
                    "pred_score": float(score),
                    "avgpool_score": float(pool),
                }
                if self.decision is not None:
                    row["normalised_score"] = float(self.decision.normalise_scores(float(score)))
                    row["is_anomalous"] = int(bool(self.decision.is_anomalous(float(score))))
                rows.append(row)
        keys = sorted({k for m in per_category.values() for k in m})
        mean = {}
        for key in keys:
            values = [m[key] for m in per_category.values() if key in m and not math.isnan(m[key])]
            mean[key] = float(sum(values) / len(values)) if values else float("nan")
        results = {
            "per_category": per_category,
            "mean": mean,
            "notes": notes,
            "conventions": {
                "backend": self.backend,
                **{k: v for k, v in self.backend_kwargs.items()},
                "pool_kernel": self.pool_kernel,
                "mean": "macro over categories",
                "image_score": "method's own (image_*) and max of avg-pooled map (image_*_avgpool)",
                **({"spro_max_fpr": self.spro_max_fpr} if self.spro_max_fpr is not None else {}),
            },
        }
        return results, rows

    def _spro(self, category: str, kept: list[tuple[str, np.ndarray]]) -> float:
        """AU-sPRO of one category's test maps against their defects, resized to the maps' size."""
        channels, dropped = [], 0
        for path, amap in kept:
            defects = self._spro_source.defect_channels(path)
            channels.append(resize_channels(defects, amap.shape))
            dropped += len(defects) - len(channels[-1])
        if dropped:
            log.warning("%s: %d defect(s) cover no pixel at the maps' size and are left out of sPRO", category, dropped)
        if not any(channels):
            return float("nan")
        return au_spro([amap for _, amap in kept], channels, self.spro_max_fpr)

    def _finish(self, stage: str, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._states and trainer.world_size == 1:
            return
        self.results, self.per_image = self.compute()
        flat = {}
        for category, metrics in self.results["per_category"].items():
            for key, value in metrics.items():
                flat[f"{stage}/{category}/{key}"] = value
        for key, value in self.results["mean"].items():
            flat[f"{stage}/{key}"] = value
        finite = {k: v for k, v in flat.items() if not math.isnan(v)}
        if finite:
            pl_module.log_dict(finite, sync_dist=False, rank_zero_only=True)
        if trainer.is_global_zero:
            if stage == "test" and self.output_dir is not None:
                self.write_predictions(Path(self.output_dir) / "predictions.csv")
                if self.histograms:
                    save_histograms(Path(self.output_dir) / ARTIFACT, self.histograms)
                self.save_examples(Path(self.output_dir) / "examples")
            self._log_images(trainer)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._finish("test", trainer, pl_module)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._finish("val", trainer, pl_module)

    # -- outputs ---------------------------------------------------------------------------------------
    def write_predictions(self, path: Path) -> None:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=prediction_fields(self.per_image))
        writer.writeheader()
        writer.writerows(self.per_image)
        atomic_write_text(path, buffer.getvalue())

    def example_panels(self) -> dict[str, list[tuple[KeptExample, torch.Tensor]]]:
        """Per category: (example, panel) with panel = image | ground truth | map overlay, float (3, H, 3W) in [0, 1].

        Maps share one colour scale per category (its examples' min and max), so panels compare fairly.
        """
        from matplotlib import colormaps

        colormap = colormaps["jet"]
        panels: dict[str, list[tuple[KeptExample, torch.Tensor]]] = {}
        for category in sorted(self._examples):
            kept = self._chosen(category)
            low = min(float(k.anomaly_map.min()) for k in kept)
            high = max(float(k.anomaly_map.max()) for k in kept)
            span = max(high - low, 1e-12)
            for example in kept:
                heat = colormap(((example.anomaly_map - low) / span).clamp(0, 1).numpy())[..., :3]
                heat = torch.from_numpy(heat).permute(2, 0, 1).float()
                overlay = 0.5 * example.image + 0.5 * heat
                truth = example.mask.float()[None].expand(3, -1, -1)
                panels.setdefault(category, []).append((example, torch.cat([example.image, truth, overlay], dim=-1)))
        return panels

    def save_examples(self, folder: Path) -> list[Path]:
        """Write the example panels as PNGs (``examples/<category>_<n>.png``) for the leaderboard gallery, and
        ``examples/examples.json``: each panel's image path, label, defect type and image score, for its caption."""
        from PIL import Image

        written, index = [], []
        for category, items in self.example_panels().items():
            for n, (example, panel) in enumerate(items):
                target = folder / f"{category}_{n}.png"
                target.parent.mkdir(parents=True, exist_ok=True)
                array = (panel.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype("uint8")
                tmp = target.with_suffix(".tmp.png")
                Image.fromarray(array).save(tmp)
                tmp.replace(target)
                written.append(target)
                index.append({"file": target.name, "category": category, "path": example.path,
                              "label": example.label, "defect": defect_type(example.path, example.label),
                              "score": example.score})  # fmt: skip
        if index:
            atomic_write_text(folder / EXAMPLES_INDEX, json.dumps(index, indent=1))
        return written

    def _log_images(self, trainer: pl.Trainer) -> None:
        """Each category's example panels as one image per logger that takes images (TensorBoard, wandb, MLflow).

        MLflow is matched by class, first: neither duck-typed check below fits it (its ``experiment`` is an
        ``MlflowClient``, whose ``log_image`` takes a run id).
        """
        from pytorch_lightning.loggers import MLFlowLogger

        panels = self.example_panels()
        if not panels:
            return
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            for category, items in panels.items():
                grid = torch.cat([panel for _, panel in items], dim=-2).clamp(0, 1)
                tag = f"anomaly_maps/{category}"
                if isinstance(logger, MLFlowLogger):  # an artifact per category, overwritten by later epochs
                    array = (grid.permute(1, 2, 0).numpy() * 255).round().astype("uint8")
                    experiment.log_image(logger.run_id, array, artifact_file=f"{tag}.png")
                elif hasattr(experiment, "add_image"):  # TensorBoard
                    experiment.add_image(tag, grid, global_step=trainer.global_step)
                elif hasattr(logger, "log_image"):  # wandb
                    logger.log_image(key=tag, images=[grid.permute(1, 2, 0).numpy()])
