"""Filters from outside the package: any function or ``nn.Module`` class named by import path, and
filters that installed packages register through the ``diffusion_filters.filters`` entry-point group.

A pipeline step names one, with the calling convention as its key::

    {"callable": "skimage.restoration:denoise_tv_chambolle", "params": {"weight": 0.1}}
    {"callable": "cv2:fastNlMeansDenoising", "dtype": "uint8", "params": {"h": 10}}
    {"module": "my_filters:UnsharpMask", "params": {"amount": 0.5}}

Calling conventions (the key says which; nothing is guessed):

* ``callable:`` a per-image array function ``f(image, **params) -> image`` (scikit-image style). It
  is called once per ``(H, W)`` image of the batch with a fresh numpy array: ``dtype: float32``
  (the default) or ``float64`` in ``[0, 1]``, or ``dtype: uint8`` in ``0..255`` (OpenCV style); its
  result, any numeric array of the image's shape, is read on the same scale (``uint8``: divided by
  255) and goes back into the batch as a tensor of the batch's dtype and device. No gradient flows
  through it (preprocessing runs without them).
* ``module:`` an ``nn.Module`` class, instantiated once with ``params`` and called on the
  ``(B, 1, H, W)`` float32 tensor in ``[0, 1]``; it returns a tensor of the same shape (it is moved
  to the batch's device on first use).

Where the code comes from (``"package.module:name"``, the form of entry points; ``name`` may be
dotted, ``Class.method``): when the first component of the module path names a module file
``<top>.py`` or a package folder ``<top>/__init__.py`` in ``base_dir`` (the suite's folder), it is
loaded from there, under a private module name: ``sys.path`` is not changed and two suites with a
``my_filters.py`` each get their own (a package folder may import its own submodules relatively;
a single file cannot import its neighbours). Anything else is imported as Python imports it
(installed packages, the standard library). Nothing is imported that the step does not name.

Parameters are validated against ``inspect.signature`` (of the function, after its image argument;
of the class's constructor): an unknown name or a missing required one is one line naming the key
and listing what is accepted. A function whose signature Python cannot read (C extensions such as
OpenCV's) takes its parameters as given; the conformance check
(:func:`diffusion_filters.conformance.check_conformance`) then calls it, so a wrong one is still
refused before any training. Values are plain data (numbers, strings, booleans, null, lists and
mappings of them).

The canonical config of a step (:meth:`ExternalFilter.config`) holds every parameter (defaults
that are plain values filled in, in signature order) and the code's identity, ``code``:

* a module file or package folder next to the suite: ``sha256:<hex>`` of its bytes (a package:
  of every ``.py`` file under it), so editing the file changes the pipeline's hash and with it the
  preprocessing cache key and the run's config hash;
* a module installed in site-packages: ``<distribution> <version>`` (every distribution that
  provides the top-level module, e.g. ``scikit-image 0.26.0``);
* the standard library: ``python <version>``;
* any other importable file (a source tree on ``sys.path``, an editable install): ``sha256:<hex>``
  of the file that defines the named object.

A step given with a ``code`` key (a canonical config read back) is refused when the code no longer
has that identity.

Entry points: a package declares, e.g. in its ``pyproject.toml``::

    [project.entry-points."diffusion_filters.filters"]
    tv_chambolle = "my_package.filters:denoise_tv"      # a function: the callable convention
    unsharp = "my_package.filters:UnsharpMask"          # an nn.Module class: the module convention

and ``diffusion_filters.available()`` lists ``tv_chambolle`` and ``unsharp`` beside the built-in
filters; a step ``{tv_chambolle: {weight: 0.1}}`` uses it like a built-in one and goes through the
same parameter check, code identity and conformance check as the forms above. A built-in name
cannot be taken by an entry point (the built-in filter stays).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import itertools
import json
import math
import platform
import re
import site
import sys
import sysconfig
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

__all__ = [
    "CONVENTIONS",
    "DTYPES",
    "ENTRY_POINT_GROUP",
    "ExternalFilter",
    "ExternalFilterError",
    "Resolved",
    "build_step",
    "describe_config",
    "entry_point_class",
    "entry_point_filters",
    "is_external_step",
    "resolve",
]

ENTRY_POINT_GROUP = "diffusion_filters.filters"
#: The step keys naming the calling convention (reserved: no filter can be registered under them).
CONVENTIONS = ("callable", "module")
#: What a ``callable:`` function is given: float32 / float64 in [0, 1], or uint8 in 0..255.
DTYPES = ("float32", "float64", "uint8")
_KEYS = {"callable": ("callable", "params", "dtype", "code"), "module": ("module", "params", "code")}
_REFERENCE = re.compile(r"^[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*$")


class ExternalFilterError(ValueError, TypeError):
    """A step that cannot be used; ``str(err)`` is one line ``<key>: <what is wrong>; accepted: ...``
    where ``<key>`` is the step's key at fault (``callable``, ``params.weight``, ...)."""

    def __init__(self, key: str, message: str):
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}" if key else message)


def _one_line(err: BaseException) -> str:
    """An exception as one short line (C extensions such as OpenCV raise several)."""
    text = " ".join(str(err).split())
    text = f"{type(err).__name__}: {text}" if text else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."


# --------------------------------------------------------------------------- code and its identity


@dataclass(frozen=True)
class Resolved:
    """What an import path names: the object and the identity of its code."""

    reference: str
    obj: Any
    code: str
    origin: str  # the file or distribution it came from (messages)


def _sha256_files(files: Sequence[Path], root: Path) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.relative_to(root).as_posix().encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    return digest.hexdigest()


def _local_identity(path: Path) -> str:
    """``sha256:<hex>``: of a module file's bytes, or over every ``.py`` file of a package folder."""
    if path.name == "__init__.py":
        files = sorted(p for p in path.parent.rglob("*.py") if "__pycache__" not in p.parts)
        return "sha256:" + _sha256_files(files, path.parent)
    return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _local_file(top: str, base_dir: Path | None) -> Path | None:
    """``base_dir/<top>.py`` or ``base_dir/<top>/__init__.py`` when present."""
    if base_dir is None:
        return None
    for candidate in (base_dir / f"{top}.py", base_dir / top / "__init__.py"):
        if candidate.is_file():
            return candidate.resolve()
    return None


#: path of a suite-folder module -> (its identity, the private name it is loaded under)
_LOCAL: dict[Path, tuple[str, str]] = {}


def _load_local(module_name: str, path: Path, code: str) -> Any:
    """Load ``module_name`` (its top component is the file or package ``path``) under a private name;
    reloaded when the code's identity changed."""
    top, _, rest = module_name.partition(".")
    private = f"_diffusion_filters_user_{hashlib.sha256(str(path).encode()).hexdigest()[:12]}_{top}"
    known = _LOCAL.get(path)
    if known is None or known[0] != code or private not in sys.modules:
        for name in [n for n in sys.modules if n == private or n.startswith(private + ".")]:
            del sys.modules[name]
        package = path.name == "__init__.py"
        if rest and not package:
            raise ExternalFilterError("", f"{path.name} is a module file, not a package: {module_name!r} cannot be "
                                          f"imported from it; accepted: {top}:<name>")
        spec = importlib.util.spec_from_file_location(
            private, path, submodule_search_locations=[str(path.parent)] if package else None)
        if spec is None or spec.loader is None:
            raise ExternalFilterError("", f"cannot load {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[private] = module
        try:
            spec.loader.exec_module(module)
        except BaseException as err:
            del sys.modules[private]
            _LOCAL.pop(path, None)
            if not isinstance(err, Exception):
                raise
            raise ExternalFilterError("", f"importing {path} raised {_one_line(err)}") from None
        _LOCAL[path] = (code, private)
    return importlib.import_module(private + (f".{rest}" if rest else ""))


@functools.lru_cache(maxsize=1)
def _distributions() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


@functools.lru_cache(maxsize=1)
def _site_dirs() -> tuple[Path, ...]:
    dirs = {sysconfig.get_paths().get(k) for k in ("purelib", "platlib")}
    try:
        dirs.update(site.getsitepackages())
    except AttributeError:  # a virtualenv's old site.py
        pass
    dirs.add(site.getusersitepackages())
    return tuple(Path(d).resolve() for d in dirs if d)


def _in_site_packages(file: str | None) -> bool:
    if not file:
        return False
    path = Path(file).resolve()
    return any(path.is_relative_to(d) for d in _site_dirs())


def _installed_identity(top: str, module: Any, obj: Any) -> tuple[str, str]:
    """``(identity, origin)`` of an imported (not suite-folder) module (see the module docstring)."""
    file = getattr(module, "__file__", None)
    if top in sys.stdlib_module_names:
        return f"python {platform.python_version()}", "the standard library"
    dists = sorted(set(_distributions().get(top, [])))
    if dists and _in_site_packages(file):
        text = ", ".join(f"{d} {importlib.metadata.version(d)}" for d in dists)
        return text, text
    try:
        defining = inspect.getfile(obj)
    except TypeError:
        defining = file
    if defining and Path(defining).is_file():
        return "sha256:" + hashlib.sha256(Path(defining).read_bytes()).hexdigest(), str(defining)
    raise ExternalFilterError("", f"cannot tell which code {module.__name__} is (no distribution, no file); "
                                  "accepted: an installed package or a module file in the suite's folder")


def resolve(reference: str, base_dir: str | Path | None = None) -> Resolved:
    """The object ``reference`` (``"package.module:name"``) names and its code identity.

    Raises :class:`ExternalFilterError` (key ``""``: the caller names the key) for a malformed
    reference, a module that cannot be imported or an attribute it lacks.
    """
    if not isinstance(reference, str) or not _REFERENCE.match(reference):
        raise ExternalFilterError("", f"{reference!r} is not an import path; accepted: 'package.module:name' "
                                      "(e.g. 'skimage.restoration:denoise_tv_chambolle' or 'my_filters:Sharpen')")
    module_name, attr = reference.split(":")
    top = module_name.split(".")[0]
    local = _local_file(top, Path(base_dir) if base_dir is not None else None)
    if local is not None:
        code = _local_identity(local)
        module = _load_local(module_name, local, code)
        origin = str(local if local.name != "__init__.py" else local.parent)
    else:
        try:
            module = importlib.import_module(module_name)
        except Exception as err:
            where = f" (looked for {top}.py and {top}/ in {base_dir})" if base_dir is not None else ""
            raise ExternalFilterError("", f"cannot import {module_name!r}{where}: {_one_line(err)}; accepted: an "
                                          "installed module or a module file in the suite's folder") from None
        code, origin = "", ""
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ExternalFilterError("", f"{module_name} has no attribute {attr!r} ({origin or module.__name__})") \
                from None
    if local is None:
        code, origin = _installed_identity(top, module, obj)
    return Resolved(reference, obj, code, origin)


# --------------------------------------------------------------------------- parameters


def _plain(value: Any, key: str) -> Any:
    """``value`` as plain JSON data (numpy scalars unwrapped, tuples as lists); refused otherwise."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ExternalFilterError(key, f"{value!r} is not finite; accepted: a finite number")
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping) and all(isinstance(k, str) for k in value):
        return {k: _plain(v, f"{key}.{k}") for k, v in value.items()}
    raise ExternalFilterError(key, f"{type(value).__name__} {value!r} is not a plain value; accepted: numbers, "
                                   "strings, booleans, null, and lists or mappings of them")


def _is_plain(value: Any) -> bool:
    try:
        _plain(value, "")
    except ExternalFilterError:
        return False
    return True


@dataclass(frozen=True)
class _Signature:
    names: tuple[str, ...] | None  # None: not readable (parameters taken as given)
    required: tuple[str, ...]
    defaults: Mapping[str, Any]
    open: bool  # **kwargs: any name accepted

    def accepted(self) -> str:
        text = ", ".join(self.names or ()) or "(none)"
        return text + (", and any other name (**kwargs)" if self.open else "")


def _signature(target: Any, convention: str, reference: str) -> _Signature:
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return _Signature(None, (), {}, True)
    params = list(sig.parameters.values())
    if convention == "callable":
        if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD,
                                                params[0].VAR_POSITIONAL):
            raise ExternalFilterError("callable", f"{reference} takes no image as its first argument; accepted: a "
                                                  "function f(image, **params) -> image")
        params = params[1:] if params[0].kind != params[0].VAR_POSITIONAL else params
    names, required, defaults, is_open = [], [], {}, False
    for p in params:
        if p.kind == p.VAR_KEYWORD:
            is_open = True
        elif p.kind == p.VAR_POSITIONAL:
            continue
        elif p.kind == p.POSITIONAL_ONLY:
            if p.default is p.empty:
                raise ExternalFilterError(convention, f"{reference} needs the positional-only argument {p.name!r}, "
                                                      "which a step cannot give; accepted: a function whose "
                                                      "parameters after the image can be passed by name (wrap it)")
        else:
            names.append(p.name)
            if p.default is p.empty:
                required.append(p.name)
            elif _is_plain(p.default):
                defaults[p.name] = _plain(p.default, p.name)
    return _Signature(tuple(names), tuple(required), defaults, is_open)


def _canonical_params(sig: _Signature, given: Mapping[str, Any], reference: str) -> dict[str, Any]:
    bad = [k for k in given if not isinstance(k, str)]
    if bad:
        raise ExternalFilterError("params", f"parameter names must be text, got {bad[0]!r}")
    values = {k: _plain(v, f"params.{k}") for k, v in given.items()}
    if sig.names is None:
        return values
    unknown = [k for k in values if k not in sig.names]
    if unknown and not sig.open:
        raise ExternalFilterError(f"params.{unknown[0]}", f"unknown parameter of {reference}; accepted: "
                                                          f"{sig.accepted()}")
    missing = [k for k in sig.required if k not in values]
    if missing:
        raise ExternalFilterError("params", f"missing required parameter(s) {', '.join(missing)} of {reference}; "
                                            f"accepted: {sig.accepted()}")
    out = {}
    for name in sig.names:
        if name in values:
            out[name] = values[name]
        elif name in sig.defaults:
            out[name] = sig.defaults[name]
    out.update({k: values[k] for k in sorted(unknown)})
    return out


# --------------------------------------------------------------------------- the step as a module


def _short(code: str) -> str:
    return code[:19] if code.startswith("sha256:") else code


def _params_text(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in params.items())


class ExternalFilter(nn.Module):
    """A pipeline step running code from outside the package (see the module docstring).

    Attributes:
        convention: ``"callable"`` or ``"module"``.
        reference: the import path, ``"package.module:name"``.
        params: the canonical parameters (as :meth:`config` records them).
        code: the code's identity.
        dtype: what a ``callable`` is given (``float32``, ``float64``, ``uint8``); ``None`` for a module.
        filter_name: the entry-point name, or the reference.
    """

    entry_point: ClassVar[str | None] = None  # set on the classes registered for entry points

    def __init__(self, convention: str, resolved: Resolved, params: Mapping[str, Any],
                 given: Sequence[str] = (), dtype: str | None = None, name: str | None = None) -> None:
        super().__init__()
        self.convention = convention
        self.reference = resolved.reference
        self.code = resolved.code
        self.origin = resolved.origin
        self.params = dict(params)
        self._given = tuple(given)
        self.dtype = dtype
        self.filter_name = name or resolved.reference
        if convention == "module":
            try:
                self.inner: nn.Module | None = resolved.obj(**self.params)
            except Exception as err:
                raise ExternalFilterError("params", f"{self.reference}({_params_text(self.params)}) raised "
                                                    f"{_one_line(err)}") from None
            if not isinstance(self.inner, nn.Module):
                raise ExternalFilterError("module", f"{self.reference}(...) gave a {type(self.inner).__name__}, "
                                                    "not an nn.Module")
            self.function: Callable[..., Any] | None = None
        else:
            self.inner = None
            self.function = resolved.obj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.inner is not None:
            first = next(itertools.chain(self.inner.parameters(), self.inner.buffers()), None)
            if first is not None and first.device != x.device:
                self.inner.to(x.device)
            return self.inner(x)
        return self._per_image(x)

    def _per_image(self, x: torch.Tensor) -> torch.Tensor:
        assert self.function is not None
        images = x.detach().cpu().numpy()
        out = np.empty(images.shape, dtype=images.dtype)
        for b, c in np.ndindex(*images.shape[:2]):
            image = images[b, c]
            if self.dtype == "uint8":
                given: np.ndarray = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
            else:
                given = np.array(image, dtype=np.float64 if self.dtype == "float64" else np.float32, copy=True)
            result = np.asarray(self.function(given, **self.params))
            if result.shape != image.shape:
                raise ValueError(f"{self.filter_name}: returned an image of shape {result.shape} for one of shape "
                                 f"{image.shape}; accepted: an image of the input's shape")
            if result.dtype.kind not in "biuf":
                raise TypeError(f"{self.filter_name}: returned a {result.dtype} array; accepted: a numeric image")
            out[b, c] = result / 255.0 if self.dtype == "uint8" else result
        return torch.from_numpy(out).to(device=x.device)

    def config(self) -> dict[str, Any]:
        """The canonical step: the convention's key, the parameters, (``dtype``) and the code identity."""
        out: dict[str, Any] = {self.convention: self.reference, "params": dict(self.params)}
        if self.convention == "callable":
            out["dtype"] = self.dtype
        out["code"] = self.code
        return out

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def describe(self) -> str:
        """One line: the name, the parameters given, the code (``[scikit-image 0.26.0]``)."""
        shown = {k: v for k, v in self.params.items() if k in self._given}
        extra = f"; given {self.dtype}" if self.convention == "callable" and self.dtype != "float32" else ""
        return f"{self.filter_name} ({_params_text(shown) or 'defaults'}{extra}) [{_short(self.code)}]"

    def extra_repr(self) -> str:
        return self.describe()


def is_external_step(step: Any) -> bool:
    """Whether a pipeline step names outside code (``callable:`` or ``module:``)."""
    return isinstance(step, Mapping) and any(k in step for k in CONVENTIONS)


def _prepare(convention: str, resolved: Resolved, raw_params: Any, dtype: Any) -> tuple[dict[str, Any], str | None]:
    """``(canonical parameters, dtype)`` of a step, its target and parameters checked."""
    obj = resolved.obj
    if convention == "module" and not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        hint = "; for a per-image function write callable:" if callable(obj) and not isinstance(obj, type) else ""
        raise ExternalFilterError("module", f"{resolved.reference} is a {type(obj).__name__}, not an nn.Module "
                                            f"class{hint}")
    if convention == "callable":
        if isinstance(obj, type) and issubclass(obj, nn.Module):
            raise ExternalFilterError("callable", f"{resolved.reference} is an nn.Module class; accepted: a function "
                                                  "here, or module: for an nn.Module class")
        if isinstance(obj, type) or not callable(obj):
            raise ExternalFilterError("callable", f"{resolved.reference} is a {type(obj).__name__}, not a function")
    if dtype is None:
        dtype = "float32" if convention == "callable" else None
    elif convention == "module":
        raise ExternalFilterError("dtype", "applies to callable: only (a module gets the float32 batch); accepted: "
                                           "no dtype")
    elif dtype not in DTYPES:
        raise ExternalFilterError("dtype", f"{dtype!r} is not accepted; accepted: {', '.join(DTYPES)}")
    if raw_params is None:
        raw_params = {}
    if not isinstance(raw_params, Mapping):
        raise ExternalFilterError("params", f"must be a mapping of parameter names to values, got {raw_params!r}")
    return _canonical_params(_signature(obj, convention, resolved.reference), raw_params, resolved.reference), dtype


def build_step(step: Mapping[str, Any], base_dir: str | Path | None = None) -> ExternalFilter:
    """The module of a ``callable:`` / ``module:`` step (:class:`ExternalFilterError` when it cannot be used)."""
    kinds = [k for k in CONVENTIONS if k in step]
    if len(kinds) != 1:
        raise ExternalFilterError("", "a step names one of callable: or module:, not both")
    convention = kinds[0]
    unknown = [k for k in step if k not in _KEYS[convention]]
    if unknown:
        raise ExternalFilterError(str(unknown[0]), f"unknown key; accepted: {', '.join(_KEYS[convention])}")
    try:
        resolved = resolve(step[convention], base_dir)
    except ExternalFilterError as err:
        raise ExternalFilterError(convention, err.message) from None
    params, dtype = _prepare(convention, resolved, step.get("params"), step.get("dtype"))
    module = ExternalFilter(convention, resolved, params, given=tuple(step.get("params") or ()), dtype=dtype)
    recorded = step.get("code")
    if recorded is not None and recorded != module.code:
        raise ExternalFilterError("code", f"the step was recorded with code {recorded!r}, but {resolved.reference} "
                                          f"is now {module.code!r} ({module.origin}); accepted: the code as recorded, "
                                          "or no code key")
    return module


def describe_config(step: Mapping[str, Any]) -> str:
    """One line for a canonical ``callable:`` / ``module:`` step, without importing its code (reports)."""
    convention = next((k for k in CONVENTIONS if k in step), None)
    if convention is None:
        raise ValueError(f"not a callable:/module: step: {step!r}")
    params = step.get("params") or {}
    dtype = step.get("dtype")
    how = "per-image function" + (f", given {dtype}" if dtype else "") if convention == "callable" \
        else "nn.Module on the batch"
    return (f"{step[convention]} ({_params_text(params) or 'no parameters'}; {how}; "
            f"code {step.get('code', 'not recorded')})")


# --------------------------------------------------------------------------- entry points


def entry_point_filters() -> dict[str, importlib.metadata.EntryPoint]:
    """The ``diffusion_filters.filters`` entry points of the installed distributions, by name (not loaded).

    Names that are not identifiers or are reserved (``callable``, ``module``) are left out; where two
    distributions declare one name, the first found is kept.
    """
    out: dict[str, importlib.metadata.EntryPoint] = {}
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name.isidentifier() and ep.name not in CONVENTIONS and ep.name not in out:
            out[ep.name] = ep
    return out


def _entry_point_resolved(name: str, ep: importlib.metadata.EntryPoint) -> Resolved:
    try:
        obj = ep.load()
    except Exception as err:
        raise ExternalFilterError("", f"{name}: loading entry point {ep.value!r} ({ENTRY_POINT_GROUP}) raised "
                                      f"{_one_line(err)}") from None
    module_name = ep.value.split(":")[0].strip()
    module = sys.modules.get(module_name) or importlib.import_module(module_name)
    code, origin = _installed_identity(module_name.split(".")[0], module, obj)
    reference = ep.value.replace(" ", "")
    return Resolved(reference, obj, code, origin)


def entry_point_class(name: str, ep: importlib.metadata.EntryPoint) -> type[ExternalFilter]:
    """The module class registered under an entry point's ``name``: ``cls(**params)`` loads the entry point,
    checks the parameters against its signature and builds the step; ``cls.accepted_params()`` is
    ``(names, required)`` from that signature."""

    def convention_of(resolved: Resolved) -> str:
        return "module" if isinstance(resolved.obj, type) else "callable"

    def __init__(self: ExternalFilter, **params: Any) -> None:
        resolved = _entry_point_resolved(name, ep)
        convention = convention_of(resolved)
        try:
            canonical, dtype = _prepare(convention, resolved, params, None)
        except ExternalFilterError as err:
            key = err.key.removeprefix("params.") if err.key.startswith("params.") else ""
            raise ExternalFilterError(f"{name}.{key}" if key else name, err.message) from None
        ExternalFilter.__init__(self, convention, resolved, canonical, given=tuple(params), dtype=dtype, name=name)

    def accepted_params(cls: type[ExternalFilter]) -> tuple[list[str], list[str]]:
        resolved = _entry_point_resolved(name, ep)
        try:
            sig = _signature(resolved.obj, convention_of(resolved), resolved.reference)
        except ExternalFilterError as err:
            raise ExternalFilterError(name, err.message) from None
        return list(sig.names or ()), list(sig.required)

    return type(f"EntryPoint_{name}", (ExternalFilter,), {
        "__init__": __init__, "accepted_params": classmethod(accepted_params), "entry_point": name,
        "__module__": __name__, "__doc__": f"The {name!r} filter of entry point {ep.value!r} ({ENTRY_POINT_GROUP})."})
