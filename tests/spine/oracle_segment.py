"""Run by test_segment_faults.py in a subprocess (not a test module): spine-segment as users
run it, its own process with its own exit, but with test_segment's oracle in place of the
network, so a run takes a second and its results are exact.

    python oracle_segment.py SCAN_FOLDER -- SPINE_SEGMENT_ARGS...

SCAN_FOLDER holds NAME.nii.gz + NAME_vertebrae.nii.gz pairs (the oracle's truth). Prints
"ready" once everything is imported, so a caller can time a kill into the writing itself.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    scan_folder, separator, *segment_args = argv
    assert separator == "--", "usage: oracle_segment.py SCAN_FOLDER -- ARGS..."
    sys.path.insert(0, str(Path(__file__).parent))
    from test_segment import scan_oracle

    from spine import cli, pipeline, segment

    images = sorted(Path(scan_folder).glob("*.nii.gz"))
    pairs = [
        (image, image.with_name(image.name.replace(".nii.gz", "_vertebrae.nii.gz")))
        for image in images
        if not image.name.endswith("_vertebrae.nii.gz")
    ]
    segmenter = pipeline.Segmenter(scan_oracle(pairs), config=None)
    pipeline.load_segmenter = lambda weights=None, config=None: segmenter
    cli.quiet_tensorflow = lambda verbose=False: None  # the oracle needs no TensorFlow
    import mrcnn.utils  # noqa: F401  (imported by the pipeline; done here, before "ready")

    print("ready", flush=True)
    return segment.main(segment_args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
