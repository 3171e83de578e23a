"""Head pose (yaw, pitch, roll, rotation, translation) from BlazeFace's six keypoints with OpenCV's ``solvePnP``.

The canonical 3D face model
---------------------------
:data:`CANONICAL_FACE_MODEL` holds the six keypoints of an average adult head in millimetres, in the same
axes as OpenCV's camera (x to the image's right, y down, z away from the camera) for a face looking straight
into the camera. The origin is the midpoint between the eyes.

======================  ==========================  ===========================================================
keypoint                (x, y, z) mm                source
======================  ==========================  ===========================================================
0 RIGHT_EYE             (-33.4,   0.0,   0.0)       MediaPipe canonical face mesh, mean of the ring of
1 LEFT_EYE              ( 33.4,   0.0,   0.0)       vertices 22-30 around the right eye (mirrored for the left)
2 NOSE_TIP              (  0.0,  37.2, -36.8)       canonical mesh vertex 1 (MediaPipe's ``noseTip``)
3 MOUTH_CENTER          (  0.0,  68.6, -15.1)       canonical mesh, midpoint of inner-lip vertices 13 and 14
4 RIGHT_EAR_TRAGION     (-72.0,  26.0,  85.0)       anthropometry (the mesh has no ears): bitragion breadth
5 LEFT_EAR_TRAGION      ( 72.0,  26.0,  85.0)       ~144 mm, tragion ~26 mm below and ~85 mm behind the eyes
======================  ==========================  ===========================================================

The mesh is ``mediapipe/modules/face_geometry/data/canonical_face_model.obj`` (Apache-2.0, centimetres,
y up, z towards the viewer); it was converted to millimetres and to OpenCV's axes (y and z negated) and
shifted so that the eye midpoint is the origin. The model is left/right symmetric, so a mirrored image
gives the same pitch and the opposite yaw and roll.

Angles (degrees), for a face at the image centre:

- **yaw** > 0: the face turns towards the image's right (the subject turns to their left);
- **pitch** > 0: the face looks up;
- **roll** > 0: the head tilts clockwise on screen (towards the subject's left shoulder).

They decompose the rotation ``R`` (model → camera, ``x_cam = R @ x_model + t``) as
``R = Rz(roll) @ Ry(-yaw) @ Rx(-pitch)`` about the camera's axes. ``translation`` is ``t`` in millimetres
(the eye midpoint in camera coordinates), so ``translation[2]`` is the distance to the camera for a head of
average size. A face away from the image centre that faces the camera's axis direction reads as turned,
as it is relative to the line of sight; BlazeFace's keypoints are coarse (the ears especially), so expect a
few degrees of bias on real faces, more on profiles where the far ear is hidden.

Camera intrinsics: by default a pinhole with focal length ``max(W, H)`` pixels (about 53° across the long
side, typical of webcams and phones) and the principal point at the image centre; pass ``camera_matrix``
(and ``dist_coeffs``) for a calibrated camera. Needs ``opencv-python-headless`` (``pip install blazeface[video]``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .results import Detections

CANONICAL_FACE_MODEL = np.array([
    [-33.4, 0.0, 0.0],    # RIGHT_EYE (subject's right, image left)
    [33.4, 0.0, 0.0],     # LEFT_EYE
    [0.0, 37.2, -36.8],   # NOSE_TIP
    [0.0, 68.6, -15.1],   # MOUTH_CENTER
    [-72.0, 26.0, 85.0],  # RIGHT_EAR_TRAGION
    [72.0, 26.0, 85.0],   # LEFT_EAR_TRAGION
], dtype=np.float64)
"""float64[6, 3]: the six BlazeFace keypoints of an average head, millimetres, OpenCV camera axes."""


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise ImportError("head pose needs OpenCV: pip install opencv-python-headless (or blazeface[video])") from exc
    return cv2


def default_camera_matrix(width: int, height: int, focal: float | None = None) -> np.ndarray:
    """A pinhole ``K`` with focal length ``focal`` (default ``max(W, H)``) and the principal point at the centre."""
    f = float(max(width, height) if focal is None else focal)
    return np.array([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]], dtype=np.float64)


def _rx(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def _rz(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The rotation matrix (model → camera) for angles in degrees, in this module's conventions."""
    y, p, r = (math.radians(v) for v in (yaw, pitch, roll))
    return _rz(r) @ _ry(-y) @ _rx(-p)


def angles_from_rotation(rotation: np.ndarray) -> tuple[float, float, float]:
    """``(yaw, pitch, roll)`` in degrees from a rotation matrix (inverse of :func:`rotation_from_angles`)."""
    r = np.asarray(rotation, dtype=np.float64)
    b = -math.asin(max(-1.0, min(1.0, r[2, 0])))
    a = math.atan2(r[1, 0], r[0, 0])
    c = math.atan2(r[2, 1], r[2, 2])
    return -math.degrees(b), -math.degrees(c), math.degrees(a)


def quaternion_from_rotation(rotation: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(w, x, y, z)`` (``w ≥ 0``) of a rotation matrix."""
    m = np.asarray(rotation, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [(m[2, 1] - m[1, 2]) / s, 0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 2] - m[2, 0]) / s, (m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[1, 0] - m[0, 1]) / s, (m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s]
    qa = np.array(q, dtype=np.float64)
    qa /= np.linalg.norm(qa)
    return -qa if qa[0] < 0 else qa


@dataclass(frozen=True)
class HeadPose:
    """One face's head pose. Angles in degrees (see :mod:`blazeface.pose` for the conventions)."""

    yaw: float
    pitch: float
    roll: float
    rotation: np.ndarray      # float64[3, 3], model → camera
    translation: np.ndarray   # float64[3], millimetres, camera coordinates of the eye midpoint
    reprojection_error: float  # RMS over the six keypoints, pixels

    @property
    def quaternion(self) -> np.ndarray:
        """``(w, x, y, z)`` of :attr:`rotation`."""
        return quaternion_from_rotation(self.rotation)

    @property
    def rvec(self) -> np.ndarray:
        """The Rodrigues vector OpenCV uses."""
        return _cv2().Rodrigues(self.rotation)[0].reshape(3)

    def to_dict(self, decimals: int = 2) -> dict[str, Any]:
        """``{"yaw", "pitch", "roll", "rotation" (3×3 rows), "quaternion" (w, x, y, z), "translation" (mm)}``."""
        return {
            "yaw": round(self.yaw, decimals), "pitch": round(self.pitch, decimals), "roll": round(self.roll, decimals),
            "rotation": [[round(float(v), 5) for v in row] for row in self.rotation],
            "quaternion": [round(float(v), 5) for v in self.quaternion],
            "translation": [round(float(v), 1) for v in self.translation],
        }


def project(rotation: np.ndarray, translation: np.ndarray, camera_matrix: np.ndarray,
            points: np.ndarray = CANONICAL_FACE_MODEL) -> np.ndarray:
    """Project model points ``[N, 3]`` (mm) with a pose to pixels ``[N, 2]`` (no lens distortion)."""
    cam = points @ np.asarray(rotation).T + np.asarray(translation).reshape(1, 3)
    uvw = cam @ np.asarray(camera_matrix).T
    return uvw[:, :2] / uvw[:, 2:3]


def estimate_pose(keypoints: np.ndarray, image_size: tuple[int, int], camera_matrix: np.ndarray | None = None,
                  dist_coeffs: np.ndarray | None = None, model: np.ndarray = CANONICAL_FACE_MODEL) -> HeadPose:
    """Head pose of one face from its keypoints ``[6, 2]`` (pixels, :class:`~blazeface.FaceKeypoint` order).

    Args:
        keypoints: the six keypoints in pixels.
        image_size: ``(width, height)``, for the default intrinsics.
        camera_matrix: ``3×3`` intrinsics; ``None`` uses :func:`default_camera_matrix`.
        dist_coeffs: lens distortion (OpenCV's order); ``None`` for none.
        model: the 3D points ``[6, 3]`` in millimetres (default :data:`CANONICAL_FACE_MODEL`).
    """
    cv2 = _cv2()
    pts = np.asarray(keypoints, dtype=np.float64).reshape(-1, 2)
    obj = np.asarray(model, dtype=np.float64).reshape(-1, 3)
    if len(pts) != len(obj) or len(pts) < 4:
        raise ValueError(f"need one 2D keypoint per model point (≥ 4), got {len(pts)} and {len(obj)}")
    if not np.isfinite(pts).all():
        raise ValueError("keypoints must be finite")
    k = default_camera_matrix(*image_size) if camera_matrix is None else np.asarray(camera_matrix, dtype=np.float64)
    dist = np.zeros(5) if dist_coeffs is None else np.asarray(dist_coeffs, dtype=np.float64)
    # A global solver first (SQPnP has no initialisation to get wrong), then Levenberg-Marquardt refinement.
    ok, rvec, tvec = cv2.solvePnP(obj, pts, k, dist, flags=cv2.SOLVEPNP_SQPNP)
    if not ok:  # pragma: no cover - SQPnP succeeds for six non-degenerate points
        ok, rvec, tvec = cv2.solvePnP(obj, pts, k, dist, flags=cv2.SOLVEPNP_EPNP)
    rvec, tvec = cv2.solvePnPRefineLM(obj, pts, k, dist, rvec, tvec)
    rot = cv2.Rodrigues(rvec)[0]
    t = tvec.reshape(3)
    proj = cv2.projectPoints(obj, rvec, tvec, k, dist)[0].reshape(-1, 2)
    err = float(np.sqrt(np.mean(np.sum((proj - pts) ** 2, axis=1))))
    yaw, pitch, roll = angles_from_rotation(rot)
    return HeadPose(yaw, pitch, roll, rot, t, err)


def estimate_poses(detections: Detections, camera_matrix: np.ndarray | None = None,
                   dist_coeffs: np.ndarray | None = None) -> list[HeadPose]:
    """:func:`estimate_pose` for every face of a :class:`~blazeface.Detections`."""
    return [estimate_pose(kp, detections.image_size, camera_matrix, dist_coeffs) for kp in detections.keypoints]


def add_pose(detections: Detections, camera_matrix: np.ndarray | None = None,
             dist_coeffs: np.ndarray | None = None) -> list[HeadPose]:
    """Estimate every face's pose and store it as ``detections.extras["pose"]`` (so ``to_dict()`` emits it)."""
    poses = estimate_poses(detections, camera_matrix, dist_coeffs)
    detections.extras["pose"] = [p.to_dict() for p in poses]
    return poses
