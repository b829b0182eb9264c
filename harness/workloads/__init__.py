"""Workloads' data and the user's own workloads: what the plugin interface in ``harness.workload`` builds on.

data: the digit datasets (MNIST, scikit-learn's digits, synthetic) and the datamodule that serves them
from tensors on the device; imported: ``--workload pkg.mod:Class`` and ``--datamodule``, the user's
classes imported and checked by path, and ``--init-args`` parsed. The Workload base class, its registry
and the adapter for imported classes stay in :mod:`harness.workload`, the public path plugins import;
the built-in workload modules are the top-level ``models`` package. (The entry-point group
``harness.workloads``, through which other packages register workloads, is a name, not this package.)
Kept free of heavy imports in this ``__init__``.
"""
