"""Procedural, seed-reproducible MVTec-AD-style data set: adzoo's embedded default benchmark.

Why it exists: every model in the zoo must train and evaluate offline (CI, laptops, air-gapped clusters)
without a licensed download, and pixel metrics need ground truth that is *exactly* right. So the
default data set is drawn from a seed on first use and cached on disk in the MVTec-AD layout::

    <root>/<category>/train/good/000.png
    <root>/<category>/test/good/000.png
    <root>/<category>/test/<defect>/000.png
    <root>/<category>/ground_truth/<defect>/000_mask.png     (uint8 0/255, same size as the image)
    <root>/.adzoo_synthetic.json                             (written last; marks the tree complete)

Every image is saved as RGB. Each image has its own ``numpy.random.Generator``, keyed by
(seed, category, split, defect, index), so adding a category or a defect type never changes the others,
and the same seed gives byte-identical PNGs (for one numpy/Pillow build).

Categories (3 textures, 3 objects)
----------------------------------
``fabric`` (texture): plain-weave cloth, indigo warp over pale weft. Normal variation: thread period
  ±5 %, orientation ±3°, random weave phase, per-thread shade, fibre fuzz and mottling.
  Defects: ``hole`` (missing patch showing a dark backing, 6-11 px radius; easy), ``thread`` (a loose
  2.8-3.6 px thread, much brighter weft or darker warp, 0.35-0.55 of the image long), ``stain`` (11-14 %
  brownish tint, sharp-ish edge; subtle), ``misweave`` (a short run of cells where the weft floats over
  instead of under; structural, local statistics unchanged).
``wood`` (texture): planed board with wavy growth rings and fibre streaks; orientation ±6°, random ring
  frequency/phase, and a natural knot in about a third of the *normal* boards (so "dark blob" is not
  an anomaly by itself). Defects: ``scratch`` (pale line 3.5-4.5 px wide), ``crack`` (dark tapered jagged
  line 4-5.5 px wide, roughly along the grain), ``hole`` (dark worm hole, 5-8 px radius at 128²),
  ``stain`` (3.5-5 % water-mark darkening, reddest channel most; subtle).
``stone`` (texture, grayscale: three equal channels): granite-like multi-scale noise with dark and light
  mineral grains. Defects: ``crack`` (dark, 1.5-2.6 px, possibly branched), ``chip`` (broken-off patch,
  9-15 px radius: brighter by 35-60 %, smoother fresh surface with a dark rim), ``stain`` (7-9 %
  darkening; subtle), ``smear`` (a 15-22 px patch where the grain is blurred away, σ 3-4 px, mean
  unchanged; a texture-statistics defect).
``washer`` (object): metal ring on a dark table, any rotation (light direction), ±3 px shift, concentric
  turning marks and bevelled edges. Defects: ``scratch`` (bright line 1-1.6 px wide), ``notch`` (piece
  missing from the rim), ``rust`` (10-14 % orange shift: blue down, red slightly up; subtle), ``off_center``
  (hole punched 8-12 px off centre; a logical defect, only the rim of the hole changes).
``pill`` (object): two-tone capsule (white/red) on a grey table, ±6° rotation, ±3 px shift, cylindrical
  shading and specular stripe; *normal* pills carry 0-11 faint reddish speckles. Defects: ``crack``
  (dark line 1.2-1.8 px wide across the shell), ``contamination`` (dark foreign particle, 3.5-5 px
  radius), ``discoloration`` (faint yellowing on the white half: blue down 5.5-7 %, green a third of that;
  subtle; on the red half there is no blue to lose), ``chip`` (piece missing from the outline).
``screw`` (object): threaded screw lying on a light table at any angle, ±3 px shift, helical thread
  shading. Defects: ``bent`` (shaft bent 10-17° past a point; logical), ``broken_tip`` (the shaft ends
  0-0.2 past the centre), ``thread_damage`` (three to five thread turns flattened; subtle), ``scratch``
  (bright line 2.4-3.2 px wide along the shaft).

Generator version 2 calibrated these strengths (issue 13): version 1's defects were so faint that the
patch-kNN reference scored 61-68 image AUROC; now it scores about 84 (README, "The embedded default data
set"). The subtle defects stay at the 16-grey-level cap ``tests/data`` enforces and are the hard ones.

Every image additionally gets a global gain (0.86-1.12), a linear lighting gradient, mild vignetting,
per-channel colour gain (not for ``stone``) and Gaussian sensor noise (σ = 1-3 grey levels). That
normal variation swamps global statistics: a detector on per-channel mean/std and gradient energy is
near chance on every defect (``bench/bench_synthetic.py`` prints it), while a local patch-kNN finds
the visible defects, finds the logical ones (bent screw, off-centre hole) less often, and barely sees the
subtle ones (stains, rust, discoloration, thread damage): ``bench/calibrate_synthetic.py`` prints it
per defect type.

The mvtec_like set (``preset="mvtec_like"``, ``data=mvtec_like``)
-----------------------------------------------------------------
The set the trained methods are judged on (issue 13), 256² by default. Its textures are real photographs:
scikit-image's bundled ``gravel``, ``brick`` and ``grass`` (512² grey), each mapped between two colours. A
normal image is a 384-photo-pixel window at a random position, ±3° rotation, ±3 % scale and ±5 % gamma,
under a quarter of the default set's lighting variation (a fixed inspection camera, as in MVTec AD). Defects,
sized at 256² and scaled with the image: ``scratch`` (bright, 2-3.5 px), ``crack`` (dark, branched, 3-5 px),
``hole`` (dark blob, 6-13 px radius), ``stain`` (20-35 % tint; the subtle one) and ``foreign`` (a blob of
another photo in the same colours: local structure changes, the mean barely moves). The objects are the
default set's ``pill``, ``washer`` and ``screw`` with their visible defects only (no discoloration, rust or
thread damage; the screw keeps ``bent``, a logical defect), drawn with generator version 1's strengths
(``_MVTEC_LIKE_OBJECT_DEFECTS``), so version 2's calibration of the default set left its files unchanged.
On the dev seed the patch-kNN reference scores about 89 image AUROC (``src/adzoo/models/uniad/README.md``).

Exact masks
-----------
A defect is a layer plus an alpha map, composited onto the scene *before* the pixel-wise lighting,
colour gain and sensor noise (all of which are identical with and without the defect). Alpha below
``_ALPHA_CUT`` is dropped, so the defect changes exactly the pixels where alpha survives; geometric
defects (a re-drawn object) use the pixels where the re-drawn scene differs. Where 8-bit quantisation
would round a changed pixel back to its defect-free value, it is moved one grey level in the direction
of the change. Hence ``mask == any(with_defect != without_defect, channel)`` holds bit-exactly, which
``render_sample`` lets tests check.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import shutil
import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from adzoo.utils.io import file_digest

__all__ = [
    "GENERATOR_VERSION",
    "MANIFEST_NAME",
    "SUBTLE_DEFECTS",
    "SYNTHETIC_CATEGORIES",
    "SYNTHETIC_DEFECTS",
    "SYNTHETIC_OBJECTS",
    "SYNTHETIC_TEXTURES",
    "generate_synthetic_dataset",
    "render_sample",
    "sample_entropy",
]

log = logging.getLogger(__name__)

#: Bump whenever rendering changes, so cached trees from an older generator are regenerated.
GENERATOR_VERSION = 2
MANIFEST_NAME = ".adzoo_synthetic.json"

_ALPHA_CUT = 0.25  # alpha below this is dropped: the mask is the set of pixels the defect really touched
_GEOMETRY_EPS = 1.0 / 255.0  # a re-drawn object "changed" a pixel if it moved by more than one grey level
_MAX_DEFECT_TRIES = 32
_SPLIT_CODES = {"train": 0, "test": 1}

Array = np.ndarray
Pair = tuple[Array, Array]  # (image-like array, coverage/alpha map)
Gen = np.random.Generator
Params = dict[str, Any]
Range = tuple[float, float]  # a parameter drawn uniformly from [low, high]


# --------------------------------------------------------------------------------------------------
# Small numeric helpers
# --------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def _pix_grid(size: int) -> Pair:
    """(row, col) pixel-centre coordinates; cached because every painter and defect needs them."""
    c = np.arange(size, dtype=np.float64)
    yy, xx = np.meshgrid(c, c, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


@functools.lru_cache(maxsize=8)
def _norm_grid(size: int) -> Pair:
    """(y, x) in [-1, 1]: shapes are described in these units so they scale with ``image_size``."""
    c = (np.arange(size, dtype=np.float64) + 0.5) / size * 2.0 - 1.0
    yy, xx = np.meshgrid(c, c, indexing="ij")
    yy.setflags(write=False)
    xx.setflags(write=False)
    return yy, xx


def _smooth_noise(rng: Gen, size: int, sigma: float | tuple[float, float]) -> Array:
    """Zero-mean, unit-std filtered white noise; wrap mode so it has no border artefacts."""
    g = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma, mode="wrap")
    return (g - g.mean()) / (g.std() + 1e-12)


def _rotate_field(field: Array, theta: float) -> Array:
    """Resample a (periodic) field on a grid rotated by ``theta``, to orient anisotropic noise."""
    n = field.shape[0]
    yy, xx = _pix_grid(n)
    c0 = (n - 1) / 2.0
    c, s = np.cos(theta), np.sin(theta)
    ys = c0 + (yy - c0) * c + (xx - c0) * s
    xs = c0 - (yy - c0) * s + (xx - c0) * c
    return ndimage.map_coordinates(field, [ys, xs], order=1, mode="grid-wrap")


def _smoothstep(e0: float, e1: float, v: Array) -> Array:
    t = np.clip((v - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _blob(rng: Gen, size: int, cy: float, cx: float, radius: float, *, irregular: float, soft: float) -> Array:
    """Irregular disc (radius modulated by low angular harmonics) with a linear edge ``soft`` px wide."""
    yy, xx = _pix_grid(size)
    dy, dx = yy - cy, xx - cx
    r = np.hypot(dy, dx)
    ang = np.arctan2(dy, dx)
    k = np.arange(2, 6, dtype=np.float64)[:, None, None]
    amp = (irregular * rng.standard_normal(4) / np.arange(2, 6))[:, None, None]
    ph = rng.uniform(0.0, 2.0 * np.pi, 4)[:, None, None]
    rr = radius * (1.0 + (amp * np.cos(k * ang + ph)).sum(0))
    rr = np.maximum(rr, 0.3 * radius)
    return np.clip((rr - r) / max(soft, 1e-6) + 0.5, 0.0, 1.0)


def _polyline(size: int, pts: Array, widths: Array | float) -> Array:
    """Anti-aliased coverage of a polyline (pixel coords, (N, 2) as row/col) with per-vertex width."""
    pts = np.asarray(pts, dtype=np.float64)
    w = np.broadcast_to(np.asarray(widths, dtype=np.float64), (len(pts),))
    out = np.zeros((size, size))
    pad = float(w.max()) / 2.0 + 2.0
    r0 = max(int(np.floor(pts[:, 0].min() - pad)), 0)
    r1 = min(int(np.ceil(pts[:, 0].max() + pad)) + 1, size)
    c0 = max(int(np.floor(pts[:, 1].min() - pad)), 0)
    c1 = min(int(np.ceil(pts[:, 1].max() + pad)) + 1, size)
    if r0 >= r1 or c0 >= c1:
        return out
    yy, xx = _pix_grid(size)
    py = yy[r0:r1, c0:c1][None] - pts[:-1, 0, None, None]
    px = xx[r0:r1, c0:c1][None] - pts[:-1, 1, None, None]
    ab = pts[1:] - pts[:-1]
    l2 = (ab**2).sum(1) + 1e-12
    t = np.clip((py * ab[:, 0, None, None] + px * ab[:, 1, None, None]) / l2[:, None, None], 0.0, 1.0)
    d = np.hypot(py - t * ab[:, 0, None, None], px - t * ab[:, 1, None, None])
    wt = w[:-1, None, None] * (1.0 - t) + w[1:, None, None] * t
    out[r0:r1, c0:c1] = np.clip(wt / 2.0 + 0.5 - d, 0.0, 1.0).max(0)
    return out


def _walk(rng: Gen, start: Array, angle: float, n_steps: int, step: float, turn: float) -> Array:
    """A jagged random-walk path (row/col), the skeleton of cracks and loose threads."""
    angles = angle + np.cumsum(rng.normal(0.0, turn, n_steps))
    steps = step * np.stack([np.sin(angles), np.cos(angles)], axis=1)
    return np.vstack([start, start + np.cumsum(steps, axis=0)])


def _taper(n: int, w_max: float, w_min: float = 0.5) -> Array:
    """Width profile thick in the middle and thin at both ends, like a real crack."""
    s = np.sin(np.linspace(0.0, np.pi, n)) ** 0.6
    return w_min + (w_max - w_min) * s


def _pick_point(rng: Gen, support: Array, margin: float) -> Array:
    """A random pixel at least ``margin`` px inside the support, so defects sit on the object/texture."""
    inside = support > 0.99
    m = round(margin)
    if m >= 1:
        eroded = ndimage.binary_erosion(inside, iterations=m)
        if eroded.any():
            inside = eroded
    ys, xs = np.nonzero(inside)
    if len(ys) == 0:  # tiny images: anything that is mostly object will do
        ys, xs = np.nonzero(support > 0.5)
    k = rng.integers(len(ys))
    return np.array([ys[k], xs[k]], dtype=np.float64) + rng.uniform(-0.5, 0.5, 2)


def _background(rng: Gen, size: int, level: float, tint: Sequence[float]) -> Array:
    """A matte table: uniform with faint low-frequency shading and fine grain."""
    v = level + 0.012 * _smooth_noise(rng, size, size * 0.2) + 0.008 * _smooth_noise(rng, size, 1.0)
    return v[..., None] * np.asarray(tint, dtype=np.float64)


def _crc(name: str) -> int:
    """Stable 32-bit key for a name (``hash()`` is salted per process)."""
    return zlib.crc32(name.encode("utf-8"))


# --------------------------------------------------------------------------------------------------
# Scene / defect plumbing
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Scene:
    """A defect-free scene before lighting/noise: its colours, where defects may go, and its parameters."""

    rgb: Array  # (H, W, 3) float, roughly [0, 1]
    support: Array  # (H, W) coverage of the object (ones for textures)
    params: Params


DefectFn = Callable[["_Spec", _Scene, np.random.Generator, int], Pair]


@dataclass(frozen=True)
class _Spec:
    """How to draw, paint and damage one category."""

    kind: str  # "texture" | "object"
    draw: Callable[[np.random.Generator, int], Params]
    paint: Callable[[Params, int], Pair]
    defects: dict[str, DefectFn]
    gray: bool = False
    lighting: float = 1.0  # scales the camera's gain/gradient/vignette/tint variation (photo textures: steadier)


def _geometry(spec: _Spec, scene: _Scene, size: int, **overrides: Any) -> Pair:
    """Re-paint the scene with changed geometry; the defect is wherever the picture actually changed."""
    rgb2, _ = spec.paint({**scene.params, **overrides}, size)
    alpha = (np.abs(rgb2 - scene.rgb).max(-1) > _GEOMETRY_EPS).astype(np.float64)
    return rgb2, alpha


def _stain(
    scene: _Scene,
    rng: Gen,
    size: int,
    *,
    strength: tuple[float, float],
    radius: tuple[float, float],
    tint: Sequence[float],
    irregular: float = 0.3,
    soft: float = 0.6,
) -> Pair:
    """Low-contrast multiplicative tint with a soft edge (``soft`` x radius wide): the subtle defect of every
    category."""
    rad = max(rng.uniform(*radius) * size, 1.5)
    cy, cx = _pick_point(rng, scene.support, rad * 0.5)
    alpha = _blob(rng, size, cy, cx, rad, irregular=irregular, soft=rad * soft) * scene.support
    factor = 1.0 - rng.uniform(*strength) * np.asarray(tint, dtype=np.float64)
    return scene.rgb * factor, alpha


def _scratch(
    scene: _Scene,
    rng: Gen,
    size: int,
    *,
    length: tuple[float, float],
    width: tuple[float, float],
    target: Array | float,
    amount: tuple[float, float],
    angle: float | None = None,
) -> Pair:
    """A thin, slightly curved line blended towards ``target`` (bright for fresh material); ``angle`` (radians,
    ±0.1 jitter) lays it along a thin part instead of in any direction."""
    ln = rng.uniform(*length) * size
    p0 = _pick_point(rng, scene.support, 2.0)
    ang = rng.uniform(0.0, 2.0 * np.pi)
    if angle is not None:
        ang = angle + rng.normal(0.0, 0.1)
    d = np.array([np.sin(ang), np.cos(ang)])
    n = np.array([-d[1], d[0]])
    bend = rng.normal(0.0, 0.08) * ln
    t = np.linspace(-0.5, 0.5, 12)[:, None]
    pts = p0 + t * ln * d + (1.0 - 4.0 * t**2) * bend * n
    alpha = _polyline(size, pts, rng.uniform(*width)) * scene.support
    a = rng.uniform(*amount)
    return scene.rgb * (1.0 - a) + np.asarray(target) * a, alpha


def _crack(
    scene: _Scene,
    rng: Gen,
    size: int,
    *,
    angle: float | None,
    length: tuple[float, float],
    width: tuple[float, float],
    darken: tuple[float, float],
    branches: int = 0,
) -> Pair:
    """A tapered random-walk line that darkens the surface; ``angle`` None means any direction."""
    step = 1.0
    n = max(int(rng.uniform(*length) * size / step), 3)
    start = _pick_point(rng, scene.support, 2.0)
    ang = rng.uniform(0.0, 2.0 * np.pi) if angle is None else angle + rng.normal(0.0, 0.25)
    pts = _walk(rng, start, ang, n, step, 0.18)
    pts -= pts[n // 2] - start  # centre the crack on the picked point
    alpha = _polyline(size, pts, _taper(len(pts), rng.uniform(*width)))
    for _ in range(branches):
        k = int(rng.integers(len(pts) // 4, 3 * len(pts) // 4 + 1))
        m = max(n // 3, 3)
        side = ang + rng.choice([-1.0, 1.0]) * rng.uniform(0.5, 1.1)
        bpts = _walk(rng, pts[k], side, m, step, 0.2)
        alpha = np.maximum(alpha, _polyline(size, bpts, _taper(len(bpts), rng.uniform(*width) * 0.7)))
    return scene.rgb * rng.uniform(*darken), alpha * scene.support


# --------------------------------------------------------------------------------------------------
# fabric
# --------------------------------------------------------------------------------------------------


def _draw_fabric(rng: Gen, size: int) -> Params:
    period = size / 11.0 * rng.uniform(0.95, 1.05)
    n_threads = int(np.ceil(size * 1.6 / period)) + 4
    return {
        "period": period,
        "theta": np.deg2rad(rng.uniform(-3.0, 3.0)),
        "phase": rng.uniform(0.0, 1.0, 2),
        "warp": np.array([0.20, 0.28, 0.50]) * rng.uniform(0.9, 1.1) + rng.normal(0.0, 0.012, 3),
        "weft": np.array([0.74, 0.73, 0.70]) * rng.uniform(0.93, 1.05) + rng.normal(0.0, 0.012, 3),
        "warp_var": rng.normal(0.0, 0.06, n_threads),
        "weft_var": rng.normal(0.0, 0.06, n_threads),
        "fibre": _smooth_noise(rng, size, 0.6),
        "mottle": _smooth_noise(rng, size, size / 6.0),
        "flip": None,  # misweave: (iu0, iu1, iv0, iv1) cells where the weave is inverted
    }


def _fabric_cells(p: Params, size: int) -> Pair:
    """Continuous thread coordinates: integer part = thread index, fraction = position across it."""
    yy, xx = _pix_grid(size)
    c, s = np.cos(p["theta"]), np.sin(p["theta"])
    u = (xx * c + yy * s) / p["period"] + p["phase"][0]
    v = (-xx * s + yy * c) / p["period"] + p["phase"][1]
    return u, v


def _paint_fabric(p: Params, size: int) -> Pair:
    u, v = _fabric_cells(p, size)
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = u - iu, v - iv
    top = ((iu + iv) % 2) == 0  # plain weave: the warp is on top in every other cell
    if p["flip"] is not None:
        u0, u1, v0, v1 = p["flip"]
        top ^= (iu >= u0) & (iu < u1) & (iv >= v0) & (iv < v1)
    n = len(p["warp_var"])
    # Threads are bright in the middle, dark in the gaps, and dip where they pass under the crossing thread.
    warp = np.sin(np.pi * fu) ** 0.7 * (0.7 + 0.3 * np.sin(np.pi * fv))
    weft = np.sin(np.pi * fv) ** 0.7 * (0.7 + 0.3 * np.sin(np.pi * fu))
    warp = warp * (1.0 + p["warp_var"][iu.astype(int) % n])
    weft = weft * (1.0 + p["weft_var"][iv.astype(int) % n])
    shade = np.where(top, warp, weft)
    col = np.where(top[..., None], p["warp"], p["weft"])
    tex = 1.0 + 0.04 * p["fibre"] + 0.03 * p["mottle"]
    return col * ((0.3 + 0.7 * shade) * tex)[..., None], np.ones((size, size))


def _fabric_hole(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    rad = max(rng.uniform(0.05, 0.09) * size, 1.5)
    cy, cx = _pick_point(rng, scene.support, rad + 1.0)
    alpha = _blob(rng, size, cy, cx, rad, irregular=0.35, soft=0.8)
    backing = np.array([0.06, 0.06, 0.07]) * (1.0 + 0.3 * scene.params["fibre"])[..., None]
    return backing, alpha


def _fabric_thread(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    n = max(int(rng.uniform(0.35, 0.55) * size / 1.5), 4)
    start = _pick_point(rng, scene.support, 2.0)
    pts = _walk(rng, start, rng.uniform(0.0, 2.0 * np.pi), n, 1.5, 0.15)
    pts -= pts[n // 2] - start
    alpha = _polyline(size, pts, rng.uniform(2.8, 3.6))
    col = scene.params["weft"] * 1.5 if rng.random() < 0.6 else scene.params["warp"] * 0.35
    layer = col * (0.85 + 0.1 * scene.params["fibre"])[..., None]
    return layer, alpha


def _fabric_stain(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    return _stain(scene, rng, size, strength=(0.11, 0.14), radius=(0.06, 0.14), tint=(0.2, 0.6, 1.0), soft=0.15)


def _fabric_misweave(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    p = scene.params
    cy, cx = _pick_point(rng, scene.support, p["period"] * 2.0)
    u, v = _fabric_cells(p, size)
    iu = int(np.floor(u[int(cy), int(cx)]))
    iv = int(np.floor(v[int(cy), int(cx)]))
    run = int(rng.integers(2, 6))
    if rng.random() < 0.5:  # a weft floating over several warps, or the other way round
        flip = (iu - run // 2, iu - run // 2 + run, iv, iv + 1)
    else:
        flip = (iu, iu + 1, iv - run // 2, iv - run // 2 + run)
    return _geometry(spec, scene, size, flip=flip)


# --------------------------------------------------------------------------------------------------
# wood
# --------------------------------------------------------------------------------------------------


def _draw_wood(rng: Gen, size: int) -> Params:
    theta = np.deg2rad(rng.uniform(-6.0, 6.0))
    light = np.array([0.80, 0.60, 0.40]) * rng.uniform(0.9, 1.08) + rng.normal(0.0, 0.015, 3)
    knot = None
    if rng.random() < 0.35:
        ky, kx = rng.uniform(-0.6, 0.6, 2)
        knot = (ky, kx, rng.uniform(0.07, 0.13), rng.uniform(0.8, 1.6) * rng.choice([-1.0, 1.0]))
    return {
        "theta": theta,
        "freq": rng.uniform(3.5, 6.0),
        "phase": rng.uniform(0.0, 1.0),
        "big": _smooth_noise(rng, size, size * 0.22),
        "mid": _smooth_noise(rng, size, size * 0.07),
        "fibre": _rotate_field(_smooth_noise(rng, size, (0.7, size * 0.12)), theta),
        "pores": _rotate_field(_smooth_noise(rng, size, (0.5, 2.5)), theta),
        "knot": knot,
        "light": light,
        "dark": light * np.array([0.62, 0.55, 0.48]) * rng.uniform(0.93, 1.05),
    }


def _paint_wood(p: Params, size: int) -> Pair:
    y, x = _norm_grid(size)
    c, s = np.cos(p["theta"]), np.sin(p["theta"])
    xr, yr = x * c + y * s, -x * s + y * c
    t = yr * p["freq"] + p["phase"] + 0.45 * p["big"] + 0.08 * p["mid"]
    core = 0.0
    if p["knot"] is not None:
        ky, kx, ks, k_amp = p["knot"]
        t = t + k_amp * np.exp(-(((xr - kx) / (2.0 * ks)) ** 2 + ((yr - ky) / ks) ** 2))
        dist = np.hypot((xr - kx) / 1.6, yr - ky)
        core = np.clip((0.35 * ks - dist) * size / 2.0 + 0.5, 0.0, 1.0)[..., None]
    r = t - np.floor(t)
    late = np.exp(-(((r - 0.75) / 0.09) ** 2)) + np.exp(-(((r + 0.25) / 0.09) ** 2))
    tone = np.clip(0.6 * late + 0.3 * r + 0.08 * p["fibre"] + 0.05 * p["pores"], 0.0, 1.0)
    rgb = p["light"] + (p["dark"] - p["light"]) * tone[..., None]
    return rgb * (1.0 - 0.45 * core), np.ones((size, size))


def _wood_scratch(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    target = np.minimum(scene.params["light"] * 1.3 + 0.1, 1.0)  # fresh, paler wood under the finish
    return _scratch(scene, rng, size, length=(0.3, 0.5), width=(3.5, 4.5), target=target, amount=(0.8, 0.95))


def _wood_crack(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    ang = scene.params["theta"] + (np.pi if rng.random() < 0.5 else 0.0)
    return _crack(scene, rng, size, angle=ang, length=(0.35, 0.55), width=(4.0, 5.5), darken=(0.12, 0.2))


def _wood_hole(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    rad = max(rng.uniform(0.04, 0.06) * size, 1.0)
    cy, cx = _pick_point(rng, scene.support, rad + 1.0)
    alpha = _blob(rng, size, cy, cx, rad, irregular=0.15, soft=0.7)
    return scene.params["dark"] * 0.25 * np.ones_like(scene.rgb), alpha


def _wood_stain(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    return _stain(scene, rng, size, strength=(0.035, 0.05), radius=(0.08, 0.16), tint=(1.2, 1.0, 0.7), soft=0.15)


# --------------------------------------------------------------------------------------------------
# stone (grayscale)
# --------------------------------------------------------------------------------------------------


def _draw_stone(rng: Gen, size: int) -> Params:
    return {
        "level": rng.uniform(0.48, 0.6),
        "f1": _smooth_noise(rng, size, size * 0.12),
        "f2": _smooth_noise(rng, size, size * 0.04),
        "f3": _smooth_noise(rng, size, 1.0),
        "g1": _smooth_noise(rng, size, 0.9),
        "g2": _smooth_noise(rng, size, 1.2),
        "dark_thr": rng.uniform(1.2, 1.6),
    }


def _stone_value(p: Params) -> Array:
    v = p["level"] + 0.06 * p["f1"] + 0.035 * p["f2"] + 0.025 * p["f3"]
    dark = _smoothstep(p["dark_thr"], p["dark_thr"] + 0.5, p["g1"])
    light = _smoothstep(1.5, 2.0, p["g2"])
    return v * (1.0 - 0.35 * dark) + 0.15 * light


def _paint_stone(p: Params, size: int) -> Pair:
    v = _stone_value(p)
    return np.repeat(v[..., None], 3, axis=-1), np.ones((size, size))


def _stone_crack(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    branches = int(rng.integers(0, 3))
    return _crack(
        scene,
        rng,
        size,
        angle=None,
        length=(0.2, 0.45),
        width=(1.5, 2.6),
        darken=(0.3, 0.45),
        branches=branches,
    )


def _stone_chip(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    rad = max(rng.uniform(0.07, 0.12) * size, 1.5)
    cy, cx = _pick_point(rng, scene.support, rad + 1.0)
    alpha = _blob(rng, size, cy, cx, rad, irregular=0.4, soft=0.8)
    # Fresh fracture: smoother and brighter than the polished face, with a shadowed rim on one side.
    v = ndimage.gaussian_filter(scene.rgb[..., 0], 1.2, mode="wrap") * rng.uniform(1.35, 1.6)
    ang = rng.uniform(0.0, 2.0 * np.pi)
    shifted = ndimage.shift(alpha, (1.5 * np.sin(ang), 1.5 * np.cos(ang)), order=1, mode="constant")
    rim = np.clip(alpha - shifted, 0.0, 1.0)
    v = v * (1.0 - 0.6 * rim)
    return np.repeat(v[..., None], 3, axis=-1), alpha


def _stone_stain(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    return _stain(scene, rng, size, strength=(0.07, 0.09), radius=(0.08, 0.18), tint=(1.0, 1.0, 1.0), soft=0.15)


def _stone_smear(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    rad = max(rng.uniform(0.12, 0.17) * size, 1.5)
    cy, cx = _pick_point(rng, scene.support, rad)
    alpha = _blob(rng, size, cy, cx, rad, irregular=0.3, soft=rad * 0.3)
    v = ndimage.gaussian_filter(scene.rgb[..., 0], rng.uniform(3.0, 4.0), mode="wrap")
    return np.repeat(v[..., None], 3, axis=-1), alpha


# --------------------------------------------------------------------------------------------------
# washer
# --------------------------------------------------------------------------------------------------


def _draw_washer(rng: Gen, size: int) -> Params:
    ro = rng.uniform(0.58, 0.64)
    marks = ndimage.gaussian_filter1d(rng.standard_normal(size + 8), 0.8, mode="wrap")
    return {
        "bg": _background(rng, size, rng.uniform(0.1, 0.16), (1.0, 1.0, 1.03)),
        "centre": rng.uniform(-0.05, 0.05, 2),
        "ro": ro,
        "ri": ro * rng.uniform(0.42, 0.48),
        "light": rng.uniform(0.0, 2.0 * np.pi),
        "metal": np.array([0.62, 0.64, 0.68]) * rng.uniform(0.9, 1.08),
        "marks": marks / (marks.std() + 1e-12),
        "hole": (0.0, 0.0),
        "notch": None,  # (y, x, r) in normalised units
    }


def _paint_washer(p: Params, size: int) -> Pair:
    y, x = _norm_grid(size)
    px = size / 2.0
    cy, cx = p["centre"]
    dy, dx = y - cy, x - cx
    r = np.hypot(dy, dx)
    r_in = np.hypot(dy - p["hole"][0], dx - p["hole"][1])
    sd = np.maximum(r - p["ro"], p["ri"] - r_in)
    if p["notch"] is not None:
        ny, nx, nr = p["notch"]
        sd = np.maximum(sd, nr - np.hypot(y - ny, x - nx))
    cov = np.clip(0.5 - sd * px, 0.0, 1.0)
    ang = np.arctan2(dy, dx) - p["light"]
    shade = 0.55 + 0.25 * np.cos(ang) + 0.05 * np.cos(2.0 * ang)
    marks = np.interp(r * px, np.arange(len(p["marks"]), dtype=np.float64), p["marks"])
    bevel = 1.0 - 0.35 * np.exp(-np.maximum(-sd * px, 0.0) / 1.8)
    surf = p["metal"] * (shade * (1.0 + 0.04 * marks) * bevel)[..., None]
    return p["bg"] * (1.0 - cov[..., None]) + surf * cov[..., None], cov


def _washer_scratch(
    spec: _Spec, scene: _Scene, rng: Gen, size: int, *, length: Range, width: Range, amount: Range
) -> Pair:
    target = np.minimum(scene.params["metal"] * 1.4, 1.0)
    return _scratch(scene, rng, size, length=length, width=width, target=target, amount=amount)


def _washer_notch(spec: _Spec, scene: _Scene, rng: Gen, size: int, *, radius: Range) -> Pair:
    p = scene.params
    phi = rng.uniform(0.0, 2.0 * np.pi)
    ny, nx = p["centre"][0] + p["ro"] * np.sin(phi), p["centre"][1] + p["ro"] * np.cos(phi)
    return _geometry(spec, scene, size, notch=(ny, nx, rng.uniform(*radius)))


def _washer_rust(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    return _stain(
        scene, rng, size, strength=(0.1, 0.14), radius=(0.06, 0.11), tint=(-0.4, 0.3, 1.0), irregular=0.4, soft=0.2
    )


def _washer_off_center(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    mag = max(rng.uniform(0.12, 0.18), 2.0 / size)
    phi = rng.uniform(0.0, 2.0 * np.pi)
    return _geometry(spec, scene, size, hole=(mag * np.sin(phi), mag * np.cos(phi)))


# --------------------------------------------------------------------------------------------------
# pill
# --------------------------------------------------------------------------------------------------


def _draw_pill(rng: Gen, size: int) -> Params:
    half, rad, seam = rng.uniform(0.47, 0.52), rng.uniform(0.25, 0.28), rng.uniform(-0.04, 0.04)
    n_speck = int(rng.integers(0, 12))
    speckles = np.stack(
        [
            rng.uniform(-half - 0.5 * rad, seam - 0.05, n_speck),  # along the axis, white half only
            rng.uniform(-0.8, 0.8, n_speck) * rad,
            rng.uniform(0.5, 1.1, n_speck) * size / 128.0,  # radius in px
            rng.uniform(0.15, 0.4, n_speck),  # opacity
        ],
        axis=1,
    )
    return {
        "bg": _background(rng, size, rng.uniform(0.16, 0.22), (1.0, 1.0, 1.0)),
        "centre": rng.uniform(-0.04, 0.04, 2),
        "angle": np.deg2rad(rng.uniform(-6.0, 6.0)),
        "half": half,
        "rad": rad,
        "seam": seam,
        "white": np.array([0.90, 0.88, 0.84]) * rng.uniform(0.95, 1.03) + rng.normal(0.0, 0.01, 3),
        "red": np.array([0.72, 0.20, 0.16]) * rng.uniform(0.92, 1.06) + rng.normal(0.0, 0.01, 3),
        "speckles": speckles,
        "chip": None,  # (y, x, r) in normalised units
    }


def _pill_local(p: Params, size: int) -> Pair:
    y, x = _norm_grid(size)
    dy, dx = y - p["centre"][0], x - p["centre"][1]
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    return dx * c + dy * s, -dx * s + dy * c


def _paint_pill(p: Params, size: int) -> Pair:
    y, x = _norm_grid(size)
    px = size / 2.0
    s, t = _pill_local(p, size)
    rad = p["rad"]
    dist = np.hypot(np.maximum(np.abs(s) - p["half"], 0.0), t)
    sd = dist - rad
    if p["chip"] is not None:
        ny, nx, nr = p["chip"]
        sd = np.maximum(sd, nr - np.hypot(y - ny, x - nx))
    cov = np.clip(0.5 - sd * px, 0.0, 1.0)
    n = np.clip(dist / rad, 0.0, 1.0)
    shade = 0.62 + 0.38 * np.sqrt(1.0 - n**2)
    shade = shade * (1.0 - 0.15 * np.exp(-(((s - p["seam"]) * px / 0.8) ** 2)))
    ends = np.clip((p["half"] + 0.5 * rad - np.abs(s)) / (0.3 * rad), 0.0, 1.0)
    spec = 0.12 * np.exp(-(((t / rad + 0.45) / 0.18) ** 2)) * ends
    w = np.clip((p["seam"] - s) * px + 0.5, 0.0, 1.0)[..., None]  # 1 on the white half
    col = p["white"] * w + p["red"] * (1.0 - w)
    speck_col = np.array([0.70, 0.35, 0.30])
    for ss, ts, sr, op in p["speckles"]:
        a = (np.clip(sr - np.hypot((s - ss) * px, (t - ts) * px) + 0.5, 0.0, 1.0) * op)[..., None]
        col = col * (1.0 - a) + speck_col * a
    surf = col * shade[..., None] + spec[..., None]
    return p["bg"] * (1.0 - cov[..., None]) + surf * cov[..., None], cov


def _pill_crack(spec: _Spec, scene: _Scene, rng: Gen, size: int, *, extent: Range, width: Range, darken: Range) -> Pair:
    p = scene.params
    length = 2.0 * p["rad"] / 2.0 * rng.uniform(*extent)  # fraction of the pill width, in size units
    ang = p["angle"] + np.pi / 2.0 + (np.pi if rng.random() < 0.5 else 0.0)
    return _crack(scene, rng, size, angle=ang, length=(length, length), width=width, darken=darken)


def _pill_contamination(spec: _Spec, scene: _Scene, rng: Gen, size: int, *, radius: Range) -> Pair:
    rad = max(rng.uniform(*radius) * size / 128.0, 0.9)  # radius in px at 128²
    cy, cx = _pick_point(rng, scene.support, rad + 1.0)
    alpha = _blob(rng, size, cy, cx, rad, irregular=0.4, soft=0.6) * scene.support
    col = np.array([0.25, 0.18, 0.12]) if rng.random() < 0.6 else np.array([0.20, 0.24, 0.38])
    return np.broadcast_to(col * rng.uniform(0.8, 1.2), scene.rgb.shape).copy(), alpha


def _pill_discoloration(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    # Yellowing takes blue away, so it only shows on the white half (the red half has almost no blue to lose):
    # it is placed there, at least 2 px from the seam, else its mask would mostly cover unchanged-looking red.
    p = scene.params
    s_loc, _ = _pill_local(p, size)
    white = np.clip((p["seam"] - s_loc) * size / 2.0 - 2.0, 0.0, 1.0)
    on_white = replace(scene, support=scene.support * white)
    return _stain(on_white, rng, size, strength=(0.055, 0.07), radius=(0.06, 0.12), tint=(0.0, 0.3, 1.0), soft=0.2)


def _pill_chip(spec: _Spec, scene: _Scene, rng: Gen, size: int, *, radius: Range) -> Pair:
    p = scene.params
    half, rad = p["half"], p["rad"]
    if rng.random() < 0.6:  # a long side
        s0, t0 = rng.uniform(-half, half), rad * rng.choice([-1.0, 1.0])
    else:  # an end cap
        psi = rng.uniform(-np.pi / 2.0, np.pi / 2.0)
        sign = rng.choice([-1.0, 1.0])
        s0, t0 = sign * (half + rad * np.cos(psi)), rad * np.sin(psi)
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    nx = p["centre"][1] + s0 * c - t0 * s
    ny = p["centre"][0] + s0 * s + t0 * c
    return _geometry(spec, scene, size, chip=(ny, nx, rng.uniform(*radius)))


# --------------------------------------------------------------------------------------------------
# screw
# --------------------------------------------------------------------------------------------------


def _draw_screw(rng: Gen, size: int) -> Params:
    return {
        "bg": _background(rng, size, rng.uniform(0.62, 0.72), (1.0, 1.0, 0.98)),
        "centre": rng.uniform(-0.05, 0.05, 2),
        "angle": rng.uniform(0.0, 2.0 * np.pi),
        "w0": rng.uniform(0.062, 0.072),
        "amp": rng.uniform(0.014, 0.02),
        "pitch": rng.uniform(0.055, 0.07),
        "thread_phase": rng.uniform(0.0, 1.0),
        "head_hw": rng.uniform(0.16, 0.19),
        "tip0": rng.uniform(0.34, 0.4),
        "tip1": rng.uniform(0.52, 0.57),
        "metal": np.array([0.50, 0.50, 0.52]) * rng.uniform(0.85, 1.1),
        "light": rng.uniform(-0.6, 0.6),
        "bend": None,  # (s_b, beta): shaft bent by beta past s_b
        "broken": None,  # shaft ends at this s
        "flat": None,  # (centre, half length) of flattened thread
    }


_HEAD_S0, _HEAD_S1 = -0.62, -0.47


def _screw_shaft(p: Params, s: Array, t: Array) -> Pair:
    """Signed distance and shading of the threaded shaft in local (axis, across) coordinates."""
    ph = s / p["pitch"] + p["thread_phase"]
    tri = np.abs(ph - np.floor(ph) - 0.5) * 2.0
    flat = 0.0
    if p["flat"] is not None:
        fc, fh = p["flat"]
        flat = np.clip((fh - np.abs(s - fc)) / 0.012, 0.0, 1.0)
    w = p["w0"] + p["amp"] * (1.0 - flat) * tri
    taper = np.clip((p["tip1"] - s) / (p["tip1"] - p["tip0"]), 0.0, 1.0)
    w = np.where(s > p["tip0"], w * taper, w)
    end = p["tip1"] if p["broken"] is None else p["broken"]
    sd = np.maximum(np.maximum(np.abs(t) - w, _HEAD_S1 - 0.01 - s), s - end)
    tw = np.clip(t / np.maximum(w, 1e-3), -1.0, 1.0)
    cyl = np.sqrt(1.0 - tw**2)
    ridge = 0.5 + 0.5 * np.sin(2.0 * np.pi * ph + 2.2 * tw)
    shade = (0.35 + 0.45 * cyl + 0.12 * p["light"] * tw) * (0.82 + 0.3 * ridge * (1.0 - flat) + 0.15 * flat)
    return sd, shade


def _paint_screw(p: Params, size: int) -> Pair:
    y, x = _norm_grid(size)
    px = size / 2.0
    dy, dx = y - p["centre"][0], x - p["centre"][1]
    c, sn = np.cos(p["angle"]), np.sin(p["angle"])
    s, t = dx * c + dy * sn, -dx * sn + dy * c
    sd, shade = _screw_shaft(p, s, t)
    if p["bend"] is not None:
        sb, beta = p["bend"]
        cb, sbeta = np.cos(beta), np.sin(beta)
        s2 = sb + (s - sb) * cb + t * sbeta
        t2 = -(s - sb) * sbeta + t * cb
        sd_a = np.maximum(sd, s - sb)
        sd_b, shade_b = _screw_shaft(p, s2, t2)
        sd_b = np.maximum(sd_b, sb - s2)
        shade = np.where(sd_b < sd_a, shade_b, shade)
        sd = np.minimum(sd_a, sd_b)
    hc, hl, hw, rr = (_HEAD_S0 + _HEAD_S1) / 2.0, (_HEAD_S1 - _HEAD_S0) / 2.0, p["head_hw"], 0.02
    qs, qt = np.abs(s - hc) - (hl - rr), np.abs(t) - (hw - rr)
    sd_head = np.hypot(np.maximum(qs, 0.0), np.maximum(qt, 0.0)) + np.minimum(np.maximum(qs, qt), 0.0) - rr
    th = np.clip(t / hw, -1.0, 1.0)
    head_shade = 0.4 + 0.45 * np.sqrt(1.0 - th**2) + 0.1 * p["light"] * th
    shade = np.where(sd_head < sd, head_shade, shade)
    cov = np.clip(0.5 - np.minimum(sd, sd_head) * px, 0.0, 1.0)
    surf = p["metal"] * shade[..., None]
    return p["bg"] * (1.0 - cov[..., None]) + surf * cov[..., None], cov


def _screw_bent(spec: _Spec, scene: _Scene, rng: Gen, size: int, *, angle: Range, where: Range) -> Pair:
    beta = rng.uniform(*angle) * rng.choice([-1.0, 1.0])  # radians
    return _geometry(spec, scene, size, bend=(rng.uniform(*where), beta))


def _screw_broken_tip(spec: _Spec, scene: _Scene, rng: Gen, size: int, *, at: Range) -> Pair:
    return _geometry(spec, scene, size, broken=rng.uniform(*at))


def _screw_thread_damage(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    p = scene.params
    return _geometry(spec, scene, size, flat=(rng.uniform(-0.35, 0.2), rng.uniform(1.5, 2.5) * p["pitch"]))


def _screw_scratch(
    spec: _Spec,
    scene: _Scene,
    rng: Gen,
    size: int,
    *,
    length: Range,
    width: Range,
    amount: Range,
    along: bool,
) -> Pair:
    """``along``: lay the scratch along the shaft (a scratch in any direction crosses the thin shaft in a few px)."""
    target = np.minimum(scene.params["metal"] * 1.6, 1.0)
    angle = scene.params["angle"] if along else None
    return _scratch(scene, rng, size, length=length, width=width, target=target, amount=amount, angle=angle)


# --------------------------------------------------------------------------------------------------
# photo textures (the mvtec_like set): scikit-image's bundled photographs of gravel, brick and grass
# --------------------------------------------------------------------------------------------------

_PHOTO_SIDE = 384.0  # photo pixels one image spans at scale 1, whatever image_size is


@functools.lru_cache(maxsize=4)
def _photo(name: str) -> Array:
    """One of scikit-image's bundled 512² grey photographs in [0, 1] (installed with scikit-image, no download)."""
    try:
        from skimage import data as skdata
    except ImportError as exc:  # pragma: no cover - scikit-image is a dependency
        raise ImportError(
            f"the generated mvtec_like set paints its textures from scikit-image's bundled photo {name!r}; "
            "install scikit-image"
        ) from exc
    img = np.asarray(getattr(skdata, name)(), dtype=np.float64) / 255.0
    img.setflags(write=False)
    return img


@functools.lru_cache(maxsize=16)
def _photo_prefiltered(name: str, size: int) -> Array:
    """The photo low-passed for sampling at ``size``: a smaller image must not alias the grain."""
    step = _PHOTO_SIDE / size
    img = _photo(name)
    out = ndimage.gaussian_filter(img, 0.45 * step) if step > 1.0 else img.copy()
    out.setflags(write=False)
    return out


def _photo_drawer(photo: str, dark: Sequence[float], light: Sequence[float]) -> Callable[[Gen, int], Params]:
    """Normal variation of a photo texture: where the camera looks, ±3° rotation, ±3 % scale, tone and tint."""

    def draw(rng: Gen, size: int) -> Params:
        return {
            "photo": photo,
            "centre": rng.uniform(0.41, 0.59, 2) * np.array(_photo(photo).shape, dtype=np.float64),
            "angle": np.deg2rad(rng.uniform(-3.0, 3.0)),
            "scale": rng.uniform(0.97, 1.03),
            "gamma": rng.uniform(0.95, 1.05),
            "dark": np.asarray(dark, dtype=np.float64) * rng.uniform(0.98, 1.02),
            "light": np.asarray(light, dtype=np.float64) * rng.uniform(0.98, 1.02),
        }

    return draw


def _paint_photo(p: Params, size: int) -> Pair:
    yy, xx = _pix_grid(size)
    c0 = (size - 1) / 2.0
    step = _PHOTO_SIDE / size * p["scale"]
    c, s = np.cos(p["angle"]), np.sin(p["angle"])
    dy, dx = (yy - c0) * step, (xx - c0) * step
    ys = p["centre"][0] + dy * c - dx * s
    xs = p["centre"][1] + dy * s + dx * c
    g = ndimage.map_coordinates(_photo_prefiltered(p["photo"], size), [ys, xs], order=1, mode="mirror")
    g = np.clip(g, 0.0, 1.0) ** p["gamma"]
    return p["dark"] + (p["light"] - p["dark"]) * g[..., None], np.ones((size, size))


def _px(size: int, at_256: float) -> float:
    """A length given in pixels at 256², scaled to ``size``."""
    return at_256 * size / 256.0


def _photo_scratch(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    target = np.minimum(scene.params["light"] * 1.2, 1.0)
    width = (_px(size, 2.0), _px(size, 3.5))
    return _scratch(scene, rng, size, length=(0.2, 0.4), width=width, target=target, amount=(0.6, 0.85))


def _photo_crack(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    width = (_px(size, 3.0), _px(size, 5.0))
    return _crack(scene, rng, size, angle=None, length=(0.15, 0.3), width=width, darken=(0.25, 0.4), branches=1)


def _photo_hole(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    rad = max(rng.uniform(0.025, 0.05) * size, 1.5)
    cy, cx = _pick_point(rng, scene.support, rad + 1.0)
    alpha = _blob(rng, size, cy, cx, rad, irregular=0.35, soft=_px(size, 1.5))
    return np.broadcast_to(scene.params["dark"] * 0.3, scene.rgb.shape).copy(), alpha


def _photo_stain(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    return _stain(scene, rng, size, strength=(0.2, 0.35), radius=(0.05, 0.1), tint=(0.2, 0.6, 1.0))


def _photo_foreign(spec: _Spec, scene: _Scene, rng: Gen, size: int) -> Pair:
    """A patch of another material in the same colours: local statistics change, the mean barely does."""
    others = [name for name in _PHOTO_TONES if name != scene.params["photo"]]
    other = {**scene.params, "photo": others[int(rng.integers(len(others)))]}
    layer, _ = _paint_photo(other, size)
    rad = max(rng.uniform(0.05, 0.09) * size, 2.0)
    cy, cx = _pick_point(rng, scene.support, rad)
    return layer, _blob(rng, size, cy, cx, rad, irregular=0.3, soft=_px(size, 2.0))


_PHOTO_DEFECTS: dict[str, DefectFn] = {
    "scratch": _photo_scratch,
    "crack": _photo_crack,
    "hole": _photo_hole,
    "stain": _photo_stain,
    "foreign": _photo_foreign,
}

# --------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------

_SPECS: dict[str, _Spec] = {
    "fabric": _Spec(
        "texture",
        _draw_fabric,
        _paint_fabric,
        {
            "hole": _fabric_hole,
            "thread": _fabric_thread,
            "stain": _fabric_stain,
            "misweave": _fabric_misweave,
        },
    ),
    "wood": _Spec(
        "texture",
        _draw_wood,
        _paint_wood,
        {"scratch": _wood_scratch, "crack": _wood_crack, "hole": _wood_hole, "stain": _wood_stain},
    ),
    "stone": _Spec(
        "texture",
        _draw_stone,
        _paint_stone,
        {"crack": _stone_crack, "chip": _stone_chip, "stain": _stone_stain, "smear": _stone_smear},
        gray=True,
    ),
    "washer": _Spec(
        "object",
        _draw_washer,
        _paint_washer,
        {
            "scratch": partial(_washer_scratch, length=(0.12, 0.25), width=(1.0, 1.6), amount=(0.5, 0.8)),
            "notch": partial(_washer_notch, radius=(0.07, 0.12)),
            "rust": _washer_rust,
            "off_center": _washer_off_center,
        },
    ),
    "pill": _Spec(
        "object",
        _draw_pill,
        _paint_pill,
        {
            "crack": partial(_pill_crack, extent=(0.6, 1.0), width=(1.2, 1.8), darken=(0.4, 0.55)),
            "contamination": partial(_pill_contamination, radius=(3.5, 5.0)),
            "discoloration": _pill_discoloration,
            "chip": partial(_pill_chip, radius=(0.09, 0.14)),
        },
    ),
    "screw": _Spec(
        "object",
        _draw_screw,
        _paint_screw,
        {
            "bent": partial(_screw_bent, angle=(0.17, 0.3), where=(0.0, 0.25)),
            "broken_tip": partial(_screw_broken_tip, at=(0.0, 0.2)),
            "thread_damage": _screw_thread_damage,
            "scratch": partial(_screw_scratch, length=(0.2, 0.35), width=(2.4, 3.2), amount=(0.8, 0.95), along=True),
        },
    ),
}

# The default set's six categories are the procedural ones above; the photo textures join the mvtec_like set.
_DEFAULT_CATEGORIES = tuple(_SPECS)
_PHOTO_TONES = {  # (dark, light) colour each grey photograph is mapped between
    "gravel": ((0.16, 0.15, 0.13), (0.86, 0.82, 0.74)),
    "brick": ((0.22, 0.10, 0.08), (0.86, 0.56, 0.44)),
    "grass": ((0.05, 0.14, 0.04), (0.62, 0.80, 0.38)),
}
_SPECS.update(
    {
        name: _Spec("texture", _photo_drawer(name, *tones), _paint_photo, _PHOTO_DEFECTS, lighting=0.25)
        for name, tones in _PHOTO_TONES.items()
    }
)

# The mvtec_like set shares the default set's objects but keeps their defects as generator version 1 drew them:
# its published numbers were measured on exactly these images, and calibrating the default set (version 2) must
# not move them. Same functions, so the same draws from the same generator: byte-identical output.
_MVTEC_LIKE_OBJECT_DEFECTS: dict[str, dict[str, DefectFn]] = {
    "pill": {
        "crack": partial(_pill_crack, extent=(0.3, 0.7), width=(0.7, 1.3), darken=(0.4, 0.55)),
        "contamination": partial(_pill_contamination, radius=(1.2, 3.0)),
        "chip": partial(_pill_chip, radius=(0.05, 0.1)),
    },
    "washer": {
        "scratch": partial(_washer_scratch, length=(0.08, 0.22), width=(0.7, 1.2), amount=(0.35, 0.7)),
        "notch": partial(_washer_notch, radius=(0.06, 0.12)),
    },
    "screw": {
        "broken_tip": partial(_screw_broken_tip, at=(0.15, 0.3)),
        "scratch": partial(_screw_scratch, length=(0.05, 0.14), width=(0.6, 1.0), amount=(0.4, 0.7), along=False),
        "bent": partial(_screw_bent, angle=(0.1, 0.22), where=(0.0, 0.25)),
    },
}
#: Per-preset replacements of :data:`_SPECS` entries (a preset not listed, or a category it does not replace,
#: uses ``_SPECS``).
_PRESET_SPECS: dict[str, dict[str, _Spec]] = {
    "mvtec_like": {name: replace(_SPECS[name], defects=d) for name, d in _MVTEC_LIKE_OBJECT_DEFECTS.items()},
}


def _spec_for(category: str, preset: str) -> _Spec:
    """The spec a preset draws ``category`` with: its own version of a shared object, else the common one."""
    return _PRESET_SPECS.get(preset, {}).get(category) or _SPECS[category]


#: Generated sets: category → the defect types drawn for it. ``default`` is the embedded default benchmark
#: (128², small, fast); ``mvtec_like`` is the diagnosis set (issue 13): 256², real photo textures, objects,
#: local defects that are visible at 256², on which the patch-kNN reference scores as it does on MVTec AD.
SYNTHETIC_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "default": {name: tuple(_SPECS[name].defects) for name in _DEFAULT_CATEGORIES},
    "mvtec_like": {
        "gravel": tuple(_PHOTO_DEFECTS),
        "brick": tuple(_PHOTO_DEFECTS),
        "grass": tuple(_PHOTO_DEFECTS),
        "pill": ("crack", "contamination", "chip"),
        "washer": ("scratch", "notch"),
        "screw": ("broken_tip", "scratch", "bent"),
    },
}
SYNTHETIC_CATEGORIES: tuple[str, ...] = tuple(SYNTHETIC_SETS["default"])
SYNTHETIC_DEFECTS: dict[str, tuple[str, ...]] = dict(SYNTHETIC_SETS["default"])
SYNTHETIC_TEXTURES: tuple[str, ...] = tuple(n for n in SYNTHETIC_CATEGORIES if _SPECS[n].kind == "texture")
SYNTHETIC_OBJECTS: tuple[str, ...] = tuple(n for n in SYNTHETIC_CATEGORIES if _SPECS[n].kind == "object")
#: The low-contrast defect of each category (a global-statistics detector should not catch it).
SUBTLE_DEFECTS: dict[str, str] = {
    "fabric": "stain",
    "wood": "stain",
    "stone": "stain",
    "washer": "rust",
    "pill": "discoloration",
    "screw": "thread_damage",
}


# --------------------------------------------------------------------------------------------------
# Rendering one sample
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Post:
    """Pixel-wise camera effects, identical with and without the defect so masks stay exact."""

    gain: Array  # (H, W) global gain x lighting gradient x vignette
    channel_gain: Array  # (3,)
    sigma: float  # sensor noise std


def _draw_post(rng: Gen, size: int, gray: bool, lighting: float = 1.0) -> _Post:
    y, x = _norm_grid(size)
    beta = rng.uniform(0.0, 2.0 * np.pi)
    grad, vig = rng.uniform(0.0, 0.08 * lighting), rng.uniform(0.0, 0.08 * lighting)
    gain = (1.0 + lighting * rng.uniform(-0.14, 0.12)) * (1.0 + grad * (x * np.cos(beta) + y * np.sin(beta)))
    gain = gain * (1.0 - vig * (x**2 + y**2) / 2.0)
    channel_gain = np.ones(3) if gray else 1.0 + rng.normal(0.0, 0.02 * lighting, 3)
    return _Post(gain, channel_gain, float(rng.uniform(0.004, 0.012)))


def _finish(rgb: Array, post: _Post, noise: Array) -> Array:
    out = rgb * post.gain[..., None] * post.channel_gain + noise
    return np.round(np.clip(out, 0.0, 1.0) * 255.0).astype(np.uint8)


def _force_difference(img: Array, clean: Array, mask: Array, direction: Array) -> Array:
    """Nudge mask pixels that quantised back to their clean value one grey level in the defect's direction."""
    same = mask & np.all(img == clean, axis=-1)
    if not same.any():
        return img
    fallback = np.where(clean.mean(-1) < 128.0, 1, -1)
    step = np.where(direction > 0, 1, np.where(direction < 0, -1, fallback))[..., None].astype(np.int16)
    base = clean.astype(np.int16)
    cand = base + step
    cand = np.where((cand < 0) | (cand > 255), base - step, cand)
    return np.where(same[..., None], cand, img).astype(np.uint8)


def sample_entropy(seed: int, category: str, split: str, defect: str | None, index: int) -> tuple[int, ...]:
    """The per-image seed key; names are hashed so adding categories or defects never shifts the others."""
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be non-negative, got seed={seed}, index={index}")
    return (int(seed), _crc(category), _SPLIT_CODES[split], _crc(defect or "good"), int(index))


def render_sample(
    category: str, defect: str | None, *, image_size: int, entropy: Sequence[int], preset: str = "default"
) -> Pair:
    """Render one image (H, W, 3) uint8 and its mask (H, W) uint8 in {0, 255}.

    The scene, the camera effects and the noise come from generators independent of the defect's, so
    ``render_sample(c, None, entropy=e)`` is exactly the image ``render_sample(c, d, entropy=e)`` would
    have been without its defect: tests use this to check masks bit-exactly. ``preset`` picks a set's own
    version of a category two sets share (the mvtec_like set keeps the objects' version-1 defects).
    """
    if category not in _SPECS:
        raise ValueError(f"unknown synthetic category {category!r}; known: {tuple(_SPECS)}")
    if preset not in SYNTHETIC_SETS:
        raise ValueError(f"unknown preset {preset!r}; known: {tuple(SYNTHETIC_SETS)}")
    spec = _spec_for(category, preset)
    if defect is not None and defect not in spec.defects:
        raise ValueError(f"unknown defect {defect!r} for {category!r}; known: {tuple(spec.defects)}")
    size = int(image_size)
    base_ss, defect_ss, noise_ss = np.random.SeedSequence(list(entropy)).spawn(3)
    base = np.random.default_rng(base_ss)
    params = spec.draw(base, size)
    rgb, support = spec.paint(params, size)
    scene = _Scene(rgb, support, params)
    post = _draw_post(base, size, spec.gray, spec.lighting)
    noise = np.random.default_rng(noise_ss).standard_normal((size, size, 1 if spec.gray else 3)) * post.sigma
    clean = _finish(rgb, post, noise)
    if defect is None:
        return clean, np.zeros((size, size), dtype=np.uint8)

    drng = np.random.default_rng(defect_ss)
    for _ in range(_MAX_DEFECT_TRIES):
        layer, alpha = spec.defects[defect](spec, scene, drng, size)
        alpha = np.where(alpha >= _ALPHA_CUT, np.minimum(alpha, 1.0), 0.0)
        mask = alpha > 0.0
        if mask.any():
            break
    else:  # pragma: no cover - only reachable for absurdly small images
        raise RuntimeError(f"could not place a {defect!r} defect on {category!r} at {size}px")
    a = alpha[..., None]
    mixed = np.where(mask[..., None], rgb * (1.0 - a) + layer * a, rgb)
    img = _finish(mixed, post, noise)
    img = _force_difference(img, clean, mask, (mixed - rgb).sum(-1))
    return img, mask.astype(np.uint8) * 255


def _object_support(category: str, *, image_size: int, entropy: Sequence[int]) -> Array:
    """Coverage of the defect-free object in ``render_sample``'s scene; lets tests check placement."""
    spec = _SPECS[category]
    base_ss, _, _ = np.random.SeedSequence(list(entropy)).spawn(3)
    params = spec.draw(np.random.default_rng(base_ss), int(image_size))
    return spec.paint(params, int(image_size))[1]


# --------------------------------------------------------------------------------------------------
# Writing the tree
# --------------------------------------------------------------------------------------------------


def _save_png(path: Path, arr: Array) -> None:
    Image.fromarray(arr).save(path, format="PNG", compress_level=6)


def _write_tree(
    out: Path,
    *,
    seed: int,
    size: int,
    n_train: int,
    n_test_good: int,
    n_per_defect: int,
    categories: Sequence[str],
    defects: dict[str, tuple[str, ...]],
    preset: str,
) -> int:
    """Write every category under ``out``; returns the number of files written."""
    n_files = 0
    for cat in categories:
        jobs: list[tuple[Path, str, str | None, int, Path | None]] = []
        for i in range(n_train):
            jobs.append((out / cat / "train" / "good" / f"{i:03d}.png", "train", None, i, None))
        for i in range(n_test_good):
            jobs.append((out / cat / "test" / "good" / f"{i:03d}.png", "test", None, i, None))
        for d in defects[cat]:
            for i in range(n_per_defect):
                mask_path = out / cat / "ground_truth" / d / f"{i:03d}_mask.png"
                jobs.append((out / cat / "test" / d / f"{i:03d}.png", "test", d, i, mask_path))
        for img_path, split, defect, i, mask_path in jobs:
            key = sample_entropy(seed, cat, split, defect, i)
            img, mask = render_sample(cat, defect, image_size=size, entropy=key, preset=preset)
            img_path.parent.mkdir(parents=True, exist_ok=True)
            _save_png(img_path, img)
            n_files += 1
            if mask_path is not None:
                mask_path.parent.mkdir(parents=True, exist_ok=True)
                _save_png(mask_path, mask)
                n_files += 1
    return n_files


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        with (root / MANIFEST_NAME).open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _tree_checksums(root: Path) -> dict[str, str]:
    """:func:`~adzoo.utils.io.file_digest` of every file under ``root`` but the manifest, by relative POSIX path."""
    sums = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME:
            sums[path.relative_to(root).as_posix()] = file_digest(path)
    return sums


def _damaged_files(root: Path) -> list[str]:
    """Files of a complete-looking tree that are missing or changed since generation (a truncated copy, a full
    disk, a stray edit): a cached set is only reused when every file is the one the manifest vouches for."""
    expected = (_read_manifest(root) or {}).get("checksums")
    if not isinstance(expected, dict) or not expected:
        return [f"{MANIFEST_NAME} (no checksums)"]
    damaged = []
    for rel, digest in expected.items():
        path = root / rel
        if not path.is_file() or file_digest(path) != digest:
            damaged.append(rel)
    return damaged


def _manifest_matches(root: Path, params: dict[str, Any]) -> bool:
    data = _read_manifest(root)
    return data is not None and data.get("version") == GENERATOR_VERSION and data.get("params") == params


def _write_manifest(root: Path, params: dict[str, Any], n_files: int) -> None:
    """Write the completion marker atomically (temp file + os.replace), so it is never half written."""
    payload = {
        "generator": "adzoo.data.synthetic",
        "version": GENERATOR_VERSION,
        "params": params,
        "files": n_files,
        "defects": {c: list(SYNTHETIC_SETS[params["preset"]][c]) for c in params["categories"]},
        "checksums": _tree_checksums(root),
    }
    tmp = root / f"{MANIFEST_NAME}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with tmp.open("x", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=2, sort_keys=True)
            fh.write("\n")
        tmp.replace(root / MANIFEST_NAME)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _check_replaceable(root: Path, categories: Sequence[str]) -> None:
    """Refuse to replace a directory that is not ours: a typo in ``root`` must not delete user data."""
    if not root.exists():
        return
    if not root.is_dir():
        raise FileExistsError(f"{root} exists and is not a directory")
    if _read_manifest(root) is not None:
        return
    allowed = set(_SPECS) | set(categories) | {MANIFEST_NAME}
    foreign = sorted(e.name for e in root.iterdir() if e.name not in allowed)
    if foreign:
        raise FileExistsError(
            f"{root} exists, has no {MANIFEST_NAME} and holds {foreign[:5]}; refusing to replace a directory "
            "that is not an adzoo synthetic tree (pick an empty or new root)"
        )


def _unique_sibling(root: Path, tag: str) -> Path:
    """A hidden, process-unique sibling of ``root``: same file system, so renames are atomic."""
    return root.parent / f".{root.name}.{tag}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _swap_into_place(tmp: Path, root: Path, params: dict[str, Any], overwrite: bool) -> None:
    """Move a finished tree to ``root``; each rename is atomic, so a complete-looking tree is complete."""
    old: Path | None = None
    try:
        if root.exists():
            old = _unique_sibling(root, "old")
            old.mkdir()
            with contextlib.suppress(FileNotFoundError):  # a concurrent generator may have moved it already
                root.replace(old / "tree")
        try:
            tmp.replace(root)
        except OSError:
            # Another process finished first; its tree is as good as ours when the parameters agree.
            if not overwrite and _manifest_matches(root, params):
                return
            raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def generate_synthetic_dataset(
    root: str | Path,
    *,
    seed: int = 0,
    image_size: int = 128,
    n_train: int = 60,
    n_test_good: int = 12,
    n_test_per_defect: int = 6,
    categories: Sequence[str] | None = None,
    overwrite: bool = False,
    preset: str = "default",
) -> Path:
    """Write (or reuse) the synthetic MVTec-layout data set under ``root`` and return ``root``.

    ``preset`` names the set in :data:`SYNTHETIC_SETS` (its categories and defect types).

    The manifest is written last and the tree is built in a hidden sibling directory and renamed into
    place, so an interrupted run never leaves a tree that looks complete; a matching manifest makes this
    a no-op unless ``overwrite``.
    """
    if preset not in SYNTHETIC_SETS:
        raise ValueError(f"data.source.preset must be one of {tuple(SYNTHETIC_SETS)}, got {preset!r}")
    known = SYNTHETIC_SETS[preset]
    cats = list(dict.fromkeys(tuple(known) if categories is None else categories))
    unknown = [c for c in cats if c not in known]
    if unknown:
        raise ValueError(f"unknown categories {unknown} for the generated {preset!r} set; known: {tuple(known)}")
    if not cats:
        raise ValueError("categories must not be empty")
    if image_size < 16:
        raise ValueError(f"image_size must be >= 16, got {image_size}")
    if seed < 0 or n_train < 1 or n_test_good < 0 or n_test_per_defect < 0:
        raise ValueError("need seed >= 0, n_train >= 1, n_test_good >= 0 and n_test_per_defect >= 0")

    root = Path(root).expanduser().absolute()
    params: dict[str, Any] = {
        "seed": int(seed),
        "image_size": int(image_size),
        "n_train": int(n_train),
        "n_test_good": int(n_test_good),
        "n_test_per_defect": int(n_test_per_defect),
        "categories": cats,
        "preset": preset,
    }
    if not overwrite and _manifest_matches(root, params):
        damaged = _damaged_files(root)
        if not damaged:
            return root
        log.warning(
            "generated data set %s has %d damaged file(s) (%s); regenerating it",
            root,
            len(damaged),
            ", ".join(damaged[:5]),
        )
        overwrite = True
    _check_replaceable(root, cats)
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique_sibling(root, "tmp")
    tmp.mkdir()  # unlike mkdtemp this honours the umask, so a shared cache stays readable
    try:
        n_files = _write_tree(
            tmp,
            seed=params["seed"],
            size=params["image_size"],
            n_train=params["n_train"],
            n_test_good=params["n_test_good"],
            n_per_defect=params["n_test_per_defect"],
            categories=cats,
            defects=known,
            preset=preset,
        )
        _write_manifest(tmp, params, n_files)
        _swap_into_place(tmp, root, params, overwrite)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return root
