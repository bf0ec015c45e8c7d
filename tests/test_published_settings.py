"""The settings behind the published numbers (results/paper/settings.csv): the paper budget of every
protocol with a published table matches them exactly; other settings are named, never passed."""

from __future__ import annotations

import dataclasses
import json

import pytest

from fsad_bench.budgets import BUDGETS
from fsad_bench.config import resolve_method_config
from fsad_bench.protocol import load_protocol
from fsad_bench.published_settings import published_settings, published_settings_differ

#: protocols whose numbers the paper prints in a table (q1: Table 2, q2: 3, q3: 4, q4: 5)
TABLE_PROTOCOLS = ("q1", "q2", "q3", "q4")


def _resolved(protocol: str, budget: str, method: str) -> tuple[int, dict]:
    """(image size, resolved hyper-parameters) of ``method`` in that budget, as the grid resolves
    them (the method's budget table over its defaults, the protocol's changes), without loading any
    weights."""
    r = resolve_method_config(BUDGETS[budget], method, protocol_set=load_protocol(protocol).set_at(budget))
    return r.img_size, dataclasses.asdict(r.config)


@pytest.mark.parametrize("protocol", TABLE_PROTOCOLS)
def test_paper_budget_is_the_published_settings(protocol):
    for method in load_protocol(protocol).methods:
        img_size, params = _resolved(protocol, "paper", method)
        assert published_settings_differ(method, params, img_size) == [], (protocol, method)


def test_paper_flos_uses_the_authors_logit():
    # the published FLOS numbers come from the authors' focal loss on the absolute top-K score
    _, params = _resolved("q1", "paper", "flos")
    assert params["logit"] == "authors"
    signed = published_settings_differ("flos", {**params, "logit": "signed"}, 448)
    assert len(signed) == 1 and signed[0].startswith("logit = signed (published: authors")


def test_other_settings_are_named():
    img_size, params = _resolved("q1", "quick", "devnet")
    diff = published_settings_differ("devnet", params, img_size)
    named = {line.split(" ", 1)[0] for line in diff}
    assert {"img_size", "weights", "backbone", "epochs", "lr", "bn_recalibration"} <= named
    assert "topk_ratio" not in named and "margin" not in named   # the quick budget keeps them
    # KDAD's localisation is part of its published settings (Table 4)
    _, kdad = _resolved("q1", "paper", "kdad")
    assert published_settings_differ("kdad", {**kdad, "localization": "gradient"}, 128) == [
        "localization = gradient (published: guided, official KDAD config (localization_method: gbp))"]


def test_rows_read_back_from_the_store_compare_the_same():
    # the store keeps params as JSON: tuples come back as lists, numbers as floats
    img_size, params = _resolved("q1", "paper", "dsvdd")
    stored = json.loads(json.dumps(params))
    assert stored["lr_milestones"] == [50]
    assert published_settings_differ("dsvdd", stored, img_size) == []
    assert published_settings_differ("dsvdd", {**stored, "lr_milestones": [50, 100]}, img_size) != []
    assert published_settings_differ("dsvdd", {**stored, "img_size": 32}) == []  # size inside params


def test_missing_settings_and_unknown_methods_never_pass():
    _, params = _resolved("q1", "paper", "kdad")
    del params["localization"]  # a row made before the setting existed
    assert published_settings_differ("kdad", params, 128) == [
        "localization not recorded (published: guided, official KDAD config (localization_method: gbp))"]
    assert published_settings_differ("mine", {}, 64) == [
        "mine: the paper has no published numbers for this method"]


def test_every_published_method_is_declared():
    from fsad_bench.detectors.registry import load_detector
    from fsad_bench.report.compare import load_published

    methods = {m for p in TABLE_PROTOCOLS for m in load_protocol(p).methods}
    assert methods <= set(published_settings())
    # and nothing else: every declared method is compared with a column of a published table
    columns = {c for p in TABLE_PROTOCOLS for t in load_protocol(p).paper_tables
               for c in load_published(t).column}
    assert {m for m in published_settings() if load_detector(m).paper_column in columns} \
        == set(published_settings()) == methods | {"dra"}
    for method, rows in published_settings().items():
        assert all(r.source for r in rows), method
        assert len({r.setting for r in rows}) == len(rows), method  # no setting declared twice
