"""The data: section schema: defaults, discriminated union, precise errors, strata."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from harness.data.config import CovidBluesData, DataConfig, ManifestData, SimulatedData

ADAPTER = TypeAdapter(DataConfig)


def test_issue_examples_validate() -> None:
    sim = ADAPTER.validate_python({"source": "simulated", "patients": 40, "frames_per_patient": 6, "image_size": 64,
                                   "b_line_prevalence": 0.5, "speckle": 1.0, "b_line_contrast": 0.6,
                                   "probe": "convex", "seed": 0})
    assert isinstance(sim, SimulatedData) and sim.seed == 0
    cb = ADAPTER.validate_python({"source": "covid-blues", "path": "data/covid-blues", "frame_step": 10,
                                  "max_frames_per_video": 8, "image_size": 128})
    assert isinstance(cb, CovidBluesData) and cb.crop == "fan" and cb.on_error == "fail"
    man = ADAPTER.validate_python({"source": "manifest", "path": "labels.csv", "root": "videos/", "file_column": "file",
                                   "label_column": "b_lines", "group_column": "patient", "metadata_columns": ["severity"],
                                   "frame_step": 5, "max_frames_per_video": 10, "image_size": 128, "crop": "fan",
                                   "on_error": "fail"})
    assert isinstance(man, ManifestData) and man.metadata_columns == ["severity"]


def test_strata_per_source() -> None:
    assert SimulatedData().strata == ["b_line_count", "speckle_level", "probe"]
    assert CovidBluesData().strata == ["severity", "blue_point", "pcr"]
    assert ManifestData(path="x.csv", metadata_columns=["site", "age_band"]).strata == ["site", "age_band"]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"source": "simulated", "patient": 3}, "Extra inputs are not permitted"),
        ({"source": "simulated", "probe": "phased"}, "'convex', 'linear' or 'mixed'"),
        ({"source": "simulated", "image_size": 8}, "accepted: an integer from 16 to 1024"),
        ({"source": "simulated", "b_line_prevalence": 1.5}, "accepted: a probability from 0 to 1"),
        ({"source": "simulated", "speckle": -1}, "accepted: 0 to 3"),
        ({"source": "simulated", "patients": 1}, "accepted: an integer from 2 to 10000"),
        ({"source": "simulated", "pleura_depth_cm": [3.0, 1.0]}, "0.3 <= min <= max"),
        ({"source": "covid-blues", "crop": "circle"}, "'fan', 'bbox' or 'none'"),
        ({"source": "covid-blues", "on_error": "ignore"}, "'fail' or 'skip'"),
        ({"source": "covid-blues", "frame_step": 0}, "accepted: an integer from 1 to 10000"),
        ({"source": "manifest"}, "path"),
        ({"source": "manifest", "path": "a.csv", "label_column": "file"}, "two different columns"),
        ({"source": "webcam"}, "'simulated', 'covid-blues', 'manifest'"),
    ],
)
def test_bad_values_name_what_is_accepted(data: dict, fragment: str) -> None:
    with pytest.raises(ValidationError) as info:
        ADAPTER.validate_python(data)
    assert fragment in str(info.value)
