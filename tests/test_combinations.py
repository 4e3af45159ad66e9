"""Mechanisms combined with adversarial training: stacks in specs, per-image worst cases, paired gaps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurorobust.errors import SpecError
from neurorobust.evaluation.metrics import decode_points, encode_points, paired_difference
from neurorobust.experiments.sweep import expand_sweep
from neurorobust.report.combinations import combination_markdown, combination_rows
from neurorobust.specs import load_spec, parse_spec, train_key
from neurorobust.store import ResultRow, ResultsStore


def test_per_point_codes_round_trip_to_a_fifteenth() -> None:
    values = [0.0, 1.0, float("nan"), 0.5, 0.2]
    code = encode_points(values)
    assert code == "0f.83"  # 0.5 * 15 = 7.5 rounds to the even 8; 0.2 * 15 = 3
    back = decode_points(code)
    assert back[0] == 0.0 and back[1] == 1.0 and math.isnan(back[2])
    assert abs(back[3] - 0.5) <= 1 / 30 and abs(back[4] - 0.2) <= 1 / 30
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        encode_points([1.5])
    with pytest.raises(ValueError, match="per-point code"):
        decode_points("0fz")


def test_paired_difference_is_the_mean_difference_with_a_normal_interval() -> None:
    a = np.array([1, 1, 0, 1, np.nan, 1.0])
    b = np.array([0, 1, 0, 0, 1, np.nan])
    gap, lo, hi, n = paired_difference(a, b)
    d = np.array([1, 0, 0, 1.0])
    assert n == 4 and gap == pytest.approx(0.5)
    half = 1.959964 * d.std(ddof=1) / 2
    assert (lo, hi) == pytest.approx((0.5 - half, 0.5 + half))
    assert math.isnan(paired_difference([1.0], [0.0])[1])
    with pytest.raises(ValueError, match="equal lengths"):
        paired_difference([1.0, 0.0], [1.0])


def _raw(**extra):
    return {"name": "x", "data": {"name": "digits"}, "model": {"name": "mlp"}, **extra}


def test_a_one_entry_stack_is_the_single_mechanism_with_the_same_train_key() -> None:
    one = parse_spec(_raw(mechanism={"name": "sleep", "params": {"preset": "A"}}))
    stacked = parse_spec(_raw(mechanisms=[{"name": "sleep", "params": {"preset": "A"}}]))
    assert stacked.mechanism == one.mechanism and stacked.mechanisms == []
    assert train_key(stacked) == train_key(one)
    two = parse_spec(_raw(mechanisms=[{"name": "sleep"}, {"name": "sleep", "params": {"preset": "B"}}]))
    assert [m.name for m in two.stack] == ["sleep", "sleep"] and two.mechanism is None
    assert train_key(two) != train_key(one)
    base = two.without_last_mechanism()
    assert base.mechanism is not None and base.mechanism.params == {} and base.mechanisms == []
    assert train_key(base.without_last_mechanism()) == train_key(parse_spec(_raw()))
    with pytest.raises(SpecError, match="not both"):
        parse_spec(_raw(mechanism={"name": "sleep"}, mechanisms=[{"name": "sleep"}, {"name": "sleep"}]))


def test_combo_mnist_pairs_each_combination_with_a_twin_of_the_same_budget() -> None:
    for full in (False, True):
        variants = {v.spec.label: v.spec for v in expand_sweep(load_spec("configs/combo_mnist.toml", full=full))}
        combos = {label: s for label, s in variants.items() if s.twin}
        assert len(combos) >= 5
        for label, spec in combos.items():
            twin = variants[spec.twin]
            assert not twin.twin, f"{label}: its twin is itself a combination"
            assert spec.train.adversarial is not None and spec.train.adversarial == twin.train.adversarial
            assert spec.train.epochs == twin.train.epochs, label
            assert spec.evaluate == twin.evaluate and spec.data == twin.data


def _worst(model: str, points: str, images: str = "abc", eps: float = 0.3, seed: int = 0) -> ResultRow:
    values = decode_points(points)
    return ResultRow(
        "combo_x",
        model,
        "mnist",
        "worst-case",
        "accuracy",
        float(np.nanmean(values)),
        n=len(points),
        eps=eps,
        seed=seed,
        params={"points": points, "images": images},
    )


def test_combination_rows_pair_each_combination_with_its_twin_image_by_image(tmp_path) -> None:
    store = ResultsStore(tmp_path / "r.db")
    twin_points, combo_points = "f0f00f0f0.", "fff0ff0f00"
    for label, twin, points in (("at", "", twin_points), ("mech + at", "at", combo_points)):
        spec = {"name": "combo_x", "label": label, "twin": twin, "evaluate": {"suite": "full"}}
        run = store.start_run("combo_x", "evaluate", spec=spec)
        store.add_results(run, [_worst(label, points)])
        store.add_results(run, [ResultRow("combo_x", label, "mnist", "clean", "accuracy", 0.9, n=10, seed=0)])
        store.finish_run(run)
    rows = combination_rows(store)
    assert len(rows) == 1
    r = rows[0]
    a, b = decode_points(combo_points), decode_points(twin_points)
    gap, lo, hi, n = paired_difference(a, b)
    assert r["combination"] == "mech + at" and r["twin (AT only)"] == "at" and r["eps"] == "0.3"
    assert r["images"] == n == 9 and r["paired gap (pts)"] == round(100 * gap, 1) == pytest.approx(22.2, abs=0.05)
    assert r["95% interval (pts)"] == f"[{100 * lo:.1f}, {100 * hi:.1f}]"
    assert r["finding"] == "no difference" and lo < 0 < hi
    assert "Combined with adversarial training" in combination_markdown(rows)


def test_no_pairing_across_different_images(tmp_path) -> None:
    store = ResultsStore(tmp_path / "r.db")
    for label, twin, images in (("at", "", "abc"), ("mech + at", "at", "other")):
        run = store.start_run("combo_x", "evaluate", spec={"name": "combo_x", "label": label, "twin": twin})
        store.add_results(run, [_worst(label, "ffff", images=images)])
        store.finish_run(run)
    assert combination_rows(store) == []


def test_a_gain_under_a_lighter_suite_is_not_judged(tmp_path) -> None:
    store = ResultsStore(tmp_path / "r.db")
    for label, twin, points in (("at", "", "0000000000"), ("mech + at", "at", "ffffffffff")):
        spec = {"name": "combo_x", "label": label, "twin": twin, "evaluate": {"suite": "quick"}}
        run = store.start_run("combo_x", "evaluate", spec=spec)
        store.add_results(run, [_worst(label, points)])
        store.finish_run(run)
    (row,) = combination_rows(store)
    assert row["paired gap (pts)"] == 100.0 and row["finding"] == "not judged: suite quick, not the full suite"


def test_a_twin_must_name_a_variant_of_the_experiment() -> None:
    raw = _raw(sweep={"variants": [{"label": "at"}, {"label": "mech + at", "twin": "no such"}]})
    with pytest.raises(SpecError, match="names twin 'no such'"):
        expand_sweep(parse_spec(raw))


def test_a_stack_trains_each_stage_once_and_applies_the_mechanisms_in_order(tmp_path) -> None:
    from neurorobust.data import load_dataset
    from neurorobust.experiments.runner import model_label, train_stage

    applied = []

    def tag(model, data=None, *, stage: str = ""):
        """Record the application and return the model unchanged."""
        applied.append(stage)
        return model

    from neurorobust.mechanisms import MECHANISMS

    MECHANISMS.register("test_tag", paper="(test)")(tag)
    try:
        raw = _raw(
            train={"epochs": 1, "batch_size": 256},
            data={"name": "digits"},
            mechanisms=[{"name": "test_tag", "params": {"stage": "a"}}, {"name": "test_tag", "params": {"stage": "b"}}],
        )
        spec = parse_spec(raw)
        assert model_label(spec) == "mlp+test_tag+test_tag"
        data = load_dataset("digits")
        _, _, cached = train_stage(spec, data, runs_dir=tmp_path)
        assert applied == ["a", "b"] and not cached
        # the stack's first stage is cached under its own key: applying only "a" again trains nothing
        first = {"name": "test_tag", "params": {"stage": "a"}}
        single = parse_spec(_raw(train=raw["train"], data=raw["data"], mechanism=first))
        _, _, cached = train_stage(single, data, runs_dir=tmp_path)
        assert cached and applied == ["a", "b"]
        _, _, cached = train_stage(spec, data, runs_dir=tmp_path)
        assert cached and applied == ["a", "b"]
    finally:
        MECHANISMS._entries.pop("test_tag", None)
