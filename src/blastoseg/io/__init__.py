"""Input/output: images and frame folders, the dataset format, LabelMe import, atomic writes."""

from blastoseg.io.atomic import atomic_write_bytes, atomic_write_text, backup_existing
from blastoseg.io.dataset import (
    ANNOTATIONS_FILE,
    DEFAULT_CATEGORIES,
    Dataset,
    Sample,
    read_dataset,
    write_dataset,
)
from blastoseg.io.images import (
    SUPPORTED_EXTENSIONS,
    ImageStack,
    read_frame_folder,
    read_image,
    read_images,
)
from blastoseg.io.labelme import import_labelme

__all__ = [
    "ANNOTATIONS_FILE",
    "DEFAULT_CATEGORIES",
    "SUPPORTED_EXTENSIONS",
    "Dataset",
    "ImageStack",
    "Sample",
    "atomic_write_bytes",
    "atomic_write_text",
    "backup_existing",
    "import_labelme",
    "read_dataset",
    "read_frame_folder",
    "read_image",
    "read_images",
    "write_dataset",
]
