"""Metric names as Lightning spells them: what a module logged as ``NAME`` may be held as ``NAME_epoch``.

A module that logs ``self.log("val_loss", loss, on_step=True)`` in its validation step (Lightning's
own example autoencoder does) gets two forks of the metric: ``trainer.validate``/``test`` return
only ``val_loss_epoch`` (the epoch mean), and during fit ``trainer.callback_metrics`` holds both
``val_loss_epoch`` and ``val_loss``, the latter being the *last batch's* value. Whatever reads a
monitored metric (the val and test columns, ``best.ckpt``, early stopping, the curve, SWA's record)
asks :func:`logged_name` for the key, so that it gets the epoch mean under either spelling.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

EPOCH_SUFFIX = "_epoch"


def logged_name(metrics: Mapping[str, Any], name: str) -> str | None:
    """The key of ``metrics`` that holds the epoch value of ``name``: ``NAME_epoch`` when the module logged
    it on_step too, else ``NAME``; None when neither was logged."""
    for key in (name + EPOCH_SUFFIX, name):
        if key in metrics:
            return key
    return None


def logged_value(metrics: Mapping[str, Any], name: str) -> Any:
    """``metrics[logged_name(metrics, name)]``, or None when ``name`` was not logged."""
    key = logged_name(metrics, name)
    return None if key is None else metrics[key]
