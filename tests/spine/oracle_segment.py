"""Run by test_segment_faults.py in a subprocess (not a test module): spine-segment as users
run it, its own process with its own exit, but with test_segment's Oracle in place of the
network, so a run takes a second and its results are exact.

    python oracle_segment.py SCAN_FOLDER -- SPINE_SEGMENT_ARGS...

SCAN_FOLDER holds NAME.nii.gz + NAME_vertebrae.nii.gz pairs (the Oracle's truth). Prints
"ready" once everything is imported, so a caller can time a kill into the writing itself.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    scan_folder, separator, *segment_args = argv
    assert separator == "--", "usage: oracle_segment.py SCAN_FOLDER -- ARGS..."
    spec = importlib.util.spec_from_file_location(
        "test_segment", Path(__file__).with_name("test_segment.py")
    )
    test_segment = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(test_segment)

    from spine import cli, pipeline, segment

    images = sorted(Path(scan_folder).glob("*.nii.gz"))
    pairs = [
        (image, image.with_name(image.name.replace(".nii.gz", "_vertebrae.nii.gz")))
        for image in images
        if not image.name.endswith("_vertebrae.nii.gz")
    ]
    segmenter = pipeline.Segmenter(test_segment.Oracle(pairs), config=None)
    pipeline.load_segmenter = lambda weights=None, config=None: segmenter
    cli.quiet_tensorflow = lambda verbose=False: None  # the Oracle needs no TensorFlow
    import mrcnn.utils  # noqa: F401  (imported by the pipeline; done here, before "ready")

    print("ready", flush=True)
    return segment.main(segment_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
