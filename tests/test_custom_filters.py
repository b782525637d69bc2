"""Issue 28 §2: a user's own preprocessing in a suite.

A suite step names any per-image function (``callable:``) or ``nn.Module`` class (``module:``) by
import path — an installed package's (scikit-image, OpenCV) or a module file next to the suite —
and packages add filters through the ``diffusion_filters.filters`` entry-point group. Such a step
goes through the built-ins' contract: parameters checked against the signature (one line with the
key path), the conformance check before any training, the code's identity in the canonical
config (so in the cache key and the run's config hash), and the report's methods section names
the callable, its code and its parameters.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import diffusion_filters as df
from diffusion_filters import external
from harness.preprocess import cache_key, preprocess_frames
from harness.prechecks import check_suite
from harness.store import STORE_FILENAME, ResultsStore
from harness.suite import SuiteError, load_suite
from test_runner import TINY  # the shared tiny suite

ROOT = Path(__file__).resolve().parent.parent
SKIMAGE = f"scikit-image {importlib.metadata.version('scikit-image')}"
TV = "skimage.restoration:denoise_tv_chambolle"

MODULE = '''
"""Filters of the user's own, next to the suite."""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

GAIN = 1.0


class Sharpen(nn.Module):
    """Unsharp mask with a 3x3 box blur, clipped to [0, 1]."""

    def __init__(self, amount: float = 0.5):
        super().__init__()
        self.amount = amount
        self.register_buffer("kernel", torch.full((1, 1, 3, 3), 1.0 / 9.0))

    def forward(self, x):
        blur = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), self.kernel)
        return (GAIN * (x + self.amount * (x - blur))).clamp(0.0, 1.0)


class Broken(nn.Module):
    """Breaks the filter contract as told."""

    def __init__(self, fault: str):
        super().__init__()
        self.fault = fault

    def forward(self, x):
        if self.fault == "nan":
            return x * float("nan")
        if self.fault == "shape":
            return x[..., 1:, :]
        if self.fault == "noise":
            return (x + 0.01 * torch.rand_like(x)).clamp(0.0, 1.0)
        if self.fault == "scale":
            return x * 255.0
        return x


def crop(image, rows: int = 1):
    """A per-image function that loses rows."""
    return image[rows:, :]


def gamma(image, power: float = 1.0):
    """A per-image function that keeps the contract."""
    return np.power(image, power)
'''


BASE = {**TINY, "name": "custom", "report": {"gradcam": False}}  # the runner's tiny suite, without Grad-CAM


def write(folder: Path, arms: list[dict], module: str | None = MODULE, **changes) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if module is not None:
        (folder / "my_filters.py").write_text(module)
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["arms"] = [{"name": "baseline"}, *arms]
    data.update(changes)
    path = folder / "suite.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


class CountingFit:
    """A fit that trains nothing and counts its calls (the refusals must come before any)."""

    calls = 0

    def __call__(self, model_cfg, train_cfg, data, seed, on_the_fly=None, want_state_dict=False, **kw):
        from harness.training import FitDiagnosis, FitResult

        type(self).calls += 1
        probs = np.clip(0.3 + 0.4 * data.test_y, 0.01, 0.99).astype(float)
        return FitResult(probs, {}, [], {}, 1, "cpu", FitDiagnosis("ok", "stub", 0.69, None, 0.1, None, None))


def _sha(path: Path) -> str:
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_a_scikit_image_function_and_a_user_module_class_run_end_to_end(tmp_path: Path, cache_dir: Path) -> None:
    from harness.runner import run_suite
    from skimage.restoration import denoise_tv_chambolle

    arms = [{"name": "tv", "preprocess": [{"callable": TV, "params": {"weight": 0.1}}]},
            {"name": "sharp", "preprocess": [{"module": "my_filters:Sharpen", "params": {"amount": 0.7}},
                                             {"median": {"size": 3}}]}]
    path = write(tmp_path / "study", arms)
    suite = load_suite(path)
    out = tmp_path / "out"
    summary = run_suite(suite, out, cache_dir=cache_dir, progress=False)
    assert summary.ok and summary.done == 6 and summary.report_error is None, (summary.failed, summary.report_error)

    store = ResultsStore(out, readonly=True)
    runs = store.runs()
    assert set(runs["status"]) == {"done"} and sorted(set(runs["arm"])) == ["baseline", "sharp", "tv"]
    pp = store.preprocessing().set_index("arm")
    assert sorted(pp.index) == ["sharp", "tv"] and pp["n_images"].tolist() == [18, 18]
    module_file = tmp_path / "study" / "my_filters.py"
    pipelines = store.meta()["pipelines"]
    assert pipelines["baseline"] == []
    assert pipelines["tv"] == [{"callable": TV, "params": {"weight": 0.1, "eps": 0.0002, "max_num_iter": 200,
                                                           "channel_axis": None},
                                "dtype": "float32", "code": SKIMAGE}]
    assert pipelines["sharp"] == [{"module": "my_filters:Sharpen", "params": {"amount": 0.7},
                                   "code": _sha(module_file)}, {"median": {"size": 3}}]
    store.close()

    # What training saw is the user's code applied to every frame: the cached frames hold it.
    from harness.execute import load_suite_frames

    frames = load_suite_frames(suite, cache_dir)
    raw = frames.images.astype(np.float32) / 255.0
    tv = preprocess_frames(frames.images, frames.content_hash, suite.arm("tv").preprocess, cache_dir,
                           base_dir=suite.base_dir)
    assert tv.cached and tv.images.shape == raw.shape
    expected = np.stack([denoise_tv_chambolle(f, weight=0.1) for f in raw]).clip(0, 1)
    np.testing.assert_allclose(tv.images, expected, atol=1e-6)
    assert float(np.abs(tv.images - raw).max()) > 0.05  # it did filter
    sharp = preprocess_frames(frames.images, frames.content_hash, suite.arm("sharp").preprocess, cache_dir,
                              base_dir=suite.base_dir)
    assert sharp.cached
    x = torch.from_numpy(raw).unsqueeze(1)
    blur = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate"),
                                      torch.full((1, 1, 3, 3), 1.0 / 9.0))
    want = df.median((x + 0.7 * (x - blur)).clamp(0, 1), size=3).squeeze(1).numpy()
    np.testing.assert_allclose(sharp.images, want, atol=1e-6)

    # The report's methods section names each callable, its code and its parameters.
    html = (out / "report.html").read_text()
    assert TV in html and SKIMAGE in html and "&#34;weight&#34;: 0.1" in html.replace("&quot;", "&#34;")
    assert "my_filters:Sharpen" in html and _sha(module_file) in html
    assert "&#34;amount&#34;: 0.7" in html.replace("&quot;", "&#34;")
    assert "per-image function" in html and "nn.Module called on the (B, 1, H, W) batch" in html

    # Run again: nothing to redo. Edit the user's module: only its arm is redone.
    assert run_suite(load_suite(path), out, cache_dir=cache_dir, progress=False, report=False).done == 0
    module_file.write_text(MODULE.replace("GAIN = 1.0", "GAIN = 0.9"))
    lines: list[str] = []
    again = run_suite(load_suite(path), out, cache_dir=cache_dir, progress=False, report=False, echo=lines.append)
    assert again.done == 2 and again.skipped == 4, lines
    assert any("2 runs redone: the suite's settings for them changed" in line for line in lines), lines
    redone = ResultsStore(out, readonly=True)
    assert redone.meta()["pipelines"]["sharp"][0]["code"] == _sha(module_file)


# --------------------------------------------------------------------------- refused before training


@pytest.mark.parametrize("step, message", [
    ({"module": "my_filters:Broken", "params": {"fault": "nan"}},
     'my_filters:Broken (fault="nan") [sha256:{sha}]: the output has 2048 NaN/Inf value(s) of 2048 on finite '
     "frames in [0, 1]; accepted: finite values"),
    ({"module": "my_filters:Broken", "params": {"fault": "shape"}},
     "changed the shape (2, 1, 32, 32) to (2, 1, 31, 32); accepted: the input's shape"),
    ({"module": "my_filters:Broken", "params": {"fault": "noise"}},
     "not deterministic: two calls on the same frames differ by up to"),
    ({"module": "my_filters:Broken", "params": {"fault": "scale"}},
     "output range [0, 255] is outside [0, 1]"),
    ({"callable": "my_filters:crop"},
     "raised ValueError: my_filters:crop: returned an image of shape (31, 32) for one of shape (32, 32)"),
])
def test_a_callable_that_breaks_the_contract_is_refused_before_training(tmp_path: Path, step: dict,
                                                                        message: str) -> None:
    from harness.runner import run_suite

    path = write(tmp_path / "study", [{"name": "broken", "preprocess": [{"median": {"size": 3}}, step]}])
    suite = load_suite(path)  # the schema accepts it: the parameters are right
    CountingFit.calls = 0
    out = tmp_path / "out"
    with pytest.raises(SuiteError) as err:
        run_suite(suite, out, cache_dir=tmp_path / "cache", progress=False, fit=CountingFit())
    assert len(err.value.lines) == 1, err.value.lines
    line = err.value.lines[0]
    sha = _sha(tmp_path / "study" / "my_filters.py")[7:19]
    assert line.startswith(f"{path}: arms[1].preprocess[1]: "), line
    assert message.format(sha=sha) in line, line
    assert line.endswith("(filter contract, checked before any training)")
    assert CountingFit.calls == 0 and not (out / STORE_FILENAME).exists()
    with pytest.raises(SuiteError, match=r"arms\[1\]\.preprocess\[1\]: "):
        check_suite(suite)  # `harness validate` / --dry-run: the same check at data.image_size


def test_validate_refuses_a_broken_callable_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from harness.cli import main

    path = write(tmp_path / "study", [{"name": "nan", "preprocess": [
        {"module": "my_filters:Broken", "params": {"fault": "nan"}}]}])
    assert main(["validate", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "arms[1].preprocess[0]: my_filters:Broken" in err[0] and "NaN/Inf" in err[0], err


@pytest.mark.parametrize("step, where, message", [
    ({"callable": TV, "params": {"weightt": 0.1}}, "arms[1].preprocess[0].params.weightt",
     f"unknown parameter of {TV}; accepted: weight, eps, max_num_iter, channel_axis"),
    ({"module": "my_filters:Sharpen", "params": {"amont": 0.1}}, "arms[1].preprocess[0].params.amont",
     "unknown parameter of my_filters:Sharpen; accepted: amount"),
    ({"module": "my_filters:Broken"}, "arms[1].preprocess[0].params",
     "missing required parameter(s) fault of my_filters:Broken; accepted: fault"),
    ({"callable": "my_filters:gamma", "params": {"power": [1, {"a": float("nan")}]}},
     "arms[1].preprocess[0].params.power[1].a", "nan is not finite; accepted: a finite number"),
    ({"callable": "my_filters:nothing"}, "arms[1].preprocess[0].callable", "my_filters has no attribute 'nothing'"),
    ({"callable": "no_such_module:f"}, "arms[1].preprocess[0].callable",
     "cannot import 'no_such_module' (looked for no_such_module.py and no_such_module/ in"),
    ({"callable": "my_filters.gamma"}, "arms[1].preprocess[0].callable",
     "'my_filters.gamma' is not an import path; accepted: 'package.module:name'"),
    ({"module": "my_filters:gamma"}, "arms[1].preprocess[0].module",
     "my_filters:gamma is a function, not an nn.Module class; for a per-image function write callable:"),
    ({"callable": "my_filters:Sharpen"}, "arms[1].preprocess[0].callable",
     "my_filters:Sharpen is an nn.Module class; accepted: a function here, or module: for an nn.Module class"),
    ({"callable": TV, "dtype": "int16"}, "arms[1].preprocess[0].dtype",
     "'int16' is not accepted; accepted: float32, float64, uint8"),
    ({"callable": TV, "parms": {}}, "arms[1].preprocess[0].parms",
     "unknown key; accepted: callable, params, dtype, code"),
    ({"callable": TV, "module": "my_filters:Sharpen"}, "arms[1].preprocess[0]",
     "a step names one of callable: or module:, not both"),
])
def test_a_bad_step_is_refused_with_its_key_path(tmp_path: Path, step: dict, where: str, message: str) -> None:
    path = write(tmp_path / "study", [{"name": "bad", "preprocess": [step]}])
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert len(err.value.lines) == 1, err.value.lines
    assert err.value.lines[0].startswith(f"{path}: {where}: {message}"), err.value.lines[0]


# --------------------------------------------------------------------------- code identity


def test_editing_the_user_module_changes_the_config_hash_and_the_cache_key(tmp_path: Path) -> None:
    arms = [{"name": "sharp", "preprocess": [{"module": "my_filters:Sharpen", "params": {"amount": 0.5}}]},
            {"name": "tv", "preprocess": [{"callable": TV, "params": {"weight": 0.1}}]}]
    path = write(tmp_path / "study", arms)
    module_file = tmp_path / "study" / "my_filters.py"
    suite = load_suite(path)
    before = {a.name: suite.run_config_hash(a) for a in suite.arms}
    key = cache_key("frames", suite.arm("sharp").preprocess, suite.base_dir)
    x = df.conformance.conformance_frames(32)
    old = df.Pipeline.from_config(suite.arm("sharp").preprocess, base_dir=suite.base_dir)(x)

    module_file.write_text(MODULE.replace("GAIN = 1.0", "GAIN = 0.5"))
    edited = load_suite(path)
    after = {a.name: edited.run_config_hash(a) for a in edited.arms}
    assert after["sharp"] != before["sharp"]
    assert after["baseline"] == before["baseline"] and after["tv"] == before["tv"]
    assert suite.run_config_hash("sharp") == after["sharp"]  # the identity is read when hashed, not when loaded
    assert cache_key("frames", suite.arm("sharp").preprocess, suite.base_dir) != key
    new = df.Pipeline.from_config(suite.arm("sharp").preprocess, base_dir=suite.base_dir)(x)
    assert not torch.equal(new, old)
    assert float((new - old).abs().max()) > 0.1  # the edited code runs: the module was loaded again

    module_file.write_text(MODULE)  # the same bytes again: the same hash
    assert load_suite(path).run_config_hash("sharp") == before["sharp"]
    assert cache_key("frames", suite.arm("sharp").preprocess, suite.base_dir) == key


def test_a_recorded_code_identity_must_still_hold(tmp_path: Path) -> None:
    path = write(tmp_path / "study", [])
    config = df.Pipeline.from_config([{"module": "my_filters:Sharpen"}], base_dir=path.parent).config()
    assert config == [{"module": "my_filters:Sharpen", "params": {"amount": 0.5},
                       "code": _sha(path.parent / "my_filters.py")}]
    assert df.Pipeline.from_config(config, base_dir=path.parent).config() == config  # round trip
    (path.parent / "my_filters.py").write_text(MODULE + "\n# edited\n")
    with pytest.raises(ValueError, match=r"^preprocess\[0\]\.code: the step was recorded with code 'sha256:"):
        df.Pipeline.from_config(config, base_dir=path.parent)


def test_modules_next_to_two_suites_stay_apart_and_sys_path_is_untouched(tmp_path: Path) -> None:
    path_before, modules_before = list(sys.path), set(sys.modules)
    for folder, gain in (("a", "1.0"), ("b", "0.0")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "my_filters.py").write_text(MODULE.replace("GAIN = 1.0", f"GAIN = {gain}"))
    x = df.conformance.conformance_frames(16)
    a = df.Pipeline.from_config([{"module": "my_filters:Sharpen"}], base_dir=tmp_path / "a")
    b = df.Pipeline.from_config([{"module": "my_filters:Sharpen"}], base_dir=tmp_path / "b")
    assert float(a(x).abs().max()) == 1.0 and float(b(x).abs().max()) == 0.0  # each suite's own code
    assert a.config()[0]["code"] != b.config()[0]["code"]
    assert sys.path == path_before and "my_filters" not in sys.modules
    assert {m for m in set(sys.modules) - modules_before if "my_filters" in m} <= {
        m for m in sys.modules if m.startswith("_diffusion_filters_user_")}
    with pytest.raises(ValueError, match=r"preprocess\[0\]\.module: cannot import 'my_filters'"):
        df.Pipeline.from_config([{"module": "my_filters:Sharpen"}])  # no suite folder: nothing from elsewhere


def test_a_package_folder_next_to_the_suite_counts_all_its_files(tmp_path: Path) -> None:
    pkg = tmp_path / "study" / "lab_filters"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .core import halve\n")
    (pkg / "core.py").write_text("def halve(image, factor: float = 0.5):\n    return image * factor\n")
    steps = [{"callable": "lab_filters.core:halve"}]
    first = df.Pipeline.from_config(steps, base_dir=tmp_path / "study")
    x = df.conformance.conformance_frames(8)
    assert torch.allclose(first(x), x * 0.5)
    (pkg / "core.py").write_text("def halve(image, factor: float = 0.5):\n    return image * factor * 0.5\n")
    second = df.Pipeline.from_config(steps, base_dir=tmp_path / "study")
    assert second.config()[0]["code"] != first.config()[0]["code"] and torch.allclose(second(x), x * 0.25)


# --------------------------------------------------------------------------- conventions and canonical form


def test_a_per_image_function_is_called_per_frame_on_the_dtype_it_asks_for() -> None:
    import cv2

    x = df.conformance.conformance_frames((20, 24), batch=3)
    pipe = df.Pipeline.from_config([{"callable": "cv2:fastNlMeansDenoising", "dtype": "uint8", "params": {"h": 12}}])
    y = pipe(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    u8 = np.clip(np.rint(x.numpy() * 255), 0, 255).astype(np.uint8)
    for b in range(3):
        want = cv2.fastNlMeansDenoising(u8[b, 0], h=12).astype(np.float32) / 255.0
        np.testing.assert_allclose(y[b, 0].numpy(), want, atol=1e-7)
    cfg = pipe.config()[0]
    assert cfg["dtype"] == "uint8" and cfg["params"] == {"h": 12}  # OpenCV: no readable signature
    assert all(f"{d} {importlib.metadata.version(d)}" in cfg["code"] for d in external._distributions()["cv2"])
    df.check_conformance(pipe.filters[0], 32)
    # a wrong name for a function without a signature: refused by the conformance check
    bad = df.Pipeline.from_config([{"callable": "cv2:fastNlMeansDenoising", "dtype": "uint8", "params": {"hh": 1}}])
    with pytest.raises(df.ConformanceError, match="'hh' is an invalid keyword argument") as err:
        df.check_conformance(bad.filters[0], 16)
    assert err.value.property == "runs" and "\n" not in str(err.value)


def test_the_canonical_config_fills_defaults_so_spellings_hash_alike() -> None:
    given = df.Pipeline.from_config([{"callable": TV, "params": {"weight": 0.1}}]).config()
    stated = df.Pipeline.from_config([{"callable": TV, "dtype": "float32", "params": {
        "weight": 0.1, "eps": 0.0002, "max_num_iter": 200, "channel_axis": None}}]).config()
    assert given == stated == [{"callable": TV, "params": {"weight": 0.1, "eps": 0.0002, "max_num_iter": 200,
                                                           "channel_axis": None}, "dtype": "float32", "code": SKIMAGE}]
    other = df.Pipeline.from_config([{"callable": TV, "params": {"weight": 0.2}}]).config()
    assert other != given
    assert df.Pipeline.from_config([{"callable": TV, "params": {"weight": np.float64(0.1)}}]).config() == given
    described = df.Pipeline.from_config([{"callable": TV, "params": {"weight": 0.1}}, {"median": {"size": 3}}])
    assert described.describe() == f"{TV} (weight=0.1) [{SKIMAGE}] → median (3×3)"
    assert df.Pipeline.from_config([{"callable": "math:sqrt"}]).config()[0]["code"].startswith("python 3.")


def test_callable_and_module_are_reserved_names() -> None:
    with pytest.raises(ValueError, match="reserved"):
        df.register_filter("callable")
    with pytest.raises(ValueError, match="reserved"):
        df.register_filter("module")


# --------------------------------------------------------------------------- entry points


@pytest.fixture
def fake_distribution(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A distribution ``fake-filters 1.2.3`` on sys.path declaring two entry-point filters."""
    root = tmp_path / "site"
    (root / "fakepkg").mkdir(parents=True)
    (root / "fakepkg" / "__init__.py").write_text(
        "import numpy as np\nfrom torch import nn\n\n"
        "def soften(image, weight: float = 0.5):\n    return (1 - weight) * image + weight * image.mean()\n\n"
        "class Invert(nn.Module):\n    def __init__(self, strength: float = 1.0):\n        super().__init__()\n"
        "        self.strength = strength\n\n    def forward(self, x):\n        return (1 - x) * self.strength\n")
    info = root / "fake_filters-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-filters\nVersion: 1.2.3\n")
    (info / "top_level.txt").write_text("fakepkg\n")
    (info / "entry_points.txt").write_text(
        "[diffusion_filters.filters]\nsoften = fakepkg:soften\ninvert = fakepkg:Invert\nmedian = fakepkg:soften\n")
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(external, "_site_dirs", lambda: (root.resolve(),))  # as if installed in site-packages
    external._distributions.cache_clear()
    df.load_entry_points(refresh=True)
    yield root
    monkeypatch.undo()
    sys.modules.pop("fakepkg", None)
    external._distributions.cache_clear()
    df.load_entry_points(refresh=True)


def test_entry_point_filters_are_listed_and_used_like_built_ins(fake_distribution: Path, tmp_path: Path) -> None:
    assert {"soften", "invert", "median", "perona_malik"} <= set(df.available())
    assert df.get_filter_class("median") is df.Median  # a built-in name stays built-in
    assert df.registry.accepted_params("soften") == (["weight"], [])
    pipe = df.Pipeline.from_config([{"soften": {"weight": 0.25}}, {"invert": None}])
    assert pipe.config() == [
        {"callable": "fakepkg:soften", "params": {"weight": 0.25}, "dtype": "float32", "code": "fake-filters 1.2.3"},
        {"module": "fakepkg:Invert", "params": {"strength": 1.0}, "code": "fake-filters 1.2.3"}]
    assert pipe.describe() == "soften (weight=0.25) [fake-filters 1.2.3] → invert (defaults) [fake-filters 1.2.3]"
    x = df.conformance.conformance_frames(8)
    mean = x.mean(dim=(2, 3), keepdim=True)
    assert torch.allclose(pipe(x), 1 - (0.75 * x + 0.25 * mean), atol=1e-6)
    with pytest.raises(ValueError, match=r"^preprocess\[0\]\.soften\.weightt: unknown parameter of fakepkg:soften; "
                                         r"accepted: weight$"):
        df.Pipeline.from_config([{"soften": {"weightt": 1}}])
    # in a suite: the same key paths, and the conformance check (soften mixes in the frame's mean: per frame, fine)
    path = write(tmp_path / "study", [{"name": "soft", "preprocess": [{"soften": {"weight": 0.3}}]},
                                      {"name": "bad", "preprocess": [{"soften": {"wieght": 0.3}}]}], module=None)
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert err.value.lines == [f"{path}: arms[2].preprocess[0].soften.wieght: unknown parameter of fakepkg:soften; "
                               "accepted: weight"]
    path = write(tmp_path / "study", [{"name": "soft", "preprocess": [{"soften": {"weight": 0.3}}]}], module=None)
    suite = load_suite(path)
    check_suite(suite)
    assert suite.run_config_hash("soft") != suite.run_config_hash("baseline")


# --------------------------------------------------------------------------- the worked example


def test_the_example_suite_validates_with_its_checks() -> None:
    suite = load_suite(ROOT / "suites" / "custom-filters-quick.yaml")
    check_suite(suite)  # schema, parameters, and the conformance check of every outside step
    steps = {a.name: a.preprocess for a in suite.arms}
    assert steps["tv-chambolle"][0]["callable"] == TV
    assert steps["opencv-nlm"][0] == {"callable": "cv2:fastNlMeansDenoising", "dtype": "uint8",
                                      "params": {"h": 10, "templateWindowSize": 7, "searchWindowSize": 21}}
    assert steps["unsharp"][0]["module"] == "my_filters:UnsharpMask"
    hashes = {suite.run_config_hash(a) for a in suite.arms}
    assert len(hashes) == len(suite.arms)
    text = (ROOT / "docs" / "custom-filters.md").read_text()
    assert "suites/custom-filters-quick.yaml" in text and TV in text and "cv2:fastNlMeansDenoising" in text
