"""What a run's β controller did, from its own training log (dualloop.controller_facts)."""

import pytest

from dualloop.controller_facts import STATIC_LIKE, controller_facts, run_facts
from dualloop.experiment import Experiment


def _rows(bases, kl_emas=None, deadband_held=0, clip_acted=0, spread=2.0):
    rows = []
    for step, base in enumerate(bases, start=1):
        row = {"step": step, "loss": 0.6, "beta/base": base, "beta/min": base, "beta/max": spread * base}
        if kl_emas is not None:
            row.update(
                {
                    "kl_ema": kl_emas[step - 1],
                    "controller/deadband_held": deadband_held,
                    "controller/clip_acted": clip_acted,
                }
            )
        rows.append(row)
    return [*rows, {"step": len(bases), "train_runtime": 1.0}]  # the trainer's closing row has no β


def test_facts_of_a_dualloop_log_by_hand():
    # β_base 0.1 → 0.2 → 0.15 → 0.3: range 0.1–0.3, moved (0.3 - 0.1) / 0.1 = 200 %, largest step 0.3 / 0.15 = ×2.
    # KL EMA 0.30, 0.37, 0.40, 0.45 against 0.4 ± 10 % = [0.36, 0.44]: steps 2 and 3 inside.
    facts = controller_facts(
        _rows([0.1, 0.2, 0.15, 0.3], [0.30, 0.37, 0.40, 0.45], deadband_held=2, clip_acted=1),
        kl_target=0.4,
        deadband=0.1,
    )
    assert facts["beta_base_range"] == [0.1, 0.3] and facts["beta_used_range"] == [0.1, 0.6]
    assert facts["beta_relative_range"] == pytest.approx(2.0) and facts["largest_step_change"] == pytest.approx(2.0)
    assert not facts["static_like"]
    assert (facts["steps_in_band"], facts["first_step_in_band"]) == (2, 2)
    assert (facts["kl_ema_last"], facts["deadband_held"], facts["clip_acted"], facts["steps"]) == (0.45, 2, 1, 4)
    assert (
        "dead-band held 2, clip acted 1 steps" in facts["line"] and "in the ±10 % band on 2 of 4 steps" in facts["line"]
    )


def test_a_beta_that_moves_less_than_the_threshold_is_static_like():
    # ε-DPO's β over 16 cpu steps moved 0.100 → 0.095: 5 % < 10 %, and its per-example β̃ = β / (1 ± ε)
    # spans 2 % at ε = 0.01.
    facts = controller_facts(_rows([0.1, 0.098, 0.096, 0.095], spread=1.02))
    assert STATIC_LIKE == 0.10 and facts["static_like"]
    # DualLoop-DPO's fast loop spreads the β the loss uses (here 0.1-0.2) while β_base stays: not static-like
    assert not controller_facts(_rows([0.1, 0.1, 0.1, 0.1]))["static_like"]
    assert facts["beta_relative_range"] == pytest.approx(0.05) and "≈ static" in facts["line"]
    assert "kl_ema_last" not in facts  # not a DualLoop-DPO log
    # step factors 0.1 / 0.098, 0.098 / 0.096, 0.096 / 0.095: the largest is 0.098 / 0.096
    assert facts["largest_step_change"] == pytest.approx(0.098 / 0.096, rel=1e-12)


def test_a_log_without_training_rows_is_refused():
    with pytest.raises(ValueError, match="no training row"):
        controller_facts([{"step": 1, "train_runtime": 1.0}])


def test_facts_of_a_smoke_run_whose_deadband_and_clip_are_forced_to_act(tmp_path):
    # use_ema off: KL_ema is the step's KL. Step 1: KL is exactly 0 (the LoRA adapter starts at zero),
    # e = -1 and |e| is not above the dead-band 1.0, so β_base is held. Later steps: the tiny target makes
    # e huge, and the clip keeps β_base at 0.101.
    constants = {"kl_target": 1e-12, "deadband": 1.0, "use_ema": False, "beta_min": 0.099, "beta_max": 0.101}
    experiment = Experiment.from_parameters(
        profile="smoke",
        output_dir=tmp_path,
        seed=0,
        model={"name_or_path": "smoke"},
        training={"max_steps": 3, "per_device_train_batch_size": 2, "learning_rate": 1e-2, "max_length": 64},
        data={"n_pairs": 6},
        generation={},
        evaluation={"judges": ["gold"]},
    )
    run = experiment.train("dualloop", controller_kwargs=constants)
    facts = run_facts(run)
    logged = [row for row in run.history() if "kl_ema" in row]
    assert logged[0]["kl"] == 0.0 and logged[0]["beta/base"] == 0.1
    assert facts["kl_target"] == 1e-12 and facts["deadband"] == 1.0
    assert facts["deadband_held"] == sum(row["kl"] == 0.0 for row in logged) == 1
    assert facts["clip_acted"] == len(logged) - 1 == 2
    assert facts["beta_base_last"] == 0.101 and facts["beta_base_range"] == [0.1, 0.101]
    assert "dead-band held 1, clip acted 2 steps" in facts["line"]
