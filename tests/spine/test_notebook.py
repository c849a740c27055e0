"""notebooks/train.ipynb runs headless end to end on a tiny config (nbclient).

This checks the notebook's plumbing (prepare -> train -> evaluate -> save), not accuracy.
"""

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

from spine.phantom import make_phantom  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

TINY_CONFIG = """
name = "nbtest"
num_classes = 2
backbone = "resnet18"
backbone_width = 0.25
top_down_pyramid_size = 32
fpn_classif_fc_layers_size = 64
mask_head_conv_size = 32
images_per_gpu = 2
image_min_dim = 64
image_max_dim = 64
rpn_anchor_scales = [8, 16, 32, 64, 128]
rpn_train_anchors_per_image = 32
pre_nms_limit = 200
post_nms_rois_training = 64
post_nms_rois_inference = 32
train_rois_per_image = 16
max_gt_instances = 12
mini_mask_shape = [14, 14]
detection_max_instances = 8
detection_min_confidence = 0.0
steps_per_epoch = 2
validation_steps = 1

[schedule]
heads_epochs = 1
all_epochs = 1
"""


@pytest.mark.slow
def test_training_notebook_runs_headless_on_a_tiny_config(tmp_path, monkeypatch):
    data = tmp_path / "data"
    data.mkdir()
    for seed in range(4):
        make_phantom(seed, size=64, name=f"phantom_{seed:02d}").save(data)
    config = tmp_path / "tiny.toml"
    config.write_text(TINY_CONFIG)
    work = tmp_path / "work"
    for key, value in {
        "SPINESEG_INSTALL": "0", "SPINESEG_DATA": str(data), "SPINESEG_CONFIG": str(config),
        "SPINESEG_INIT": "none", "SPINESEG_WORK": str(work), "SPINESEG_OVERRIDES": "",
    }.items():
        monkeypatch.setenv(key, value)

    notebook = nbformat.read(ROOT / "notebooks" / "train.ipynb", as_version=4)
    client = nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    )
    client.execute()

    assert (work / "spineseg_trained.weights.h5").stat().st_size > 0
    assert (work / "prepared" / "split.json").is_file()
    outputs = "".join(
        out.get("text", "") for cell in notebook.cells for out in cell.get("outputs", [])
    )
    assert "mask mAP@0.5 on" in outputs
