"""Volumes in and out: one ``Volume`` type, read from and written to NRRD, NIfTI, MHA and DICOM.

Geometry follows SimpleITK/ITK (LPS physical space): ``spacing`` and ``origin`` are (x, y, z)
in mm and ``direction`` is the row-major 3×3 cosine matrix, while ``array`` is indexed
(z, y, x).  Reading and writing round-trips geometry exactly, and every write is atomic
(temporary file in the target folder, then rename), so a crash or Cancel never leaves a
half-written output.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from meddiffusion.files import atomic_write

__all__ = [
    "Volume", "VolumeError", "read_volume", "write_volume", "read_sequence", "write_sequence",
    "VOLUME_SUFFIXES", "write_segmentation", "read_segmentation",
]

VOLUME_SUFFIXES = (".nrrd", ".nhdr", ".nii", ".nii.gz", ".mha", ".mhd")
_UNITS_BY_MODALITY = {"CT": "HU", "PT": "Bq/ml", "NM": "counts", "MR": "a.u."}


class VolumeError(ValueError):
    """A volume could not be read or is not what the operation needs."""


@dataclass
class Volume:
    """A 3D scalar image with its physical geometry.

    ``array`` is float32 (z, y, x).  ``modality`` uses DICOM terms (CT, MR, PT, NM) and
    ``units`` says what the numbers mean (HU for CT), so a result can stay in HU.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    modality: str = ""
    units: str = ""
    metadata: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spacing = tuple(float(s) for s in self.spacing)
        self.origin = tuple(float(o) for o in self.origin)
        self.direction = tuple(float(d) for d in self.direction)
        if not self.units and self.modality in _UNITS_BY_MODALITY:
            self.units = _UNITS_BY_MODALITY[self.modality]

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        return self.spacing[::-1]

    def with_array(self, array: np.ndarray, **changes) -> "Volume":
        """A new volume on the same grid (e.g. a model's output), input left untouched."""
        if array.shape != self.array.shape:
            raise VolumeError(f"result shape {array.shape} differs from the input grid {self.array.shape}")
        return replace(self, array=array, metadata=dict(self.metadata), **changes)

    def index_to_physical(self, zyx) -> np.ndarray:
        """Physical (LPS, mm) coordinates of a (z, y, x) index."""
        ijk = np.asarray(zyx, dtype=float)[::-1]
        d = np.asarray(self.direction).reshape(3, 3)
        return np.asarray(self.origin) + d @ (ijk * np.asarray(self.spacing))

    # -- SimpleITK bridge ---------------------------------------------------------------
    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, modality: str = "", units: str = "") -> "Volume":
        validate_image(image)
        array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
        validate_array(array)
        return cls(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                   modality=modality, units=units)


# -- validation ------------------------------------------------------------------------------
def validate_image(image: sitk.Image, source: str = "image") -> None:
    if image.GetDimension() != 3:
        raise VolumeError(
            f"{source} is {image.GetDimension()}D; a 3D volume (z, y, x) is needed"
            + (" — for a 4D series, use a sequence input" if image.GetDimension() == 4 else ""))
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise VolumeError(
            f"{source} has {image.GetNumberOfComponentsPerPixel()} components per voxel "
            "(colour or vector image); a scalar (grey-level) volume is needed")
    if 0 in image.GetSize():
        raise VolumeError(f"{source} is empty (size {image.GetSize()})")


def validate_array(array: np.ndarray, source: str = "image") -> None:
    if array.ndim != 3:
        raise VolumeError(f"{source} has {array.ndim} dimensions; a 3D array (z, y, x) is needed")
    if array.size == 0:
        raise VolumeError(f"{source} is empty (shape {array.shape})")
    bad = ~np.isfinite(array)
    if bad.any():
        raise VolumeError(f"{source} contains {int(bad.sum())} NaN/Inf voxels; all voxels must be finite")


# -- reading -------------------------------------------------------------------------------
def read_volume(path: str | os.PathLike, modality: str = "") -> Volume:
    """Read a 3D scalar volume from a file (NRRD, NIfTI, MHA, single DICOM) or a DICOM folder.

    For DICOM, CT values are returned in HU (rescale slope/intercept applied) and the
    modality is taken from the header; for other formats pass ``modality`` if known.
    """
    path = Path(path)
    if not path.exists():
        raise VolumeError(f"input not found: {path}")
    if path.is_dir():
        image, dicom_modality = _read_dicom_series(path)
    else:
        try:
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(path))
            reader.ReadImageInformation()
            dicom_modality = reader.GetMetaData("0008|0060").strip() if reader.HasMetaDataKey("0008|0060") else ""
            image = reader.Execute()
        except RuntimeError as exc:
            raise VolumeError(f"cannot read {path}: not a readable NRRD, NIfTI, MHA or DICOM image "
                              f"({_first_line(exc)})") from None
        if image.GetDimension() == 2:  # a single DICOM/2D file: one slice
            image = sitk.JoinSeries(image)
            if not dicom_modality:
                raise VolumeError(f"{path} is a 2D image; a 3D volume (z, y, x) is needed")
    validate_image(image, source=str(path))
    array = sitk.GetArrayFromImage(image).astype(np.float32, copy=False)
    validate_array(array, source=str(path))
    return Volume(array, image.GetSpacing(), image.GetOrigin(), image.GetDirection(),
                  modality=modality or dicom_modality)


def _read_dicom_series(folder: Path) -> tuple[sitk.Image, str]:
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise VolumeError(f"no DICOM series found in folder {folder}")
    if len(series) > 1:
        sizes = {s: len(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), s)) for s in series}
        raise VolumeError(f"folder {folder} holds {len(series)} DICOM series "
                          f"({', '.join(f'{s}: {n} files' for s, n in sizes.items())}); "
                          "put one series per folder")
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    reader.MetaDataDictionaryArrayUpdateOn()
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise VolumeError(f"cannot read the DICOM series in {folder} ({_first_line(exc)})") from None
    modality = reader.GetMetaData(0, "0008|0060").strip() if reader.HasMetaDataKey(0, "0008|0060") else ""
    return image, modality


# -- writing -------------------------------------------------------------------------------
def write_volume(volume: Volume, path: str | os.PathLike, *, compress: bool = True,
                 dtype: str | None = None) -> Path:
    """Write atomically.  A path without a known suffix is taken as a DICOM series folder.

    ``dtype`` (e.g. ``"int16"`` for CT in HU, ``"uint8"`` for label maps) stores the voxels
    rounded in that type, halving file size; values outside its range are an error.
    """
    path = Path(path)
    validate_array(volume.array, source="volume to write")
    if _has_volume_suffix(path):
        image = volume.to_sitk() if dtype is None else _cast(volume, dtype).to_sitk()
        for key, value in volume.metadata.items():
            image.SetMetaData(key, value)
        return atomic_write(path, lambda tmp: sitk.WriteImage(image, str(tmp), compress))
    return _write_dicom_series(volume, path)


def _cast(volume: Volume, dtype: str) -> Volume:
    target = np.dtype(dtype)
    array = volume.array
    if np.issubdtype(target, np.integer):
        info = np.iinfo(target)
        if array.min() < info.min or array.max() > info.max:
            raise VolumeError(f"values {array.min():g}..{array.max():g} do not fit in {dtype}")
        array = np.rint(array)
    return replace(volume, array=array.astype(target))


def _has_volume_suffix(path: Path) -> bool:
    return any(path.name.lower().endswith(s) for s in VOLUME_SUFFIXES)


def _write_dicom_series(volume: Volume, folder: Path) -> Path:
    """One file per axial slice, stored as int16 with a rescale slope chosen so values survive.

    Integer-valued data (CT in HU) is stored exactly with slope 1; anything else (PET, MR,
    model outputs) gets slope max|v|/32000, a relative precision of about 3e-5.
    """
    modality = volume.modality or "OT"
    lo, hi = float(volume.array.min()), float(volume.array.max())
    integral = np.allclose(volume.array, np.round(volume.array)) and lo >= -32768 and hi <= 32767
    slope = 1.0 if integral else max(abs(lo), abs(hi), 1e-12) / 32000.0
    if integral:
        image = sitk.GetImageFromArray(np.round(volume.array).astype(np.int16))
    else:  # GDCM applies the inverse rescale to float pixels using the tags below
        image = sitk.GetImageFromArray(volume.array.astype(np.float32))
    image.SetSpacing(volume.spacing)
    image.SetOrigin(volume.origin)
    image.SetDirection(volume.direction)

    study_uid, series_uid = _dicom_uid(), _dicom_uid()
    d = np.asarray(volume.direction).reshape(3, 3)
    orientation = "\\".join(f"{v:.10g}" for v in (*d[:, 0], *d[:, 1]))
    tags = {
        "0008|0060": modality, "0020|000d": study_uid, "0020|000e": series_uid,
        "0008|103e": volume.metadata.get("SeriesDescription", "SlicerMedDiffusion output"),
        "0020|0037": orientation, "0028|1052": "0", "0028|1053": f"{slope:.10g}",
        "0018|0050": f"{volume.spacing[2]:.10g}",
        "0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1",
    }
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        for k in range(volume.array.shape[0]):
            s = image[:, :, k]
            for key, value in tags.items():
                s.SetMetaData(key, value)
            s.SetMetaData("0008|0018", _dicom_uid())
            s.SetMetaData("0020|0013", str(k + 1))
            s.SetMetaData("0020|0032", "\\".join(f"{v:.10g}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))))
            writer.SetFileName(str(tmp / f"slice{k:04d}.dcm"))
            writer.Execute(s)
        if folder.exists():
            if not folder.is_dir() or any(folder.iterdir()):
                raise VolumeError(f"DICOM output folder {folder} exists and is not empty; choose a new folder")
            folder.rmdir()
        os.replace(tmp, folder)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _dicom_uid() -> str:
    # 2.25.<uuid as integer> is the standard way to make a UID without a registered root.
    return "2.25." + str(uuid.uuid4().int)


def _first_line(exc: Exception) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


# -- 4D sequences (Slicer .seq.nrrd) ---------------------------------------------------------
def write_sequence(frames: list[Volume], path: str | os.PathLike, *, index_name: str = "time",
                   index_unit: str = "ms", index_values: list[float] | None = None) -> Path:
    """Write frames on one grid as a Slicer volume sequence (4D NRRD, first axis a list).

    Slicer's Sequences module reads this as a sequence node with its index values, so a
    cine series loads as one browsable 4D volume.
    """
    import nrrd

    if not frames:
        raise VolumeError("a sequence needs at least one frame")
    ref = frames[0]
    for i, f in enumerate(frames):
        validate_array(f.array, source=f"frame {i}")
        if f.shape != ref.shape or f.spacing != ref.spacing or f.origin != ref.origin or f.direction != ref.direction:
            raise VolumeError(f"frame {i} is on a different grid than frame 0; all frames must share one grid")
    values = list(index_values) if index_values is not None else list(range(len(frames)))
    if len(values) != len(frames):
        raise VolumeError(f"{len(values)} index values for {len(frames)} frames")
    data = np.stack([f.array for f in frames])            # (t, z, y, x)
    data = np.ascontiguousarray(np.transpose(data, (0, 3, 2, 1)))   # nrrd order: (t, x, y, z)
    d = np.asarray(ref.direction).reshape(3, 3)
    directions = np.full((4, 3), np.nan)
    directions[1:] = (d * np.asarray(ref.spacing)).T       # one row per axis x, y, z
    header = {
        "encoding": "gzip",
        "space": "left-posterior-superior",
        "kinds": ["list", "domain", "domain", "domain"],
        "space directions": directions, "space origin": np.asarray(ref.origin),
        "axis 0 index type": "numeric", "axis 0 index values": " ".join(f"{v:g}" for v in values),
        "axis 0 quantity": index_name, "axis 0 unit": index_unit,
    }
    if ref.modality:
        header["modality"] = ref.modality
    custom = {k: "string" for k in ("axis 0 index type", "axis 0 index values", "axis 0 quantity",
                                    "axis 0 unit", "modality") if k in header}
    path = Path(path)
    return atomic_write(path, lambda tmp: nrrd.write(str(tmp), data, header, custom_field_map=custom,
                                                      index_order="F"))


def read_sequence(path: str | os.PathLike) -> tuple[list[Volume], list[float]]:
    """Read a 4D NRRD sequence written by Slicer or :func:`write_sequence`."""
    path = Path(path)
    data, header = _read_nrrd(path, "sequence", missing="input")
    if data.ndim != 4:
        raise VolumeError(f"{path} is {data.ndim}D; a 4D sequence (frames of 3D volumes) is needed")
    directions = np.asarray(header["space directions"], dtype=float)
    list_axis = int(np.where(np.isnan(directions).all(axis=1))[0][0]) if np.isnan(directions).any() else 0
    data = np.moveaxis(data, list_axis, 0)
    axes = [a for a in range(4) if a != list_axis]
    spatial = directions[axes]
    spacing = np.linalg.norm(spatial, axis=1)
    direction = (spatial / spacing[:, None]).T.reshape(-1)
    origin = tuple(np.asarray(header.get("space origin", (0, 0, 0)), dtype=float))
    values_text = header.get(f"axis {list_axis} index values")
    values = [float(v) for v in values_text.split()] if values_text else list(range(data.shape[0]))
    modality = header.get("modality", "")
    frames = []
    for t in range(data.shape[0]):
        arr = np.ascontiguousarray(np.transpose(data[t], (2, 1, 0))).astype(np.float32)
        validate_array(arr, source=f"{path} frame {t}")
        frames.append(Volume(arr, tuple(spacing), origin, tuple(direction), modality=modality))
    return frames, values


# -- Slicer segmentations (.seg.nrrd) --------------------------------------------------------
_SEGMENT_FIELDS = ("ID", "Name", "NameAutoGenerated", "Color", "ColorAutoGenerated", "LabelValue", "Layer",
                   "Extent", "Tags")
_BINARY_LABELMAP = "Binary labelmap"


def write_segmentation(path: str | os.PathLike, layers: list[np.ndarray], segments: list[dict],
                       reference: Volume) -> Path:
    """Write label maps as a Slicer segmentation file (``.seg.nrrd``), atomically.

    ``layers`` are integer label maps (z, y, x) on ``reference``'s grid; segments in one layer
    must not overlap, segments in different layers may (e.g. the same lesion before and after
    a correction).  Each item of ``segments`` is ``{"name", "layer", "label", "color": (r, g, b)
    in 0..1}`` with optional ``"id"`` (default: the name) and ``"tags"`` (a dict of strings).
    More than one layer gives Slicer's 4D layout (a ``list`` axis first, one 3D volume per
    layer); one layer a plain 3D labelmap with the same fields.  Every segment of a layer
    records that layer's non-empty extent, because Slicer crops a layer to the extent of its
    first segment when it reads the file.
    """
    import nrrd

    path = Path(path)
    if not path.name.lower().endswith(".nrrd"):
        raise VolumeError(f"a segmentation is written as .seg.nrrd, got '{path.name}'")
    data = _check_layers(layers, reference)
    segments = [_check_segment(s, i, len(data)) for i, s in enumerate(segments)]
    for key, what in (("id", "ID"), ("name", "name")):
        values = [s[key] for s in segments]
        if len(set(values)) != len(values):
            raise VolumeError(f"segment {what}s must be unique, got {values}")
    used = [(s["layer"], s["label"]) for s in segments]
    if len(set(used)) != len(used):
        raise VolumeError("two segments share a layer and label value; each (layer, label) pair must be unique")

    extents = [_extent_ijk(layer) for layer in data]
    header: dict = {
        "encoding": "gzip",
        "space": "left-posterior-superior",
        "space origin": np.asarray(reference.origin, dtype=float),
        "Segmentation_MasterRepresentation": _BINARY_LABELMAP,
        "Segmentation_ContainedRepresentationNames": _BINARY_LABELMAP + "|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    for index, seg in enumerate(segments):
        fields = {
            "ID": seg["id"], "Name": seg["name"], "NameAutoGenerated": "0",
            "Color": " ".join(f"{c:.6g}" for c in seg["color"]), "ColorAutoGenerated": "0",
            "LabelValue": str(seg["label"]), "Layer": str(seg["layer"]),
            "Extent": " ".join(map(str, extents[seg["layer"]])),
            "Tags": "".join(f"{k}:{v}|" for k, v in seg["tags"].items()),
        }
        header.update({f"Segment{index}_{key}": fields[key] for key in _SEGMENT_FIELDS})

    d = np.asarray(reference.direction).reshape(3, 3)
    axes = (d * np.asarray(reference.spacing)).T                  # one row per axis x, y, z
    dtype = np.uint8 if max(int(layer.max()) for layer in data) <= 255 else np.uint16
    if len(data) > 1:
        # (z, y, x, layer) in C order is NRRD's (layer, x, y, z) with the list axis fastest, as Slicer writes it
        volumes = np.empty(reference.shape + (len(data),), dtype)
        for index, layer in enumerate(data):
            volumes[..., index] = layer
        header["kinds"] = ["list", "domain", "domain", "domain"]
        header["space directions"] = np.vstack([np.full((1, 3), np.nan), axes])
    else:
        volumes = np.ascontiguousarray(data[0], dtype=dtype)
        header["kinds"] = ["domain", "domain", "domain"]
        header["space directions"] = axes
    # label maps are mostly zeros: the fastest gzip level costs little in size
    return atomic_write(path, lambda tmp: nrrd.write(str(tmp), volumes, header, index_order="C",
                                                      compression_level=1))


def read_segmentation(path: str | os.PathLike) -> tuple[list[np.ndarray], list[dict], Volume]:
    """Read a Slicer ``.seg.nrrd`` (3D or 4D with layers) into label maps and segment records.

    Returns ``(layers, segments, reference)``: the layers as integer arrays (z, y, x), the
    segments as ``{"id", "name", "layer", "label", "color", "tags"}`` in file order, and a
    ``Volume`` of zeros carrying the file's grid.  The grid is the one stored in the file; a
    file that Slicer cropped to its segments (``Segmentation_ReferenceImageExtentOffset``) has
    its origin at the cropped corner, so it stays in the right place in physical space.
    """
    path = Path(path)
    data, header = _read_nrrd(path, "segmentation", missing="segmentation")
    if data.ndim == 3:
        data = data[None]
        kinds_list = None
    elif data.ndim == 4:
        kinds = list(header.get("kinds", []))
        kinds_list = kinds.index("list") if "list" in kinds else 0
        data = np.moveaxis(data, kinds_list, 0)
    else:
        raise VolumeError(f"{path} is {data.ndim}D; a segmentation is a 3D labelmap or a 4D list of layers")
    if data.dtype.kind not in "biu":
        raise VolumeError(f"{path} holds {data.dtype} voxels; a segmentation stores integer labels")
    directions = np.asarray(header.get("space directions"), dtype=float)
    spatial = directions[~np.isnan(directions).all(axis=1)]
    if spatial.shape != (3, 3):
        raise VolumeError(f"{path} has no 3D space directions; cannot place the segmentation in space")
    spacing = np.linalg.norm(spatial, axis=1)
    direction = (spatial / spacing[:, None]).T.reshape(-1)
    origin = tuple(np.asarray(header.get("space origin", (0, 0, 0)), dtype=float))
    if header.get("space", "left-posterior-superior") not in ("left-posterior-superior", "LPS"):
        raise VolumeError(f"{path} uses space '{header.get('space')}'; only left-posterior-superior is supported")
    layers = [np.ascontiguousarray(np.transpose(layer, (2, 1, 0))) for layer in data]

    segments = []
    while f"Segment{len(segments)}_ID" in header:
        i = len(segments)
        get = lambda key, default="": str(header.get(f"Segment{i}_{key}", default))  # noqa: E731
        color = tuple(float(c) for c in get("Color", "0 0 0").split())
        tags = dict(pair.split(":", 1) for pair in get("Tags").split("|") if ":" in pair)
        segments.append({"id": get("ID"), "name": get("Name") or get("ID"), "layer": int(get("Layer", i)),
                         "label": int(get("LabelValue", 1)), "color": color, "tags": tags})
    for seg in segments:
        if not 0 <= seg["layer"] < len(layers):
            raise VolumeError(f"segment '{seg['name']}' is in layer {seg['layer']} but {path} has "
                              f"{len(layers)} layer(s)")
    reference = Volume(np.zeros(layers[0].shape, np.float32), tuple(spacing), origin, tuple(direction))
    return layers, segments, reference


def _check_layers(layers, reference: Volume) -> list[np.ndarray]:
    if not isinstance(reference, Volume):
        raise VolumeError(f"reference must be a Volume (the grid of the segmentation), got {type(reference).__name__}")
    if not isinstance(layers, (list, tuple)) or not layers:
        raise VolumeError("a segmentation needs at least one layer (a label map on the reference grid)")
    out = []
    for i, layer in enumerate(layers):
        layer = np.asarray(layer)
        if layer.shape != reference.shape:
            raise VolumeError(f"layer {i} has shape {layer.shape}; it must be on the reference grid {reference.shape}")
        if layer.dtype.kind not in "biuf" or (layer.dtype.kind == "f" and not np.array_equal(layer, np.round(layer))):
            raise VolumeError(f"layer {i} must hold whole-number labels, got dtype {layer.dtype}")
        low, high = layer.min(), layer.max()
        if low < 0 or high > 65535:
            raise VolumeError(f"layer {i} labels must lie in 0..65535, got {low}..{high}")
        out.append(layer)
    return out


def _check_segment(segment: dict, index: int, num_layers: int) -> dict:
    if not isinstance(segment, dict):
        raise VolumeError(f"segment {index} must be a dict with name, layer, label and color")
    missing = [k for k in ("name", "layer", "label", "color") if k not in segment]
    if missing:
        raise VolumeError(f"segment {index} lacks {', '.join(missing)}")
    name = str(segment["name"])
    if not name or any(c in name for c in "\n|"):
        raise VolumeError(f"segment {index} name {name!r} must be non-empty, on one line, without '|'")
    layer, label = segment["layer"], segment["label"]
    if isinstance(layer, bool) or not isinstance(layer, (int, np.integer)) or not 0 <= layer < num_layers:
        raise VolumeError(f"segment '{name}' layer must be an index 0..{num_layers - 1}, got {layer!r}")
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 1 <= label <= 65535:
        raise VolumeError(f"segment '{name}' label must be a whole number 1..65535, got {label!r}")
    color = tuple(float(c) for c in segment["color"])
    if len(color) != 3 or not all(0.0 <= c <= 1.0 for c in color):
        raise VolumeError(f"segment '{name}' color must be (r, g, b) in 0..1, got {segment['color']}")
    tags = {str(k): str(v) for k, v in dict(segment.get("tags") or {}).items()}
    if any(c in text for pair in tags.items() for text in pair for c in "|\n") or any(":" in k for k in tags):
        raise VolumeError(f"segment '{name}' tags must not contain '|' or newlines (keys no ':')")
    return {"id": str(segment.get("id") or name), "name": name, "layer": int(layer), "label": int(label),
            "color": color, "tags": tags}


def _extent_ijk(layer: np.ndarray) -> tuple[int, int, int, int, int, int]:
    """Slicer extent (i0, i1, j0, j1, k0, k1), inclusive, of a layer's labelled voxels; empty: 0 -1 ..."""
    ks = np.flatnonzero(layer.any(axis=(1, 2)))
    if not ks.size:
        return (0, -1, 0, -1, 0, -1)
    plane = layer[ks[0]: ks[-1] + 1].any(axis=0)
    js, is_ = np.flatnonzero(plane.any(axis=1)), np.flatnonzero(plane.any(axis=0))
    return (int(is_[0]), int(is_[-1]), int(js[0]), int(js[-1]), int(ks[0]), int(ks[-1]))


def _read_nrrd(path: Path, what: str, *, missing: str) -> tuple[np.ndarray, dict]:
    """pynrrd's (data in x, y, z[, ...] order, header), with clear errors for a missing or malformed file."""
    import nrrd

    if not path.exists():
        raise VolumeError(f"{missing} not found: {path}")
    try:
        return nrrd.read(str(path), index_order="F")
    except Exception as exc:  # pynrrd raises several types for malformed files
        raise VolumeError(f"cannot read {path} as a NRRD {what} ({exc})") from None
