"""Annotation: projects (an annotation session stored as a dataset folder, with autosave and
recovery), export for retraining with a train/validation split, import from COCO and LabelMe,
and checks of training data."""

from blastoseg.annotate.exchange import (
    TrainingExport,
    check_training_data,
    export_for_training,
    import_annotations,
    import_project,
    validate_training_data,
)
from blastoseg.annotate.project import PREV_FILE, AnnotationProject, ProjectRecoveredWarning

__all__ = [
    "PREV_FILE",
    "AnnotationProject",
    "ProjectRecoveredWarning",
    "TrainingExport",
    "check_training_data",
    "export_for_training",
    "import_annotations",
    "import_project",
    "validate_training_data",
]
