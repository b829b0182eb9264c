"""Workloads. Each module registers one with ``@register_workload``; the registry finds them."""
