"""cliplit.benchmarks: ``cliplit bench``, every backend against the PyTorch baseline in one run; results in
``benchmarks/results/``.
"""
