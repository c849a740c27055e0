"""Writes notebooks/train.ipynb (run once after editing the cells below; the test executes it)."""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    new_markdown_cell(
        "# Train SpineSeg on your own annotated scans\n\n"
        "Runs on a rented GPU or Colab, as in the paper. It installs the project, takes your "
        "data (a folder of `NAME.nii.gz` + `NAME_vertebrae.nii.gz` label maps, or spine-prepare's "
        "`train/` + `val/` VIA layout), trains with the paper's schedule (network heads, then all "
        "layers), evaluates on the validation subjects and offers the weights for download.\n\n"
        "Edit the parameters cell, then *Run all*."
    ),
    new_code_cell(
        "# Parameters (environment variables override them, which is how the test runs this).\n"
        "import os\n"
        "REPO = os.environ.get('SPINESEG_REPO', 'https://github.com/YOUR-ORG/spineseg')\n"
        "DATA_DIR = os.environ.get('SPINESEG_DATA', '/content/drive/MyDrive/spine_data')\n"
        "CONFIG = os.environ.get('SPINESEG_TRAIN_CONFIG', 'configs/paper.toml')\n"
        "WEIGHTS = os.environ.get('SPINESEG_INIT', 'coco')  # coco/imagenet/last/none/PATH\n"
        "OVERRIDES = os.environ.get('SPINESEG_OVERRIDES', '').split()  # e.g. IMAGE_MAX_DIM=512\n"
        "WORK = os.environ.get('SPINESEG_WORK', '/content/spineseg_run')\n"
        "INSTALL = os.environ.get('SPINESEG_INSTALL', '1') == '1'\n"
        "UPLOAD = os.environ.get('SPINESEG_UPLOAD', '0') == '1'  # Colab: upload a .zip of data\n"
    ),
    new_markdown_cell("## Install (skipped when the project is already installed)"),
    new_code_cell(
        "import subprocess, sys\n"
        "if INSTALL:\n"
        "    if not os.path.isdir('spineseg'):\n"
        "        subprocess.run(['git', 'clone', '--depth', '1', REPO, 'spineseg'], check=True)\n"
        "    os.chdir('spineseg')\n"
        "    subprocess.run([sys.executable, '-m', 'pip', 'install', '-q', '-r',\n"
        "                    'requirements.txt', '-e', '.'], check=True)\n"
        "import spine, mrcnn\n"
        "print('spine', spine.__version__, 'mrcnn', mrcnn.__version__)"
    ),
    new_markdown_cell("## Your data"),
    new_code_cell(
        "import zipfile\n"
        "from pathlib import Path\n"
        "if UPLOAD:\n"
        "    from google.colab import files  # only on Colab\n"
        "    for name in files.upload():\n"
        "        zipfile.ZipFile(name).extractall(DATA_DIR)\n"
        "data = Path(DATA_DIR)\n"
        "assert data.is_dir(), f'no data folder at {data}'\n"
        "work = Path(WORK); work.mkdir(parents=True, exist_ok=True)\n"
        "if not (data / 'train').is_dir():\n"
        "    from spine import prepare\n"
        "    assert prepare.main(['--src', str(data), '--out', str(work / 'prepared')]) == 0\n"
        "    data = work / 'prepared'\n"
        "print(sorted(p.name for p in data.iterdir()))"
    ),
    new_markdown_cell("## Train: heads first, then all layers"),
    new_code_cell(
        "from spine import train\n"
        "args = ['--data', str(data), '--config', CONFIG, '--weights', WEIGHTS,\n"
        "        '--logs', str(work / 'logs')]\n"
        "for pair in OVERRIDES:\n"
        "    args += ['--set', pair]\n"
        "model = train.train(train.build_parser().parse_args(args))\n"
        "final = work / 'spineseg_trained.weights.h5'\n"
        "model.save_weights(str(final))\n"
        "print('saved', final)"
    ),
    new_markdown_cell("## Evaluate on the validation subjects"),
    new_code_cell(
        "from mrcnn import metrics\n"
        "from mrcnn.model import MaskRCNN\n"
        "from mrcnn.utils import extract_bboxes\n"
        "config = model.config.replace(IMAGES_PER_GPU=1)\n"
        "infer = MaskRCNN(mode='inference', config=config, model_dir=str(work / 'logs'))\n"
        "infer.load_weights(str(final), by_name=True)\n"
        "_, val_set = train.load_datasets(data)\n"
        "aps = []\n"
        "for image_id in val_set.image_ids:\n"
        "    image = val_set.load_image(image_id)\n"
        "    gt_masks, gt_ids = val_set.load_mask(image_id)\n"
        "    r = infer.detect([image])[0]\n"
        "    ap, *_ = metrics.compute_ap(extract_bboxes(gt_masks), gt_ids, gt_masks, r['rois'],\n"
        "                                r['class_ids'], r['scores'], r['masks'])\n"
        "    aps.append(ap)\n"
        "print(f'mask mAP@0.5 on {len(aps)} validation slices: {sum(aps) / len(aps):.3f}')"
    ),
    new_markdown_cell(
        "## Download the weights\n\nPut the file in the app's `weights/` folder (or pass it to "
        "`spine-segment --weights`)."
    ),
    new_code_cell(
        "try:\n"
        "    from google.colab import files\n"
        "    files.download(str(final))\n"
        "except ImportError:\n"
        "    print('weights at', final)"
    ),
]


def main() -> None:
    notebook = new_notebook(cells=CELLS)
    notebook.metadata["kernelspec"] = {
        "name": "python3", "display_name": "Python 3", "language": "python"
    }
    out = Path(__file__).resolve().parents[1] / "notebooks" / "train.ipynb"
    nbformat.write(notebook, out)


if __name__ == "__main__":
    main()
