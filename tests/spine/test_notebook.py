"""notebooks/train.ipynb runs headless end to end on a tiny config (nbclient).

This checks the notebook's plumbing (prepare -> train -> evaluate -> save), not accuracy.
"""

import json
from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

from spine.phantom import make_phantom  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]



@pytest.mark.slow
@pytest.mark.parametrize("neighbours", [False, True], ids=["grey", "2.5D"])
def test_training_notebook_runs_headless_on_a_tiny_config(
    tmp_path, monkeypatch, tiny_config, neighbours
):
    data = tmp_path / "data"
    data.mkdir()
    for seed in range(4):
        make_phantom(seed, size=64, name=f"phantom_{seed:02d}").save(data)
    config = tiny_config
    if neighbours:  # as configs/demo.toml: the notebook must prepare and score 2.5D images
        config = tmp_path / "tiny_25d.toml"
        text = tiny_config.read_text()
        config.write_text(text.replace("[schedule]", "neighbour_channels = true\n\n[schedule]"))
    work = tmp_path / "work"
    for key, value in {
        "SPINESEG_INSTALL": "0", "SPINESEG_DATA": str(data), "SPINESEG_TRAIN_CONFIG": str(config),
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
    summary = json.loads((work / "prepared" / "split.json").read_text())
    assert summary["input"]["neighbour_channels"] is neighbours
