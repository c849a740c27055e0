"""SpineSeg: vertebra segmentation in sagittal spine MRI on top of mrcnn."""

__version__ = "0.1.0"
