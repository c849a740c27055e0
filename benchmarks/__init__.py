"""Speed benchmarks: latency vs torchvision, end to end on a phantom, and the CPU's floor.

Entry point: `python -m benchmarks.run_all` (what `make bench` runs); see benchmarks/RESULTS.md.
"""
