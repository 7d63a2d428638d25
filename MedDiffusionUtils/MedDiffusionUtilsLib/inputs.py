"""Checks a task module runs on its input volume and chosen output before anything starts.

Each check raises ``ValueError`` with a message naming the node, the problem and what was
expected, so the panel can show it as it is.  The node itself (an image, one component, not
empty, its DICOM modality) is checked here; its values by the task's input rule from
``meddiffusion.checks``, the very rule and message of the backend (:func:`check_input_volume`).
"""

from __future__ import annotations

import slicer

__all__ = ["dicom_modality", "check_volume_node", "check_ct_volume", "check_input_volume", "check_output_volume"]


def dicom_modality(node) -> str:
    """The DICOM modality of the series holding ``node`` ("" when not loaded from DICOM)."""
    scene = node.GetScene()
    hierarchy = scene.GetSubjectHierarchyNode() if scene is not None else None
    item = hierarchy.GetItemByDataNode(node) if hierarchy is not None else 0
    if not item:
        return ""
    name = slicer.vtkMRMLSubjectHierarchyConstants.GetDICOMSeriesModalityAttributeName()
    return hierarchy.GetItemAttribute(item, name) or ""


def check_volume_node(node, *, select: str, expected: str) -> str:
    """Raise ``ValueError`` unless ``node`` is a one-component scalar volume with voxels; returns
    its DICOM modality ("" when not loaded from DICOM).  Any modality passes: the values and the
    modality are the rule's business (a PET, SPECT or MR input, where a CT series is not wanted)."""
    if node is None:
        raise ValueError(f"no input volume: select {select}")
    name = node.GetName()
    if node.IsA("vtkMRMLLabelMapVolumeNode") or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise ValueError(f"'{name}' is a {node.GetClassName()}, not an image; expected {expected}")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise ValueError(f"'{name}' holds no voxels; expected {expected}")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"'{name}' has {image.GetNumberOfScalarComponents()} components per voxel "
                         f"(colour or vector image); expected {expected}")
    return dicom_modality(node)


def check_ct_volume(node, *, module: str, select: str,
                    expected: str = "a CT volume in Hounsfield units") -> str:
    """Raise ``ValueError`` unless ``node`` is a single-component scalar volume that may be CT.

    A missing node asks the user to select ``select`` ("the low-dose CT volume to denoise");
    a DICOM series whose modality is not CT is refused in the name of ``module`` ("LDCT
    Denoise"); an empty volume is told it should have been ``expected``.  Returns the DICOM
    modality ("CT", or "" when not loaded from DICOM) for the caller's check of the values.
    """
    if node is None:
        raise ValueError(f"no input volume: select {select}")
    name = node.GetName()
    if node.IsA("vtkMRMLLabelMapVolumeNode") or not node.IsA("vtkMRMLScalarVolumeNode"):
        raise ValueError(f"'{name}' is a {node.GetClassName()}, not an image; "
                         "expected a scalar CT volume in Hounsfield units")
    image = node.GetImageData()
    if image is None or image.GetNumberOfPoints() == 0:
        raise ValueError(f"'{name}' holds no voxels; expected {expected}")
    if image.GetNumberOfScalarComponents() != 1:
        raise ValueError(f"'{name}' has {image.GetNumberOfScalarComponents()} components per voxel "
                         "(colour or vector image); expected a single-component CT volume")
    modality = dicom_modality(node)
    if modality and modality.upper() != "CT":
        raise ValueError(f"'{name}' is a DICOM {modality} series; {module} expects a CT series")
    return modality


def check_input_volume(node, rule, *, module: str, select: str) -> str:
    """The node checks (:func:`check_ct_volume` for a CT rule, else :func:`check_volume_node`),
    then ``rule`` (a ``meddiffusion.checks.Rule``) on its voxels with its DICOM modality, which
    the rule accepts or refuses; returns that modality."""
    if rule.name == "ct":
        modality = check_ct_volume(node, module=module, select=select, expected=rule.expected)
    else:
        modality = check_volume_node(node, select=select, expected=rule.expected)
    rule.check(slicer.util.arrayFromVolume(node), name=node.GetName(), modality=modality)
    return modality


def check_output_volume(output, input_volume) -> None:
    """The output may be a new volume (None) or another scalar volume, never the input."""
    if output is None:
        return
    if input_volume is not None and output.GetID() == input_volume.GetID():
        raise ValueError(f"the output volume is the input '{input_volume.GetName()}'; the input is "
                         "never overwritten: choose 'Create new volume' or another volume")
    if output.IsA("vtkMRMLLabelMapVolumeNode"):
        raise ValueError(f"the output '{output.GetName()}' is a label map; "
                         "choose 'Create new volume' or a scalar volume")
