"""DICOM files of the demo cohort: single-frame series, Enhanced multi-frame files, a non-image object.

Files are written with pydicom as Part-10 files (preamble, file meta, explicit VR little endian),
every geometric tag taken from one :class:`SliceGrid` so tags and pixels agree. Enhanced (multi-frame)
files carry the geometry in functional groups, as scanners write them: pixel spacing and orientation
shared, one ImagePositionPatient and one rescale per frame (dicom2nifti applies a per-frame rescale
only). Dates, times and implementation UIDs are fixed so that the same parameters give the same bytes.

``tags_only`` strips a dataset to :data:`TEST_ALLOWED_TAGS`, the tags the competition's hidden test
files keep (COMPETITION.md), plus the file meta, PixelData and, for a multi-frame file,
NumberOfFrames: without it the pixel data of a multi-frame file cannot be split into frames.
Functional groups are not on the list, so a stripped multi-frame file carries no geometry at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from engine.data.appearance import PixelStorage
from engine.data.slice_grid import SliceGrid

#: Tags of the competition's hidden test files (COMPETITION.md, "Inference contract").
TEST_ALLOWED_TAGS: frozenset[str] = frozenset({
    "BitsAllocated", "BitsStored", "Columns", "FrameOfReferenceUID", "HighBit", "ImageOrientationPatient",
    "ImagePositionPatient", "InstanceNumber", "Modality", "PatientID", "PhotometricInterpretation",
    "PixelRepresentation", "PixelSpacing", "PlanarConfiguration", "RescaleIntercept", "RescaleSlope",
    "RescaleType", "Rows", "SOPClassUID", "SOPInstanceUID", "SamplesPerPixel", "SliceThickness",
    "SpacingBetweenSlices", "StudyInstanceUID", "TransferSyntaxUID",
})
CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2.1"
ENHANCED_MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4.1"
BASIC_TEXT_SR = "1.2.840.10008.5.1.4.1.1.88.11"
_IMPLEMENTATION_UID = generate_uid(entropy_srcs=["rsna-tui demo cohort writer"])
_DATE, _TIME = "20250101", "120000"


@dataclass(frozen=True)
class SeriesHeader:
    """What every file of one series shares (patient, study, series, acquisition)."""

    modality: str          # DICOM Modality: CT or MR
    description: str       # SeriesDescription, e.g. "TOF 3D"
    patient_id: str
    patient_age: int
    patient_sex: str       # DICOM code: F or M
    study_uid: str
    series_uid: str
    frame_of_reference_uid: str
    series_number: int


def write_slices(folder: Path, header: SeriesHeader, grid: SliceGrid, stored: np.ndarray, storage: PixelStorage,
                 sop_uids: list[str], instance_numbers: list[int], tags_only: bool) -> None:
    """One file per slice: ``folder/<SOPInstanceUID>.dcm``; slice k gets ``sop_uids[k]``, ``instance_numbers[k]``.

    One dataset is built per series and only the per-slice elements change between files: pydicom's
    per-element cost, not the pixels, is what dominates writing small slices.
    """
    sop_class = CT_IMAGE if header.modality == "CT" else MR_IMAGE
    ds = _common(header, grid, storage, sop_class, sop_uids[0], enhanced=False)
    ds.InstanceNumber = instance_numbers[0]
    ds.ImagePositionPatient = grid.image_position(0)
    ds.ImageOrientationPatient = grid.image_orientation
    ds.SliceLocation = 0.0
    ds.PixelSpacing = [grid.row_spacing, grid.col_spacing]
    ds.RescaleIntercept = storage.intercept
    ds.RescaleSlope = storage.slope
    ds.RescaleType = storage.rescale_type
    ds.WindowCenter, ds.WindowWidth = _window(header.modality)
    ds.add_new(0x7FE00010, "OW", b"")
    _prepare(ds, tags_only)
    for k in range(grid.slices):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop_uids[k]
        ds.InstanceNumber = instance_numbers[k]
        ds.ImagePositionPatient = grid.image_position(k)
        if "SliceLocation" in ds:
            ds.SliceLocation = round(float(np.dot(grid.image_position(k), grid.normal)), 4)
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        ds.save_as(folder / f"{sop_uids[k]}.dcm", enforce_file_format=True)


def write_multiframe(path: Path, header: SeriesHeader, grid: SliceGrid, stored: np.ndarray, storage: PixelStorage,
                     sop_uid: str, frame_slices: list[int], tags_only: bool) -> None:
    """One Enhanced CT/MR file; frame f holds slice ``frame_slices[f]`` of the grid."""
    sop_class = ENHANCED_CT_IMAGE if header.modality == "CT" else ENHANCED_MR_IMAGE
    ds = _common(header, grid, storage, sop_class, sop_uid, enhanced=True)
    ds.InstanceNumber = 1
    ds.NumberOfFrames = len(frame_slices)
    dimension_uid = generate_uid(entropy_srcs=[sop_uid, "dimension organization"])
    ds.DimensionOrganizationSequence = Sequence([_item(DimensionOrganizationUID=dimension_uid)])
    ds.DimensionIndexSequence = Sequence([
        _item(DimensionOrganizationUID=dimension_uid, DimensionIndexPointer=0x00209056,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="Stack ID"),
        _item(DimensionOrganizationUID=dimension_uid, DimensionIndexPointer=0x00209057,
              FunctionalGroupPointer=0x00209111, DimensionDescriptionLabel="In-Stack Position Number"),
    ])
    measures = _item(PixelSpacing=[grid.row_spacing, grid.col_spacing], SliceThickness=grid.slice_spacing,
                     SpacingBetweenSlices=grid.slice_spacing)
    ds.SharedFunctionalGroupsSequence = Sequence([_item(
        PixelMeasuresSequence=Sequence([measures]),
        PlaneOrientationSequence=Sequence([_item(ImageOrientationPatient=grid.image_orientation)]),
    )])
    frames = []
    for f, k in enumerate(frame_slices):
        frames.append(_item(
            FrameContentSequence=Sequence([
                _item(StackID="1", InStackPositionNumber=f + 1, DimensionIndexValues=[1, f + 1])]),
            PlanePositionSequence=Sequence([_item(ImagePositionPatient=grid.image_position(k))]),
            PixelValueTransformationSequence=Sequence([_item(
                RescaleIntercept=storage.intercept, RescaleSlope=storage.slope, RescaleType=storage.rescale_type)]),
        ))
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.add_new(0x7FE00010, "OW", np.ascontiguousarray(stored[frame_slices]).tobytes())
    _save(ds, path, tags_only)


def write_text_report(path: Path, header: SeriesHeader, sop_uid: str) -> None:
    """A Basic Text SR in the series folder: a DICOM object without pixels that a converter must skip."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = BASIC_TEXT_SR, sop_uid
    ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = _DATE, _TIME, _DATE, _TIME
    ds.Modality = "SR"
    ds.PatientID = header.patient_id
    ds.StudyInstanceUID, ds.SeriesInstanceUID = header.study_uid, header.series_uid
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([
        _item(CodeValue="121070", CodingSchemeDesignator="DCM", CodeMeaning="Findings")])
    ds.ContentSequence = Sequence([_item(RelationshipType="CONTAINS", ValueType="TEXT",
                                         TextValue="Synthetic demo report: not an image.")])
    _save(ds, path, tags_only=False)


def _common(header: SeriesHeader, grid: SliceGrid, storage: PixelStorage, sop_class: str, sop_uid: str,
            enhanced: bool) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"] if enhanced else [
        "ORIGINAL", "PRIMARY", grid.orientation.upper()]
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = _DATE
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = _TIME
    if enhanced:
        ds.AcquisitionDateTime = _DATE + _TIME
    ds.AccessionNumber = ""
    ds.Modality = header.modality
    ds.Manufacturer = "rsna-tui synthetic"
    ds.StudyDescription = "HEAD ANGIO"
    ds.SeriesDescription = header.description
    ds.PatientName = f"DEMO^{header.patient_id}"
    ds.PatientID = header.patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = header.patient_sex
    ds.PatientAge = f"{header.patient_age:03d}Y"
    ds.BodyPartExamined = "HEAD"
    if not enhanced:
        ds.SliceThickness = grid.slice_spacing
        ds.SpacingBetweenSlices = grid.slice_spacing
    if header.modality == "CT":
        ds.KVP = 120
    else:
        ds.MagneticFieldStrength = 3
        ds.MRAcquisitionType = "3D"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = header.study_uid, header.series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = header.series_number
    ds.FrameOfReferenceUID = header.frame_of_reference_uid
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = grid.rows, grid.cols
    ds.BitsAllocated = 16
    ds.BitsStored = storage.bits_stored
    ds.HighBit = storage.bits_stored - 1
    ds.PixelRepresentation = 1 if storage.signed else 0
    return ds


def _window(modality: str) -> tuple[float, float]:
    return (200.0, 700.0) if modality == "CT" else (400.0, 1000.0)


def _item(**values: object) -> Dataset:
    item = Dataset()
    for keyword, value in values.items():
        setattr(item, keyword, value)
    return item


def _save(ds: Dataset, path: Path, tags_only: bool) -> None:
    _prepare(ds, tags_only)
    ds.save_as(path, enforce_file_format=True)


def _prepare(ds: Dataset, tags_only: bool) -> None:
    """Strip to the allow-list when asked, and attach the file meta of a Part-10 file."""
    if tags_only:
        keep = TEST_ALLOWED_TAGS | {"PixelData", "NumberOfFrames"}
        for element in list(ds):
            if element.keyword not in keep:
                del ds[element.tag]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = _IMPLEMENTATION_UID
    meta.ImplementationVersionName = "RSNA_TUI_DEMO"
    ds.file_meta = meta
