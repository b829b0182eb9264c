"""Measuring: what a run's numbers are, how they are taken without perturbing training, and how they are judged.

measure: the block timer, throughput and peak memory (the protocol in DESIGN.md); curves: the
validation curve; metrics: metric names as Lightning spells them; flops: FLOPs and MFU; contention:
the CPU time other processes took during fit; distributed: the ranks' numbers combined into one row;
budget: a step budget still ends with a validation (the same work for every row); profiling and
histograms: Lightning's profilers and weight histograms, with what they cost; stats: intervals for
ratios over repeats; estimate: the wall time foretold from a reference machine's measured pace. They
are grouped because a change to the protocol touches them together and nothing else. Kept free of
heavy imports in this ``__init__``.
"""
