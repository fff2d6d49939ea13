"""TAVSE: thermal audio-visual speech enhancement, as a reproducible DVC pipeline."""

__version__ = "0.1.0"

import os as _os

# MediaPipe's C++ logging floods stderr with one-off notices for every FaceMesh it builds;
# keep errors only unless the user asked for more.
_os.environ.setdefault("GLOG_minloglevel", "2")
_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
