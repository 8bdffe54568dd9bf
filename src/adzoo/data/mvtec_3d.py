"""MVTec 3D-AD (Bergmann et al., VISAPP 2022), its RGB images only, read in the layout it is distributed in.

Layout, per category (``bagel, cable_gland, carrot, cookie, dowel, foam, peach, potato, rope, tire``)::

    <root>/<category>/train/good/rgb/*.png            normal training images
    <root>/<category>/validation/good/rgb/*.png       normal validation images: the datamodule's validation split
    <root>/<category>/test/<defect>/rgb/<stem>.png    the test split (``good`` and one folder per defect type)
    <root>/<category>/test/<defect>/gt/<stem>.png     its mask, same stem (0/255; ``good/gt`` holds empty masks)
    <root>/<category>/<split>/<defect>/xyz/<stem>.tiff   the organised point cloud: left out

Only the RGB images are read: the ``xyz/*.tiff`` point clouds are never listed, checked, fingerprinted or loaded
(every method here is 2D), and the empty masks of ``test/good/gt`` are not read either (a good image has no defect
pixel by definition). Files beside the split folders (``calibration/``, ``class_ids.json``, ``readme.txt``) are not
data. Image sizes differ between categories; each image is resized to ``data.image_size`` (square) when read.
"""

# Layout source: the MVTec 3D-AD release tree (train|validation/good/{rgb,xyz}, test/<defect>/{rgb,gt,xyz}) as read
# by anomalib's data/datasets/depth/mvtec_3d.py (gt/<name> for rgb/<name>, xyz/<stem>.tiff) and its CATEGORIES.

from __future__ import annotations

from adzoo.data.layouts import BenchmarkFolderSource, Splits, anomalous_records, folder_images, normal_records
from adzoo.data.mvtec import DataError, _Skipped, is_hidden_or_system

#: the ten objects of the release
CATEGORIES = ("bagel", "cable_gland", "carrot", "cookie", "dowel", "foam", "peach", "potato", "rope", "tire")


class MVTec3DSource(BenchmarkFolderSource):
    """MVTec 3D-AD's RGB images: ``validation/good/rgb`` is the validation split, ``test/<defect>/gt`` the masks;
    the point clouds are left out (see the module docstring)."""

    benchmark = "MVTec 3D-AD"
    layout = "<root>/<category>/{train/good/rgb, validation/good/rgb, test/<defect>/rgb, test/<defect>/gt}"

    def _index(self, category: str, skipped: _Skipped) -> Splits:
        base = self.root / category
        train = folder_images(base / "train" / "good" / "rgb", "the normal training images", skipped)
        val = folder_images(base / "validation" / "good" / "rgb", "the normal validation images", skipped)
        test_dir = base / "test"
        if not test_dir.is_dir():
            raise DataError(f"missing folder {test_dir} (expected test/<defect>/rgb for category '{category}')")
        defects = []
        for entry in sorted(test_dir.iterdir()):
            if is_hidden_or_system(entry.name):
                (skipped.folders if entry.is_dir() else skipped.files).append(entry)
            elif entry.is_dir():
                defects.append(entry)
        names = [d.name for d in defects]
        if "good" not in names or len(names) < 2:
            raise DataError(
                f"empty category: {test_dir} holds {names or 'no folder'} (expected test/good/rgb and at least one "
                "test/<defect>/rgb)"
            )
        test = []
        for defect in defects:
            images = folder_images(defect / "rgb", f"the RGB images of test/{defect.name}", skipped)
            if defect.name == "good":
                test += normal_records(images, category, pixel_labels=True)
                continue
            if not (defect / "gt").is_dir():
                raise DataError(f"missing folder {defect / 'gt'} (expected the masks of {defect / 'rgb'}, same stem)")
            test += anomalous_records(images, defect / "gt", ".png", category, defect.name)
        return normal_records(train, category), normal_records(val, category), test
