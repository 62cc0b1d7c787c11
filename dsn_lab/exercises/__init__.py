"""Checks for the notebooks' exercises: each compares a student's answer with what the package computes.

An exercise in a notebook is a markdown cell (the task), a code cell tagged ``exercise`` whose skeleton sets
the answer variable to ``None`` (``# YOUR CODE HERE``), and a check cell calling one ``check_*`` below. A
check returns a :class:`CheckResult` that Jupyter shows as one line: ``✓`` (within the stated tolerance),
``✗`` (what is off, and a hint where a common slip is recognised) or "not answered yet" for ``None``.

By default a check never raises, so a notebook with unanswered exercises still runs top to bottom (CI runs
them that way). ``strict=True``, or the environment variable ``DSN_LAB_EXERCISES_STRICT=1``, turns anything
but ``✓`` into an :class:`ExerciseError`: the solutions (``notebooks/solutions/``) are run that way in CI, so
a wrong solution fails.

Helpers give an exercise its inputs the way training builds them (:func:`load_run_and_batch`,
:func:`supcon_inputs`). This package sits at the top of dsn_lab, beside ``course``: nothing imports it.

The checks of notebook NN live in ``nbNN_*.py`` and share ``_check`` (the result type, strict mode and the
answer-parsing helpers); they import nothing else of this package. Notebooks import the names below:
``from dsn_lab import exercises as ex``.
"""

from __future__ import annotations

from dsn_lab.exercises._check import STRICT_ENV, CheckResult, ExerciseError
from dsn_lab.exercises.nb00_setup import (
    check_images_per_step,
    check_quirk_in_force,
    check_quirks_differ,
    images_per_step,
)
from dsn_lab.exercises.nb01_data import (
    check_name_overlaps,
    check_photos_per_class,
    check_sketch_positives,
    name_overlaps,
    sketch_positive_fraction,
)
from dsn_lab.exercises.nb02_losses import (
    changed_cells,
    check_memory_gradient,
    check_memory_loss,
    check_replaced_slots,
    check_supcon_by_hand,
    replaced_cells,
)
from dsn_lab.exercises.nb03_training import (
    check_ce_term,
    check_logged_total,
    check_lr_schedule,
    check_temperature_sweep,
    load_run_and_batch,
    supcon_inputs,
)
from dsn_lab.exercises.nb04_evaluation import (
    check_hardest_classes,
    check_itq_loss,
    check_query_ap,
    check_query_precision,
)
from dsn_lab.exercises.nb05_ablations import (
    check_ablation_stats,
    check_best_term,
    check_changed_fields,
    seed_stats,
)
from dsn_lab.exercises.nb06_domain_gap import (
    check_centroid_distance,
    check_dispersion,
    check_mmd2,
    check_nn_agreement,
)
from dsn_lab.exercises.nb07_explorer import check_first_hit_rank, check_top1_accuracy, check_wrong_top1

__all__ = [
    "STRICT_ENV",
    "CheckResult",
    "ExerciseError",
    "check_quirk_in_force",
    "images_per_step",
    "check_images_per_step",
    "check_quirks_differ",
    "check_photos_per_class",
    "name_overlaps",
    "check_name_overlaps",
    "sketch_positive_fraction",
    "check_sketch_positives",
    "check_supcon_by_hand",
    "check_memory_loss",
    "changed_cells",
    "replaced_cells",
    "check_replaced_slots",
    "check_memory_gradient",
    "load_run_and_batch",
    "check_logged_total",
    "check_ce_term",
    "supcon_inputs",
    "check_temperature_sweep",
    "check_lr_schedule",
    "check_query_ap",
    "check_query_precision",
    "check_hardest_classes",
    "check_itq_loss",
    "seed_stats",
    "check_ablation_stats",
    "check_best_term",
    "check_changed_fields",
    "check_centroid_distance",
    "check_dispersion",
    "check_mmd2",
    "check_nn_agreement",
    "check_wrong_top1",
    "check_first_hit_rank",
    "check_top1_accuracy",
]
