"""Per-track smoothing of boxes and keypoints: a constant-velocity Kalman filter and the One Euro filter.

Both filter a vector of values (a face's 4 box coordinates and 12 keypoint coordinates, in pixels) over time
(seconds), and both take the face's size in pixels at each step so that their parameters are in *face
units* (fractions of the face size) and hold for any resolution and distance, as MediaPipe's landmark
smoothing does with its ``object_scale``.

- :class:`OneEuroFilter` (Casiez et al., CHI 2012; MediaPipe's ``OneEuroFilter``): a low-pass filter whose
  cutoff rises with the speed, ``cutoff = min_cutoff + beta × |speed|``: strong smoothing when still, little
  lag when moving.
- :class:`KalmanFilter`: position and velocity per coordinate with white-noise acceleration; it predicts
  motion, so on a steady movement it has no lag, and it predicts through missed frames.
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import numpy as np

SmoothingName = Literal["kalman", "one-euro", "none"]

#: The default: the constant-velocity Kalman filter (see ``benchmarks/RESULTS.md`` for the comparison).
DEFAULT_SMOOTHING: SmoothingName = "kalman"


class Smoother(Protocol):
    def __call__(self, values: np.ndarray, t: float, scale: float) -> np.ndarray: ...
    def reset(self) -> None: ...


class NoSmoothing:
    """Passes values through."""

    def __call__(self, values: np.ndarray, t: float, scale: float) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def reset(self) -> None:
        pass


class OneEuroFilter:
    """The One Euro filter over a vector, with its speed measured in face sizes per second.

    Args:
        min_cutoff: cutoff frequency (Hz) when still; lower is smoother.
        beta: how fast the cutoff rises with speed (Hz per face-size/s); higher is less lag.
        d_cutoff: cutoff (Hz) of the low-pass on the speed estimate.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 30.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0 or beta < 0:
            raise ValueError("min_cutoff and d_cutoff must be positive, beta non-negative")
        self.min_cutoff, self.beta, self.d_cutoff = float(min_cutoff), float(beta), float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None
        self._t: float | None = None

    @staticmethod
    def _alpha(cutoff: np.ndarray | float, dt: float) -> np.ndarray | float:
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, values: np.ndarray, t: float, scale: float) -> np.ndarray:
        x = np.asarray(values, dtype=np.float64)
        if self._x is None or self._t is None or t <= self._t:
            self._x, self._dx, self._t = x.copy(), np.zeros_like(x), float(t)
            return x.copy()
        dt = float(t) - self._t
        scale = max(float(scale), 1e-6)
        dx = (x - self._x) / dt / scale  # face sizes per second
        assert self._dx is not None
        self._dx = self._dx + self._alpha(self.d_cutoff, dt) * (dx - self._dx)
        cutoff = self.min_cutoff + self.beta * np.abs(self._dx)
        self._x = self._x + self._alpha(cutoff, dt) * (x - self._x)
        self._t = float(t)
        return self._x.copy()


class KalmanFilter:
    """A constant-velocity Kalman filter per coordinate (all coordinates share one 2×2 covariance).

    Args:
        measurement_noise: standard deviation of a measurement, in face sizes.
        acceleration_noise: standard deviation of the (white-noise) acceleration, in face sizes per s².
    """

    def __init__(self, measurement_noise: float = 0.01, acceleration_noise: float = 2.0) -> None:
        if measurement_noise <= 0 or acceleration_noise <= 0:
            raise ValueError("noise levels must be positive")
        self.measurement_noise, self.acceleration_noise = float(measurement_noise), float(acceleration_noise)
        self.reset()

    def reset(self) -> None:
        self._x: np.ndarray | None = None  # [D, 2]: position, velocity (pixels, pixels/s)
        self._p: np.ndarray | None = None  # [2, 2] in face units²
        self._t: float | None = None

    @property
    def initialized(self) -> bool:
        return self._x is not None

    def _predicted(self, dt: float) -> tuple[np.ndarray, np.ndarray]:
        assert self._x is not None and self._p is not None
        f = np.array([[1.0, dt], [0.0, 1.0]])
        q = self.acceleration_noise ** 2 * np.array([[dt ** 4 / 4, dt ** 3 / 2], [dt ** 3 / 2, dt ** 2]])
        return self._x @ f.T, f @ self._p @ f.T + q

    def predict(self, t: float) -> np.ndarray:
        """The predicted values at time ``t`` (no update)."""
        if self._x is None or self._t is None:
            raise RuntimeError("predict before the first measurement")
        x, _ = self._predicted(max(0.0, float(t) - self._t))
        return x[:, 0].copy()

    def velocity(self) -> np.ndarray:
        """Current velocity estimate (pixels per second)."""
        return np.zeros(0) if self._x is None else self._x[:, 1].copy()

    def __call__(self, values: np.ndarray, t: float, scale: float) -> np.ndarray:
        z = np.asarray(values, dtype=np.float64).reshape(-1)
        scale = max(float(scale), 1e-6)
        if self._x is None or self._t is None or t < self._t:
            self._x = np.stack([z, np.zeros_like(z)], axis=1)
            r = self.measurement_noise ** 2
            self._p = np.array([[r, 0.0], [0.0, 1.0]])  # velocity unknown: 1 face size / s
            self._t = float(t)
            return z.copy()
        x, p = self._predicted(float(t) - self._t)  # p in face units²
        r = self.measurement_noise ** 2
        s = p[0, 0] + r
        k = p[:, 0] / s  # [2]
        innovation = z - x[:, 0]  # pixels
        x = x + innovation[:, None] * k[None, :]
        p = p - np.outer(k, p[0, :])
        self._x, self._p, self._t = x, p, float(t)
        return x[:, 0].copy()


class FaceSmoother:
    """Smooths a face's ``[box (4), keypoints (12)]`` vector as a *position* (the mean of the keypoints) plus a
    *shape* (every coordinate relative to that position), each with its own filter.

    The six keypoints move together; their independent errors average out in the position, and the shape
    (where each keypoint sits on the face, the box around it) changes far more slowly than the face moves,
    so it takes much stronger smoothing without adding lag to the motion.
    """

    def __init__(self, position: Smoother, shape: Smoother) -> None:
        self.position, self.shape = position, shape

    def reset(self) -> None:
        self.position.reset()
        self.shape.reset()

    def __call__(self, values: np.ndarray, t: float, scale: float) -> np.ndarray:
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        anchor = v[4:].reshape(-1, 2).mean(0)
        tiled = np.tile(anchor, len(v) // 2)
        return self.shape(v - tiled, t, scale) + np.tile(self.position(anchor, t, scale), len(v) // 2)


#: Default parameters per smoothing kind: ``(position, shape)`` (face units, seconds; tuned on the jitter
#: benchmark's clips, see ``benchmarks/RESULTS.md``).
DEFAULT_PARAMS: dict[str, tuple[dict[str, float], dict[str, float]]] = {
    "kalman": ({"measurement_noise": 0.02, "acceleration_noise": 4.0}, {"min_cutoff": 0.2, "beta": 2.0}),
    "one-euro": ({"min_cutoff": 1.0, "beta": 30.0}, {"min_cutoff": 0.3, "beta": 3.0}),
}


#: The filter used for the shape, per smoothing kind.
SHAPE_FILTER: dict[str, str] = {"kalman": "one-euro", "one-euro": "one-euro"}


def make_face_smoother(kind: SmoothingName | str | None = DEFAULT_SMOOTHING,
                       position: dict[str, float] | None = None, shape: dict[str, float] | None = None
                       ) -> Smoother:
    """A :class:`FaceSmoother` of ``kind`` with the default parameters updated by ``position`` / ``shape``."""
    name = _name(kind)
    if name == "none":
        return NoSmoothing()
    pos_default, shape_default = DEFAULT_PARAMS[name]
    shape_kind = SHAPE_FILTER.get(name, name)
    return FaceSmoother(make_smoother(name, **{**pos_default, **(position or {})}),
                        make_smoother(shape_kind, **{**shape_default, **(shape or {})}))


def _name(kind: str | None) -> str:
    name = (kind or "none").lower().replace("_", "-")
    if name in ("oneeuro", "1euro", "one-euro"):
        return "one-euro"
    if name in ("kalman", "none"):
        return name
    raise ValueError(f"unknown smoothing {kind!r}; use 'kalman', 'one-euro' or 'none'")


def make_smoother(kind: SmoothingName | str | None = DEFAULT_SMOOTHING, **params: float) -> Smoother:
    """A new smoother: ``"kalman"``, ``"one-euro"`` (or ``"oneeuro"``) or ``"none"``; ``params`` go to its constructor."""
    name = _name(kind)
    if name == "kalman":
        return KalmanFilter(**params)
    if name == "one-euro":
        return OneEuroFilter(**params)
    return NoSmoothing()
