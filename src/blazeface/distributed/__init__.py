"""Scale-out with Ray Data (extra ``[ray]``): detect, blur or crop faces in millions of images.

>>> from blazeface.distributed import detect_images, read_results
>>> summary = detect_images("s3://bucket/photos/", "s3://bucket/faces/", blur="s3://bucket/blurred/")
>>> table = read_results("s3://bucket/faces/")   # pyarrow.Table: path, width, height, faces, error, ...

Importing this package does not import Ray; :func:`detect_images` does.
"""

from .anonymize import anonymize
from .output import SCHEMA, read_results
from .pipeline import DEFAULT_ROWS_PER_FILE, JobSummary, detect_images

__all__ = ["DEFAULT_ROWS_PER_FILE", "JobSummary", "SCHEMA", "anonymize", "detect_images", "read_results"]
