"""What a reader is shown for each metric key: the short table header and the title of a section or plot.

One table for the Markdown, the HTML page and the plots, so a metric never reads differently in two places.
"""

from __future__ import annotations

#: metric key → (table header, human title); the AUPRO title states the callback's default FPR limit
#: (callbacks.metrics.fpr_limit = 0.3), as the column legend does
METRIC_NAMES: dict[str, tuple[str, str]] = {
    "image_auroc": ("I-AUROC", "Image AUROC"),
    "image_auroc_avgpool": ("I-AUROC (pool)", "Image AUROC (pooled-map score)"),
    "pixel_auroc": ("P-AUROC", "Pixel AUROC"),
    "pixel_aupro": ("AUPRO", "AUPRO (FPR ≤ 30 %)"),
    "image_ap": ("I-AP", "Image average precision"),
    "image_ap_avgpool": ("I-AP (pool)", "Image average precision (pooled-map score)"),
    "image_f1max_avgpool": ("I-F1max (pool)", "Image F1 (best threshold, pooled-map score)"),
    "pixel_ap": ("P-AP", "Pixel average precision"),
    "image_f1max": ("I-F1max", "Image F1 (best threshold)"),
    "pixel_f1max": ("P-F1max", "Pixel F1 (best threshold)"),
    "image_fpr_thr": ("I-FPR@t", "Image false-positive rate at the fitted threshold"),
    "image_tpr_thr": ("I-TPR@t", "Image true-positive rate at the fitted threshold"),
    "image_precision_thr": ("I-Prec@t", "Image precision at the fitted threshold"),
    "image_recall_thr": ("I-Rec@t", "Image recall at the fitted threshold"),
    "image_f1_thr": ("I-F1@t", "Image F1 at the fitted threshold"),
    "pixel_iou_thr": ("P-IoU@t", "Pixel IoU at the fitted threshold"),
    "pixel_dice_thr": ("P-Dice@t", "Pixel Dice at the fitted threshold"),
    "pixel_pro_thr": ("PRO@t", "PRO at the fitted threshold"),
}
#: metrics whose chance level is 50 % (a score unrelated to the label ranks pairs at random)
CHANCE_50 = frozenset({"image_auroc", "image_auroc_avgpool", "pixel_auroc"})


def header(metric: str) -> str:
    """The short column header of ``metric`` (the key itself where none is defined)."""
    return METRIC_NAMES.get(metric, (metric, metric))[0]


def title(metric: str) -> str:
    """The human title of ``metric`` for section headings and plot titles."""
    return METRIC_NAMES.get(metric, (metric, metric))[1]


def per_category(metric: str) -> str:
    """The heading of a per-category table or plot: "AUPRO per category (FPR ≤ 30 %)", never the raw key."""
    name = title(metric)
    if name.endswith(")") and " (" in name:  # a qualifier goes after "per category", as a reader says it
        head, _, qualifier = name.rpartition(" (")
        return f"{head} per category ({qualifier}"
    return f"{name} per category"
