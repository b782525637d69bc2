"""Physics-based B-mode lung-ultrasound simulator with known B-line ground truth.

Frames are formed the way a scanner forms them, not drawn:

1. **Echo map in beam coordinates** (depth ``z`` x beam angle ``theta`` for a convex probe, or
   lateral position for a linear one). Diffuse scattering amplitude ``a(z, theta)``: skin,
   subcutaneous fat, muscle with fascia streaks, rib acoustic shadows, a low-level haze below
   the pleura, B-lines. Specular (coherent) reflectors ``s(z, theta)``: rib surfaces, the pleural
   line at depth ``d_p``, A-lines at ``k * d_p`` (k = 2, 3, ...) whose amplitude falls as
   ``rho**(k-1)`` (reverberation between probe and pleura). B-lines are narrow bands at a fixed
   beam angle from the pleura to the bottom, of constant brightness (their ring-down echoes keep
   arriving), and they erase the A-lines they cross; they may be confluent (one broad band).
2. **Speckle**: the echo field is ``h * (a . n + s . e^{i phi})`` with ``n`` a circular complex
   Gaussian scatterer field (fully developed speckle) and ``h`` a separable point-spread function,
   an axial Gabor pulse (in IQ baseband, i.e. its Gaussian envelope) times a lateral Gaussian beam.
   The envelope ``|.|`` is then Rayleigh-distributed where ``a`` is uniform and ``s = 0``
   (mean/std = sqrt(pi/(4-pi)) = 1.913). The ``speckle`` knob rescales it in the log domain
   around the local RMS envelope (1 = physical; < 1 as compounding would; > 1 exaggerated).
3. **Depth**: round-trip attenuation ``10**(-alpha f 2 z / 20)`` (alpha = 0.5 dB/cm/MHz), receiver
   noise, and time-gain compensation with a per-patient mismatch.
4. **Log compression** ``255 * clip((20 log10(E) - ref + DR) / DR, 0, 1)`` to 8 bits, then the
   display's smoothing over about one output pixel (the beam grid is 4x finer axially).
5. **Scan conversion** (``scipy.ndimage.map_coordinates``, bilinear) to a convex fan whose
   geometry matches the COVID-BLUES frames (apex above the image, 66 degree sector, black
   outside) or to a linear-probe rectangle.

Patients share anatomy and acquisition settings (pleural depth, layers, ribs, gain, PSF,
speckle level) across their frames; frames of one clip share their B-lines, moved by lung
sliding. Everything is drawn from ``numpy.random.Generator`` streams spawned from one seed per
patient and per frame, so results do not depend on batching. Example::

    from harness.data.config import SimulatedData
    images, table = simulate(SimulatedData(patients=4, frames_per_patient=3, image_size=64), seed=0)
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import ndimage
from scipy.special import expit

from harness.data.config import SimulatedData

ALPHA_DB_CM_MHZ = 0.5  # soft-tissue attenuation
CONVEX_HALF_ANGLE = np.deg2rad(33.0)  # measured on the COVID-BLUES fans (66 degree sector)
CONVEX_RADIUS = 0.55  # probe radius / imaging depth, from the same fans (apex 0.55 depth above the image)
RAYLEIGH_SNR = float(np.sqrt(np.pi / (4 - np.pi)))  # 1.913
SPECKLE_LEVELS = ("low", "medium", "high")
# amplitudes relative to the lung-haze scale; with the coherent gain of a line through the PSF the
# pleura shows bright but (mostly) not saturated, as on the COVID-BLUES frames
PLEURA = 5.0
# Calibrated on COVID-BLUES frames at 128 px (mean 39 / std 28 grey levels inside the fan; mean
# row profile 57, 81, 56, 30, 19, 17 at rows 5, 20, 40, 64, 90, 115): simulated 40 / 27 and
# 54, 71, 44, 29, 21, 18. Fine speckle (PSF in beam samples) smoothed over ~2 output pixels by
# the display, as downsampling the 350 px originals does.
AXIAL_PSF = (1.0, 1.4)  # sigma, axial samples (4 per output pixel)
LATERAL_PSF = (0.8, 1.2)  # sigma, beam lines (1.5 per output pixel)
DISPLAY_SMOOTH = (8, 4)  # box (axial samples, lines)
TISSUE = 2.2  # muscle scattering relative to the lung haze scale below
TEXTURE = 0.45  # log-amplitude std of the tissue texture (fibres, fat lobules)
HAZE = 1.6  # lung echo just below the pleura
HAZE_FLOOR = 0.25  # fraction of it that does not fade (multiple scattering)
HAZE_DECAY_DB = (35.0, 45.0)  # per-patient fading of the rest over one imaging depth
B_LINE = 6.0  # diffuse B-line amplitude at b_line_contrast = 1 (close to the pleura's brightness on screen)


@dataclass(frozen=True)
class Patient:
    """Per-patient anatomy and acquisition settings (shared by all the patient's frames)."""

    index: int
    probe: str
    depth_cm: float
    pleura_cm: float
    pleura_tilt: float  # radians (convex) or slope (linear)
    fat_cm: float
    muscle_gain: float
    ribs: tuple[tuple[float, float], ...]  # (centre, half-width) in lateral units [-1, 1]
    rib_depth_cm: float
    a_reflectivity: float
    pleura_strength: float
    speckle: float
    speckle_factor: float
    psf_axial: float  # samples
    psf_lateral: float  # beam lines
    gain_db: float
    tgc_mismatch: float
    haze_decay_db: float  # fading of the lung echo over one imaging depth
    noise_db: float
    contrast: float
    prevalence: float


@dataclass(frozen=True)
class Clip:
    """One simulated clip: its B-lines (the ground truth) and its frames' sliding offsets."""

    patient: int
    clip: int
    positive: bool
    b_lines: tuple[tuple[float, float], ...]  # (centre, half-width) in lateral units
    confluent: bool
    count: int
    shift: float  # probe repositioning between clips, lateral units


def beam_grid(image_size: int) -> tuple[int, int]:
    """Beam-domain samples (depth, lateral): 4x axial oversampling resolves the ~0.5 mm pulse."""
    return 4 * image_size, image_size + image_size // 2


# --------------------------------------------------------------------------- scene draws


def draw_patients(cfg: SimulatedData, rng: np.random.Generator) -> list[Patient]:
    """Per-patient parameters; ``rng`` is the scene stream (independent of speckle streams)."""
    patients = []
    kappa = 2.0  # Beta concentration: B-lines cluster by patient, as in real cohorts
    for i in range(cfg.patients):
        probe = cfg.probe if cfg.probe != "mixed" else ("convex" if rng.random() < 0.5 else "linear")
        depth = cfg.depth_cm * (1.0 if probe == "convex" else 0.5) * rng.uniform(0.9, 1.1)
        pleura = min(rng.uniform(*cfg.pleura_depth_cm), 0.4 * depth)
        ribs = []
        for side in (-1, 1):
            if rng.random() < 0.35:
                ribs.append((side * rng.uniform(0.62, 0.85), rng.uniform(0.10, 0.16)))
        p = cfg.b_line_prevalence
        if 0.0 < p < 1.0:
            prevalence = float(rng.beta(kappa * p, kappa * (1 - p)))
        else:
            prevalence = p
        factor = rng.uniform(0.8, 1.2)
        patients.append(
            Patient(
                index=i,
                probe=probe,
                depth_cm=depth,
                pleura_cm=pleura,
                pleura_tilt=rng.uniform(-0.08, 0.08),
                fat_cm=pleura * rng.uniform(0.2, 0.45),
                muscle_gain=rng.uniform(0.7, 1.1),
                ribs=tuple(ribs),
                rib_depth_cm=pleura - rng.uniform(0.15, 0.4),
                a_reflectivity=rng.uniform(0.3, 0.55),
                pleura_strength=rng.uniform(0.8, 1.2),
                speckle=cfg.speckle * factor,
                speckle_factor=factor,
                psf_axial=rng.uniform(*AXIAL_PSF),
                psf_lateral=rng.uniform(*LATERAL_PSF),
                gain_db=rng.uniform(-4.0, 4.0),
                tgc_mismatch=rng.uniform(-0.15, 0.03),
                haze_decay_db=rng.uniform(*HAZE_DECAY_DB),
                noise_db=rng.uniform(-56.0, -48.0),
                contrast=cfg.b_line_contrast * rng.uniform(0.8, 1.2),
                prevalence=prevalence,
            )
        )
    return patients


def draw_clips(cfg: SimulatedData, patient: Patient, rng: np.random.Generator) -> list[Clip]:
    """The patient's clips and their B-lines (placed between the rib shadows)."""
    n_clips = -(-cfg.frames_per_patient // cfg.frames_per_video)
    lo = max([c + w for c, w in patient.ribs if c < 0], default=-0.92) + 0.05
    hi = min([c - w for c, w in patient.ribs if c > 0], default=0.92) - 0.05
    clips = []
    for k in range(n_clips):
        positive = bool(rng.random() < patient.prevalence)
        lines: list[tuple[float, float]] = []
        confluent = False
        count = 0
        if positive:
            confluent = bool(rng.random() < cfg.confluent_probability)
            if confluent:
                width = rng.uniform(0.12, 0.22)
                centre = rng.uniform(lo + width, hi - width)
                lines.append((centre, width))
                count = int(np.clip(round(width / 0.05), 3, 12))
            else:
                count = 1 + int(rng.binomial(cfg.max_b_lines - 1, 0.35))
                # uniform over the window between the rib shadows (neighbours may merge, as in vivo)
                centres = np.sort(rng.uniform(lo, hi, size=count))
                for c in centres:
                    lines.append((float(c), float(rng.uniform(0.025, 0.05))))
        clips.append(Clip(patient.index, k, positive, tuple(lines), confluent, count, float(rng.uniform(-0.04, 0.04))))
    return clips


# --------------------------------------------------------------------------- beam domain


def _profile(u: np.ndarray, centre: np.ndarray, half: np.ndarray, soft: float) -> np.ndarray:
    """Smooth top-hat ``~1`` for ``|u - centre| < half`` with edges of width ``soft``."""
    return expit((half - np.abs(u - centre)) / soft)


def pleura_depth(patient: Patient, lateral: np.ndarray) -> np.ndarray:
    """Skin-to-pleura depth (cm) along the beams: a straight line in the image, tilted.

    Convex: the line at distance ``(R + d_p) cos(tilt)`` from the apex, so on the centre beam
    the depth is exactly ``d_p``; linear: ``d_p + slope * x``.
    """
    if patient.probe == "convex":
        radius = CONVEX_RADIUS * patient.depth_cm
        theta = lateral * CONVEX_HALF_ANGLE
        t = patient.pleura_tilt
        return (radius + patient.pleura_cm) * np.cos(t) / np.cos(theta - t) - radius
    return patient.pleura_cm + patient.pleura_tilt * lateral * patient.depth_cm / 2


def anatomy(patient: Patient, nd: int, na: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Static per-patient maps (tissue scattering, shadows, specular rib surfaces), ``(nd, na)``."""
    z = (np.arange(nd, dtype=np.float64)[:, None] + 0.5) * patient.depth_cm / nd
    u = np.linspace(-1.0, 1.0, na)[None, :]
    dz = patient.depth_cm / nd
    zp = pleura_depth(patient, u)
    # layered soft tissue: skin (bright), fat (dark), muscle (mid-grey, fibre texture)
    skin = 0.22
    tissue = TISSUE * np.where(z < skin, 1.6, np.where(z < skin + patient.fat_cm, 0.55, 1.0 * patient.muscle_gain))
    # muscle/fat texture: laterally elongated log-normal modulation (fibres run along the skin)
    texture = ndimage.gaussian_filter(rng.standard_normal((nd, na)), sigma=(1.0, 4.0), mode="nearest")
    tissue = tissue * np.exp(TEXTURE * texture / (texture.std() + 1e-9))
    specular = np.zeros((nd, na))
    # fascia: 2-4 thin, slightly oblique bright interfaces between skin and pleura
    for _ in range(int(rng.integers(2, 5))):
        depth = rng.uniform(skin + 0.1, 0.9) * patient.pleura_cm
        slope = rng.uniform(-0.06, 0.06) * patient.pleura_cm
        line = np.exp(-0.5 * ((z - depth - slope * u) / (0.6 * dz)) ** 2)
        specular += rng.uniform(1.5, 4.0) * line * _profile(u, rng.uniform(-0.5, 0.5), rng.uniform(0.3, 0.9), 0.08)
    # ribs: curved bright surface, acoustic shadow below it
    shadow = np.ones((nd, na))
    for centre, half in patient.ribs:
        surface = patient.rib_depth_cm + 1.5 * (u - centre) ** 2 * patient.depth_cm
        across = _profile(u, centre, half, 0.015)
        specular += 16.0 * across * np.exp(-0.5 * ((z - surface) / (0.8 * dz)) ** 2)
        shadow *= 1.0 - 0.92 * across * expit((z - surface - dz) / dz)
    above = z < zp
    return {"tissue": np.where(above, tissue, 0.0), "specular": specular, "shadow": shadow, "zp": zp}


def lung_maps(patient: Patient, clip: Clip, nd: int, na: int, slide: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray]:
    """Diffuse and specular maps below (and of) the pleura for one frame, ``(nd, na)`` float32 each."""
    z = ((np.arange(nd, dtype=np.float32)[:, None] + 0.5) * patient.depth_cm / nd)
    u = np.linspace(-1.0, 1.0, na, dtype=np.float32)[None, :]
    dz = patient.depth_cm / nd
    zp = pleura_depth(patient, u).astype(np.float32)
    below = expit((z - zp) / (0.7 * dz))
    # pleural line: coherent, slightly irregular along its length (the visceral pleura slides)
    rough = np.exp(ndimage.gaussian_filter1d(rng.standard_normal(na), 1.5, mode="nearest"))[None, :]
    # reverberation order q = z / z_p: the pleura is q = 1, A-lines q = 2, 3, ... fading as rho**(q-1)
    q = z / zp
    k = np.maximum(np.rint(q), 1.0)
    width = np.where(k == 1, 3.0, 2.5) * dz  # ~0.7 mm: the pleural line is a band, not an edge
    amplitude = np.where(k == 1, rough, 0.15 * patient.a_reflectivity ** (k - 1))
    specular = PLEURA * patient.pleura_strength * amplitude * np.exp(-0.5 * ((q - k) * zp / width) ** 2)
    # broad lateral brightness variation of the lung echo (changes between frames)
    zones = ndimage.gaussian_filter1d(rng.standard_normal(na), na / 12, mode="nearest")
    # the lung echo is reverberation: it loses energy with every round trip, so it fades with depth
    fade = 10 ** (-patient.haze_decay_db * np.maximum(z - zp, 0) / patient.depth_cm / 20)
    haze = HAZE * below * (HAZE_FLOOR + (1 - HAZE_FLOOR) * fade) * np.exp(0.35 * zones / (zones.std() + 1e-9))[None, :].astype(np.float32)
    if clip.b_lines:
        mask = np.zeros((1, na), dtype=np.float32)
        for centre, half in clip.b_lines:
            mask = np.maximum(mask, _profile(u, centre + slide, half, 0.3 * half))
        c = patient.contrast
        erase = 1.0 - min(c, 1.0) * mask
        specular = np.where(z > zp + 1.5 * dz, specular * erase, specular)
        # ring-down: slight periodic modulation along depth, constant on average (no fading)
        ripple = 1.0 + 0.15 * np.sin(2 * np.pi * (z - zp) / rng.uniform(0.4, 0.8) + rng.uniform(0, 2 * np.pi))
        haze = haze * erase + below * mask * (c * B_LINE) * ripple
    return haze.astype(np.float32), specular.astype(np.float32)


@lru_cache(maxsize=16)
def psf_kernels(axial_sigma: float, lateral_sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Axial pulse and lateral beam profile, each normalised to unit energy.

    The transmitted pulse is a Gabor pulse ``exp(-t^2 / 2 sigma^2) cos(2 pi f0 t)``; the beam
    samples are IQ-demodulated at ``f0``, where its baseband form is the real Gaussian envelope
    (the carrier leaves no trace in the envelope). The beam profile is Gaussian.
    """
    ra = int(np.ceil(3 * axial_sigma))
    t = np.arange(-ra, ra + 1)
    axial = np.exp(-0.5 * (t / axial_sigma) ** 2)
    rl = int(np.ceil(3 * lateral_sigma))
    x = np.arange(-rl, rl + 1)
    lateral = np.exp(-0.5 * (x / lateral_sigma) ** 2)
    return ((axial / np.sqrt(np.sum(axial**2))).astype(np.float32),
            (lateral / np.sqrt(np.sum(lateral**2))).astype(np.float32))


def _psf(stack: np.ndarray, axial: np.ndarray, lateral: np.ndarray) -> np.ndarray:
    """Separable convolution over the last two axes (real arrays; complex fields as re/im stacks)."""
    out = ndimage.convolve1d(stack, axial, axis=-2, mode="nearest")
    return ndimage.convolve1d(out, lateral, axis=-1, mode="nearest")


def speckle_envelope(diffuse: np.ndarray, specular: np.ndarray, axial_sigma: float, lateral_sigma: float,
                     rng_list: list[np.random.Generator], phase: np.ndarray | None = None,
                     strength: float = 1.0) -> np.ndarray:
    """Envelope ``|h * (a n + s e^{i phi})|`` of a batch ``(B, nd, na)`` (pre attenuation, pre log).

    ``n`` is circular complex Gaussian with unit power, one independent stream per frame.
    ``strength`` rescales the speckle in the log domain, ``E0 (E / E0)**strength`` with ``E0`` the
    local RMS envelope ``sqrt(|h|^2 * a^2 + |h * s e^{i phi}|^2)``; 1 leaves the physical (Rayleigh)
    envelope untouched.
    """
    b, nd, na = diffuse.shape
    if phase is None:
        phase = np.zeros((b, 1, na), dtype=np.float32)
    reduce = strength != 1.0
    # channels: diffuse re/im, then (only to rescale speckle) coherent re/im
    field = np.empty((b, 4 if reduce else 2, nd, na), dtype=np.float32)
    scale = np.float32(np.sqrt(0.5))
    for i, g in enumerate(rng_list):
        g.standard_normal((2, nd, na), dtype=np.float32, out=field[i, :2])
    field[:, :2] *= (diffuse * scale)[:, None]
    coherent = (specular * np.cos(phase), specular * np.sin(phase))
    if reduce:
        field[:, 2], field[:, 3] = coherent
    else:
        field[:, 0] += coherent[0]
        field[:, 1] += coherent[1]
    axial, lateral = psf_kernels(round(axial_sigma, 3), round(lateral_sigma, 3))
    field = _psf(field, axial, lateral)
    if not reduce:
        return np.hypot(field[:, 0], field[:, 1])
    envelope = np.hypot(field[:, 0] + field[:, 2], field[:, 1] + field[:, 3])
    power = _psf(diffuse**2, axial**2, lateral**2)  # E|h * (a n)|^2
    rms = np.sqrt(power + field[:, 2] ** 2 + field[:, 3] ** 2) + 1e-12
    return rms * (envelope / rms) ** np.float32(strength)


def log_compress(envelope: np.ndarray, z_cm: np.ndarray, patient: Patient, frequency_mhz: float,
                 dynamic_range_db: float, noise: np.ndarray) -> np.ndarray:
    """Attenuation, receiver noise, TGC and log compression; returns float in [0, 255]."""
    alpha = ALPHA_DB_CM_MHZ * frequency_mhz * 2 * z_cm  # round trip, dB
    # the field's phase is uniform and independent of the noise, so adding complex noise to the
    # real envelope has the distribution of adding it to the field
    received = np.abs(envelope * 10 ** (-alpha / 20) + noise * 10 ** (patient.noise_db / 20))
    tgc = 10 ** (alpha * (1 + patient.tgc_mismatch) / 20)
    db = 20 * np.log10(received * tgc + 1e-12)
    ref = 48.0 + patient.gain_db  # dB level shown as white (the pleura's peak)
    return np.clip((db - ref + dynamic_range_db) / dynamic_range_db, 0.0, 1.0) * 255.0


# --------------------------------------------------------------------------- scan conversion


@lru_cache(maxsize=8)
def scan_coordinates(probe: str, image_size: int, nd: int, na: int) -> tuple[np.ndarray, np.ndarray]:
    """Beam-grid coordinates (depth index, lateral index) of every output pixel, and the inside mask."""
    s = image_size
    y, x = np.mgrid[0:s, 0:s].astype(np.float64)
    y = (y + 0.5) / s  # depth units (image height = imaging depth)
    x = (x + 0.5) / s - 0.5
    if probe == "convex":
        r = np.hypot(x, y + CONVEX_RADIUS)
        theta = np.arctan2(x, y + CONVEX_RADIUS)
        depth = r - CONVEX_RADIUS
        lateral = theta / CONVEX_HALF_ANGLE
        inside = (depth >= 0) & (depth <= 1) & (np.abs(lateral) <= 1)
    else:
        depth, lateral = y, x * 2
        inside = np.ones_like(y, dtype=bool)
    coords = np.stack([depth * nd - 0.5, (lateral + 1) / 2 * (na - 1)])
    return coords, inside


def scan_convert(beam: np.ndarray, probe: str, image_size: int) -> np.ndarray:
    """Batch ``(B, nd, na)`` beam images -> ``(B, S, S)`` uint8, black outside a convex sector."""
    b, nd, na = beam.shape
    coords, inside = scan_coordinates(probe, image_size, nd, na)
    s = image_size
    frame = np.broadcast_to(np.arange(b, dtype=np.float64)[:, None, None], (b, s, s))
    full = np.stack([frame, np.broadcast_to(coords[0], (b, s, s)), np.broadcast_to(coords[1], (b, s, s))])
    out = ndimage.map_coordinates(beam, full, order=1, mode="nearest")
    out *= inside[None]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- driver


def simulate(cfg: SimulatedData, seed: int) -> tuple[np.ndarray, pd.DataFrame]:
    """All frames ``(N, S, S)`` uint8 and a table (one row per frame) of ids, labels and metadata."""
    images, table = [], []
    for patient, clips, frames in iterate_patients(cfg, seed):
        rows, stack = render_patient(cfg, patient, clips, frames)
        images.append(stack)
        table.extend(rows)
    return np.concatenate(images), pd.DataFrame(table)


def iterate_patients(cfg: SimulatedData, seed: int):
    """Yield ``(patient, clips, frame_seeds)``; streams: scene <- seed, frames <- (seed, patient)."""
    root = np.random.SeedSequence([seed, 20240611])
    scene_ss, frames_ss = root.spawn(2)
    scene = np.random.default_rng(scene_ss)
    patients = draw_patients(cfg, scene)
    per_patient = frames_ss.spawn(cfg.patients)
    for patient, ss in zip(patients, per_patient):
        anat_ss, clip_ss, frame_ss = ss.spawn(3)
        clips = draw_clips(cfg, patient, np.random.default_rng(clip_ss))
        yield patient, clips, (anat_ss, frame_ss.spawn(cfg.frames_per_patient))


def table_rows(cfg: SimulatedData, patient: Patient, clips: list[Clip]) -> list[dict]:
    """Ids, labels and metadata of the patient's frames (cheap: no pixels)."""
    rows = []
    level = SPECKLE_LEVELS[min(2, int((patient.speckle_factor - 0.8) / (0.4 / 3)))]
    for f in range(cfg.frames_per_patient):
        clip = clips[f // cfg.frames_per_video]
        video = f"sim_p{patient.index:04d}_c{clip.clip:02d}"
        rows.append({
            "sample_id": f"{video}#{f % cfg.frames_per_video}",
            "group": f"sim_p{patient.index:04d}",
            "video": video,
            "label": int(clip.positive),
            "patient": f"sim_p{patient.index:04d}",
            "b_line_count": clip.count,
            "confluent": clip.confluent,
            "speckle": round(patient.speckle, 4),
            "speckle_level": level,
            "b_line_contrast": round(patient.contrast if clip.positive else 0.0, 4),
            "depth_cm": round(patient.depth_cm, 3),
            "pleura_depth_cm": round(patient.pleura_cm, 3),
            "gain_db": round(patient.gain_db, 3),
            "probe": patient.probe,
        })
    return rows


def render_patient(cfg: SimulatedData, patient: Patient, clips: list[Clip], streams) -> tuple[list[dict], np.ndarray]:
    """Render all frames of one patient; returns their table rows and ``(F, S, S)`` uint8."""
    anat_ss, frame_ss = streams
    nd, na = beam_grid(cfg.image_size)
    anat_rng = np.random.default_rng(anat_ss)
    anat = anatomy(patient, nd, na, anat_rng)
    z_cm = ((np.arange(nd) + 0.5) * patient.depth_cm / nd)[None, :, None]
    rows = table_rows(cfg, patient, clips)
    frames = []
    for start in range(0, cfg.frames_per_patient, 32):
        stop = min(start + 32, cfg.frames_per_patient)
        rngs = [np.random.default_rng(ss) for ss in frame_ss[start:stop]]
        diffuse, specular, phase = [], [], []
        for f, g in zip(range(start, stop), rngs):
            clip = clips[f // cfg.frames_per_video]
            shift = int(round(clip.shift * na / 2))  # the probe sits a little differently per clip
            slide = g.uniform(-0.012, 0.012)  # lung sliding between frames
            haze, lung_spec = lung_maps(patient, clip, nd, na, slide, g)
            moved = np.clip(np.arange(na) - shift, 0, na - 1)  # lateral shift, edges repeated (no wrap)
            tissue, shadow = anat["tissue"][:, moved], anat["shadow"][:, moved]
            diffuse.append((tissue + haze) * shadow)
            specular.append(anat["specular"][:, moved] + lung_spec * shadow)
            phase.append(ndimage.gaussian_filter1d(g.uniform(-np.pi, np.pi, na), 3.0, mode="wrap")[None, :] * 3)
        diffuse_b, specular_b = np.stack(diffuse).astype(np.float32), np.stack(specular).astype(np.float32)
        envelope = speckle_envelope(diffuse_b, specular_b, patient.psf_axial, patient.psf_lateral, rngs,
                                    np.stack(phase).astype(np.float32), patient.speckle)
        noise = np.stack([g.standard_normal((2, nd, na), dtype=np.float32) for g in rngs])
        noise = (noise[:, 0] + 1j * noise[:, 1]) * np.float32(np.sqrt(0.5))
        beam = log_compress(envelope, z_cm, patient, cfg.frequency_mhz, cfg.dynamic_range_db, noise)
        # display smoothing over ~2 output pixels, as downsampling the 350 px originals to 128 px does
        beam = ndimage.uniform_filter(beam, size=(1, *DISPLAY_SMOOTH), mode="nearest")
        frames.append(scan_convert(beam.astype(np.float32), patient.probe, cfg.image_size))
    return rows, np.concatenate(frames)
