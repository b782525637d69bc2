"""The ``data:`` section of a suite: one pydantic model per source, discriminated on ``source``.

Example::

    from pydantic import TypeAdapter
    cfg = TypeAdapter(DataConfig).validate_python({"source": "simulated", "patients": 10})
    cfg.strata   # ['b_line_count', 'speckle_level', 'probe']

Unknown keys are errors (``extra="forbid"``). Paths stay as written: they are resolved at load
time against the suite's folder, so a suite's hash does not depend on the machine it runs on.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

CropMode = Literal["fan", "bbox", "none"]
OnError = Literal["fail", "skip"]


class _DataBase(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True)

    @property
    def strata(self) -> list[str]:
        """Metadata columns the report should stratify by."""
        return []


def _check_size(value: int) -> int:
    if not 16 <= value <= 1024:
        raise ValueError(f"image_size {value} is out of range; accepted: an integer from 16 to 1024 (pixels)")
    return value


class SimulatedData(_DataBase):
    """Physics-based B-mode lung simulator (see :mod:`harness.data.simulator`)."""

    source: Literal["simulated"] = "simulated"
    patients: int = Field(40, description="number of simulated patients (the CV grouping unit)")
    frames_per_patient: int = Field(6, description="frames per patient")
    frames_per_video: int = Field(
        1, description="frames per simulated clip; frames of one clip share B-lines, moved by lung sliding"
    )
    image_size: int = Field(64, description="output frames are image_size x image_size pixels")
    b_line_prevalence: float = Field(0.5, description="expected fraction of clips with B-lines")
    speckle: float = Field(
        1.0,
        description="speckle strength: 1 = fully developed speckle (Rayleigh envelope), "
        "<1 = speckle reduced (as by compounding), >1 = exaggerated",
    )
    b_line_contrast: float = Field(
        0.6, description="B-line visibility: 0 = invisible (labels carry no image signal), 1 = as bright as the pleura"
    )
    probe: Literal["convex", "linear", "mixed"] = Field("convex", description="probe geometry; mixed = per patient")
    seed: int | None = Field(None, description="simulator seed; None = the suite's seed")
    depth_cm: float = Field(12.0, description="imaging depth in cm (convex); linear uses half of it")
    pleura_depth_cm: tuple[float, float] = Field(
        (1.5, 3.0), description="range of the per-patient skin-to-pleura depth, cm"
    )
    max_b_lines: int = Field(5, description="most discrete B-lines in a positive clip")
    confluent_probability: float = Field(0.2, description="probability that a positive clip has confluent B-lines")
    dynamic_range_db: float = Field(60.0, description="log-compression dynamic range, dB")
    frequency_mhz: float = Field(3.5, description="centre frequency (sets attenuation), MHz")

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int) -> int:
        return _check_size(v)

    @field_validator("patients")
    @classmethod
    def _patients(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"patients={v}; accepted: an integer >= 2 (splits need two groups)")
        return v

    @field_validator("frames_per_patient", "frames_per_video")
    @classmethod
    def _positive(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"{v}; accepted: an integer >= 1")
        return v

    @field_validator("b_line_prevalence", "confluent_probability")
    @classmethod
    def _prob(cls, v: float) -> float:
        if not 0.0 <= v <= 1.0:
            raise ValueError(f"{v}; accepted: a probability from 0 to 1")
        return v

    @field_validator("speckle")
    @classmethod
    def _speckle(cls, v: float) -> float:
        if not 0.0 <= v <= 3.0:
            raise ValueError(f"speckle={v}; accepted: 0 to 3 (1 = fully developed speckle)")
        return v

    @field_validator("b_line_contrast")
    @classmethod
    def _contrast(cls, v: float) -> float:
        if not 0.0 <= v <= 2.0:
            raise ValueError(f"b_line_contrast={v}; accepted: 0 to 2 (0 = invisible, 1 = pleura-bright)")
        return v

    @field_validator("depth_cm")
    @classmethod
    def _depth(cls, v: float) -> float:
        if not 4.0 <= v <= 30.0:
            raise ValueError(f"depth_cm={v}; accepted: 4 to 30 cm")
        return v

    @field_validator("max_b_lines")
    @classmethod
    def _max_b(cls, v: int) -> int:
        if not 1 <= v <= 12:
            raise ValueError(f"max_b_lines={v}; accepted: an integer from 1 to 12")
        return v

    @field_validator("dynamic_range_db")
    @classmethod
    def _dr(cls, v: float) -> float:
        if not 20.0 <= v <= 100.0:
            raise ValueError(f"dynamic_range_db={v}; accepted: 20 to 100 dB")
        return v

    @field_validator("frequency_mhz")
    @classmethod
    def _freq(cls, v: float) -> float:
        if not 1.0 <= v <= 15.0:
            raise ValueError(f"frequency_mhz={v}; accepted: 1 to 15 MHz")
        return v

    @model_validator(mode="after")
    def _pleura(self) -> SimulatedData:
        lo, hi = self.pleura_depth_cm
        if not (0.3 <= lo <= hi and hi <= self.depth_cm / 3):
            raise ValueError(
                f"pleura_depth_cm={list(self.pleura_depth_cm)}; accepted: [min, max] with "
                f"0.3 <= min <= max <= depth_cm/3 = {self.depth_cm / 3:g} (A-lines need room below)"
            )
        return self

    @property
    def strata(self) -> list[str]:
        return ["b_line_count", "speckle_level", "probe"]


class _VideoData(_DataBase):
    frame_step: int = Field(10, description="keep every k-th (non-blank) frame of a video")
    max_frames_per_video: int | None = Field(8, description="keep at most M frames per video; null = all")
    image_size: int = Field(128, description="frames are resized to image_size x image_size pixels")
    crop: CropMode = Field(
        "fan", description="fan = crop to the ultrasound sector and blank outside it; bbox = crop to "
        "non-black content; none = whole frame"
    )
    on_error: OnError = Field("fail", description="fail = stop at the first bad item; skip = leave it out and list it")

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int) -> int:
        return _check_size(v)

    @field_validator("frame_step")
    @classmethod
    def _step(cls, v: int) -> int:
        if v < 1:
            raise ValueError(f"frame_step={v}; accepted: an integer >= 1")
        return v

    @field_validator("max_frames_per_video")
    @classmethod
    def _max(cls, v: int | None) -> int | None:
        if v is not None and v < 1:
            raise ValueError(f"max_frames_per_video={v}; accepted: an integer >= 1 or null (all frames)")
        return v


class CovidBluesData(_VideoData):
    """The COVID-BLUES dataset in its own layout (``lus_videos/*.mp4``, ``severity.csv``, ...)."""

    source: Literal["covid-blues"] = "covid-blues"
    path: str | None = Field(
        None, description="dataset folder; default: $LUS_COVID_BLUES; relative = against the suite's folder"
    )

    @property
    def strata(self) -> list[str]:
        return ["severity", "blue_point", "pcr"]


class ManifestData(_VideoData):
    """Any dataset described by a CSV with one row per image or video."""

    source: Literal["manifest"] = "manifest"
    path: str = Field(description="the CSV manifest; relative = against the suite's folder")
    root: str | None = Field(None, description="folder the file paths are relative to; default: the CSV's folder")
    file_column: str = "file"
    label_column: str = "label"
    group_column: str | None = Field(None, description="patient column; null = every file is its own group")
    metadata_columns: list[str] = Field(default_factory=list)
    crop: CropMode = "none"

    @field_validator("file_column", "label_column", "group_column")
    @classmethod
    def _column(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("empty column name; accepted: the name of a column of the CSV")
        return v

    @model_validator(mode="after")
    def _distinct(self) -> ManifestData:
        used = [self.file_column, self.label_column]
        if self.label_column == self.file_column:
            raise ValueError(f"label_column and file_column are both {self.file_column!r}; accepted: two different columns")
        bad = [c for c in self.metadata_columns if c in used]
        if bad:
            raise ValueError(f"metadata_columns {bad} repeat the file/label column; accepted: other columns")
        return self

    @property
    def strata(self) -> list[str]:
        return list(self.metadata_columns)


DataConfig = Annotated[Union[SimulatedData, CovidBluesData, ManifestData], Field(discriminator="source")]

__all__ = ["CovidBluesData", "DataConfig", "ManifestData", "SimulatedData"]
