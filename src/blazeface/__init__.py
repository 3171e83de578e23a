"""BlazeFace face detection in PyTorch: every MediaPipe model, exact, on images of any size.

>>> from blazeface import FaceDetector
>>> faces = FaceDetector("short_range")("photo.jpg")
>>> faces.xyxy, faces.scores, faces.keypoint("nose_tip")
"""

__version__ = "0.1.0"

from .config import AnchorOptions, ModelConfig
from .detector import FaceDetector
from .io import ImageLoadError, load_image
from .registry import create_model, get_config, list_models
from .results import Detections, FaceKeypoint
from .tiling import TileConfig

__all__ = [
    "__version__", "AnchorOptions", "ModelConfig", "FaceDetector", "ImageLoadError", "load_image",
    "create_model", "get_config", "list_models", "Detections", "FaceKeypoint", "TileConfig",
]
