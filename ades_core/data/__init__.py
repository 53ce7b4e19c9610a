"""Data: splits held as uint8 tensors, the dataset registry's factories, device-side batching.

Importing this package registers the ``cifar10``, ``cifar100`` and
``imagefolder`` datasets in :data:`ades_core.registries.DATASETS`.
"""

from ades_core.data.augment import crop_flip_with, random_crop_flip
from ades_core.data.datasets import (
    DataError,
    DataRequest,
    DatasetSplits,
    ImageTensors,
    load_datasets,
    load_test_split,
)
from ades_core.data.imagefolder import IMAGE_EXTENSIONS  # (importing it registers ``imagefolder``)
from ades_core.data.loader import DeviceLoader

__all__ = [
    "DataError",
    "DataRequest",
    "DatasetSplits",
    "DeviceLoader",
    "IMAGE_EXTENSIONS",
    "ImageTensors",
    "crop_flip_with",
    "load_datasets",
    "load_test_split",
    "random_crop_flip",
]
