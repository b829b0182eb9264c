"""The run folder and its files: what a run asked for, what it left, and how later commands read it back.

plan: the RunSpecs a ``run`` expands the user's request into (written as ``plan.json``); rundir: the
folder as ``resume``, ``predict``, ``export`` and the report find it (the plan, ``results.jsonl``, the
lock, paths kept inside the folder); checkpoints: ``best``/``last``/``final.ckpt`` and the manifest that
records them; restore: a finished row brought back as its checkpoint, module and test data. They are
grouped because they change together: a new file in the folder, or a new field of a RunSpec, is written
by one of them and read by another. Kept free of heavy imports (torch, Lightning) in this ``__init__``.
"""
