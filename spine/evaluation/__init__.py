"""Evaluation of vertebra segmentation, in the order data flows:

    metrics  Dice per body, slice mask AP, PNG slice scores (numbers only; no files, no model)
    run      each volume through the app's code and the baseline -> CaseResult; summarize
    png      each PNG slice through the app's code and the baseline -> FolderEvaluation
    report   metrics.json, CSV tables, plots and REPORT.md from those results

Each module imports only the ones above it; spine.evaluate (the spine-evaluate CLI) sits on
top, and spine.folders decides what a data folder holds.
"""
