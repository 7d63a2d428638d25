"""The backend's ``.seg.nrrd`` writer (meddiffusion.io.write_segmentation) read by Slicer's own
storage node: two layers, segment names, label values and, voxel by voxel in IJK, each segment."""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util.numpy_support import vtk_to_numpy

from MedDiffusionUtilsLib import nodes
from meddiffusion.io import Volume, write_segmentation

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


def oblique_reference() -> Volume:
    angle = 0.3
    direction = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0, 0, 1]])
    return Volume(np.zeros((6, 9, 11), np.float32), (0.7, 0.8, 3.0), (12.5, -40.0, 7.0),
                  tuple(direction.ravel()), modality="CT")


def two_layers(shape):
    before = np.zeros(shape, np.uint8)
    before[1:3, 2:5, 3:6] = 1
    before[4, 7, 9] = 2
    after = np.zeros(shape, np.uint8)
    after[2:5, 1:3, 4:8] = 1          # overlaps "before L1": only possible in another layer
    return before, after


def segment_voxels(segmentation, segment_id: str, shape) -> np.ndarray:
    """The segment as a boolean (k, j, i) array on the full reference grid, from its labelmap."""
    segment = segmentation.GetSegment(segment_id)
    image = segment.GetRepresentation("Binary labelmap")
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    values = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
    full = np.zeros(shape, bool)
    full[k0:k1 + 1, j0:j1 + 1, i0:i1 + 1] = values == segment.GetLabelValue()
    return full


def test_two_layer_segmentation_loads_in_slicer_with_names_layers_and_voxels(scene, tmp_path):
    reference = oblique_reference()
    before, after = two_layers(reference.shape)
    segments = [{"name": "before L1", "layer": 0, "label": 1, "color": (1.0, 0.2, 0.1)},
                {"name": "before L2", "layer": 0, "label": 2, "color": (1.0, 0.6, 0.0)},
                {"name": "after L1", "layer": 1, "label": 1, "color": (0.1, 0.4, 1.0), "tags": {"scan": "after"}}]
    path = write_segmentation(tmp_path / "calcium.seg.nrrd", [before, after], segments, reference)

    node = nodes.read_segmentation(path, scene=scene)
    segmentation = node.GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 3
    assert segmentation.GetNumberOfLayers() == 2
    ids = [segmentation.GetNthSegmentID(i) for i in range(3)]
    assert ids == ["before L1", "before L2", "after L1"]
    assert [segmentation.GetSegment(i).GetName() for i in ids] == ["before L1", "before L2", "after L1"]
    assert [segmentation.GetLayerIndex(i) for i in ids] == [0, 0, 1]
    assert [segmentation.GetSegment(i).GetLabelValue() for i in ids] == [1, 2, 1]
    np.testing.assert_allclose(segmentation.GetSegment("after L1").GetColor(), (0.1, 0.4, 1.0), atol=1e-6)
    tag = vtk.reference("")
    assert segmentation.GetSegment("after L1").GetTag("scan", tag) and str(tag) == "after"

    expected = {"before L1": before == 1, "before L2": before == 2, "after L1": after == 1}
    for segment_id, mask in expected.items():
        np.testing.assert_array_equal(segment_voxels(segmentation, segment_id, reference.shape), mask)

    # the labelmaps sit on the reference grid in RAS: IJK -> RAS = flip · (origin + D · S · ijk)
    matrix = vtk.vtkMatrix4x4()
    segmentation.GetSegment("after L1").GetRepresentation("Binary labelmap").GetImageToWorldMatrix(matrix)
    expected_matrix = np.eye(4)
    expected_matrix[:3, :3] = LPS_TO_RAS @ np.asarray(reference.direction).reshape(3, 3) @ np.diag(reference.spacing)
    expected_matrix[:3, 3] = LPS_TO_RAS @ np.asarray(reference.origin)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(matrix), expected_matrix, atol=1e-6)


def test_segmentation_with_an_empty_layer_still_loads(scene, tmp_path):
    reference = oblique_reference()
    before, _ = two_layers(reference.shape)
    empty = np.zeros(reference.shape, np.uint8)
    segments = [{"name": "before L1", "layer": 0, "label": 1, "color": (1, 0, 0)}]
    path = write_segmentation(tmp_path / "calcium.seg.nrrd", [before, empty], segments, reference)
    segmentation = nodes.read_segmentation(path, scene=scene).GetSegmentation()
    assert segmentation.GetNumberOfSegments() == 1
    np.testing.assert_array_equal(segment_voxels(segmentation, "before L1", reference.shape), before == 1)
