"""The ``data:`` section of a suite: one pydantic model per source, discriminated on ``source``.

Example::

    from pydantic import TypeAdapter
    cfg = TypeAdapter(DataConfig).validate_python({"source": "simulated", "patients": 10})
    cfg.strata   # ['b_line_count', 'speckle_level', 'probe']

Unknown keys are errors (``extra="forbid"``). Paths stay as written: they are resolved at load
time against the suite's folder, so a suite's hash does not depend on the machine it runs on.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationInfo, field_validator, model_validator

from harness.later_keys import later_keys

CropMode = Literal["fan", "bbox", "none"]
OnError = Literal["fail", "skip"]


#: Upper bounds of the counts: what a real study could need (COVID-BLUES: 63 patients, videos of a few
#: hundred frames; large lung-ultrasound cohorts: a few thousand patients). Beyond them a value is a
#: mistake (``patients: 1e9`` crashed the simulator) and is refused before anything is loaded.
MAX_PATIENTS = 10_000
MAX_FRAMES = 10_000  # frames per patient or clip, frame_step, frames kept per video
#: The frames are held in memory as uint8: patients x frames_per_patient x image_size^2 bytes at most.
MAX_FRAME_BYTES = 16 * 10**9
SEED_MAX = 2**32 - 1  # numpy's SeedSequence / legacy seeding range


def _integer(value: Any, name: str, lo: int, hi: int, why: str = "") -> int:
    """``value`` when it is an integer in [lo, hi] (a boolean or a float is not); one line otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name}={value!r}; accepted: an integer from {lo} to {hi}{why}")
    return value


def _number(value: Any, name: str, lo: float, hi: float, what: str) -> Any:
    """``value`` when it is a finite number in [lo, hi] (a boolean or a string is not); one line otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value)
                                                                            and lo <= value <= hi):
        raise ValueError(f"{name}={value!r}; accepted: {what}")
    return value


class _DataBase(BaseModel):
    # strict: booleans are not numbers, strings are not numbers or booleans; floats are finite
    model_config = ConfigDict(extra="forbid", validate_default=True, strict=True, allow_inf_nan=False)

    @property
    def strata(self) -> list[str]:
        """Metadata columns the report should stratify by."""
        return []


def _check_size(value: Any) -> int:
    return _integer(value, "image_size", 16, 1024, " (pixels)")


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
    seed: int | None = Field(None, ge=0, le=SEED_MAX, description="simulator seed; None = the suite's seed")
    depth_cm: float = Field(12.0, description="imaging depth in cm (convex); linear uses half of it")
    pleura_depth_cm: tuple[Annotated[float, Strict()], Annotated[float, Strict()]] = Field(
        (1.5, 3.0), strict=False, description="range of the per-patient skin-to-pleura depth, cm"  # a list: [min, max]
    )
    max_b_lines: int = Field(5, description="most discrete B-lines in a positive clip")
    confluent_probability: float = Field(0.2, description="probability that a positive clip has confluent B-lines")
    dynamic_range_db: float = Field(60.0, description="log-compression dynamic range, dB")
    frequency_mhz: float = Field(3.5, description="centre frequency (sets attenuation), MHz")

    # mode="before": the type and the range are checked together, so the one line says both
    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return _check_size(v)

    @field_validator("patients", mode="before")
    @classmethod
    def _patients(cls, v: Any) -> int:
        return _integer(v, "patients", 2, MAX_PATIENTS, " (splits need two groups)")

    @field_validator("frames_per_patient", "frames_per_video", mode="before")
    @classmethod
    def _positive(cls, v: Any, info: ValidationInfo) -> int:
        return _integer(v, info.field_name, 1, MAX_FRAMES)

    @field_validator("b_line_prevalence", "confluent_probability", mode="before")
    @classmethod
    def _prob(cls, v: Any, info: ValidationInfo) -> float:
        return _number(v, info.field_name, 0.0, 1.0, "a probability from 0 to 1")

    @field_validator("speckle", mode="before")
    @classmethod
    def _speckle(cls, v: Any) -> float:
        return _number(v, "speckle", 0.0, 3.0, "0 to 3 (1 = fully developed speckle)")

    @field_validator("b_line_contrast", mode="before")
    @classmethod
    def _contrast(cls, v: Any) -> float:
        return _number(v, "b_line_contrast", 0.0, 2.0, "0 to 2 (0 = invisible, 1 = pleura-bright)")

    @field_validator("depth_cm", mode="before")
    @classmethod
    def _depth(cls, v: Any) -> float:
        return _number(v, "depth_cm", 4.0, 30.0, "4 to 30 cm")

    @field_validator("max_b_lines", mode="before")
    @classmethod
    def _max_b(cls, v: Any) -> int:
        return _integer(v, "max_b_lines", 1, 12)

    @field_validator("dynamic_range_db", mode="before")
    @classmethod
    def _dr(cls, v: Any) -> float:
        return _number(v, "dynamic_range_db", 20.0, 100.0, "20 to 100 dB")

    @field_validator("frequency_mhz", mode="before")
    @classmethod
    def _freq(cls, v: Any) -> float:
        return _number(v, "frequency_mhz", 1.0, 15.0, "1 to 15 MHz")

    @model_validator(mode="after")
    def _memory(self) -> SimulatedData:
        frames = self.patients * self.frames_per_patient
        size = frames * self.image_size ** 2
        if size > MAX_FRAME_BYTES:
            raise ValueError(f"patients x frames_per_patient = {frames} frames of {self.image_size}x{self.image_size} "
                             f"px take {size / 1e9:.0f} GB in memory; accepted: at most {MAX_FRAME_BYTES / 1e9:.0f} GB "
                             "(fewer patients, frames or pixels)")
        return self

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
    frame_sampling: Literal["first", "spread"] = Field(
        "first", description="which M of a video's kept frames: first = the first M (the start of the clip); "
        "spread = M spread evenly over the whole clip (B-lines come and go with breathing)")
    image_size: int = Field(128, description="frames are resized to image_size x image_size pixels")
    crop: CropMode = Field(
        "fan", description="fan = crop to the ultrasound sector and blank outside it; bbox = crop to "
        "non-black content; none = whole frame"
    )
    on_error: OnError = Field("fail", description="fail = stop at the first bad item; skip = leave it out and list it")

    @field_validator("image_size", mode="before")
    @classmethod
    def _size(cls, v: Any) -> int:
        return _check_size(v)

    _dump = later_keys({"frame_sampling": "first"})  # the runs' identity of suites that do not set it is kept

    @field_validator("frame_step", mode="before")
    @classmethod
    def _step(cls, v: Any) -> int:
        return _integer(v, "frame_step", 1, MAX_FRAMES)

    @field_validator("max_frames_per_video", mode="before")
    @classmethod
    def _max(cls, v: Any) -> int | None:
        return None if v is None else _integer(v, "max_frames_per_video", 1, MAX_FRAMES, ", or null (all frames)")


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


# --------------------------------------------------------------------------- external validation sets

Overlap = Literal["refuse", "allow"]


def _overlap_field() -> Any:
    # exclude=True: out of every dump, so the runs' identity and the cache keys stay those of the plain data
    # section (scoring a set anyway changes no number); only the driver reads it (harness.data.overlap)
    return Field("refuse", exclude=True, description="refuse = stop before training when the set holds frames or "
                 "files of the study's own data; allow = score it anyway, with a warning stating the overlap")


class ExternalSimulated(SimulatedData):
    overlap: Overlap = _overlap_field()


class ExternalCovidBlues(CovidBluesData):
    overlap: Overlap = _overlap_field()


class ExternalManifest(ManifestData):
    overlap: Overlap = _overlap_field()


#: ``evaluation.external.NAME``: a data section plus ``overlap``.
ExternalDataConfig = Annotated[Union[ExternalSimulated, ExternalCovidBlues, ExternalManifest],
                               Field(discriminator="source")]

__all__ = ["CovidBluesData", "DataConfig", "ExternalDataConfig", "ManifestData", "SimulatedData"]
