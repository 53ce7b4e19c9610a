"""Typed registry metadata: one record per family, defaults stated once, unknown fields refused."""

from __future__ import annotations

import importlib.metadata as metadata
import sys
import types

import attrs
import pytest

from ades_core.registries import ATTACKS, CUES, DATASETS, DEFENSES, LR_SCHEDULES, SCHEDULER_OBJECTIVES, SCHEDULERS
from ades_core.registry import Registry, RegistryError, load_entry_points
from ades_core.registry_info import (
    DEFAULT_SCHEDULER,
    DEFAULT_SCHEDULER_LR,
    AttackInfo,
    DatasetInfo,
    DefenseInfo,
    LrScheduleInfo,
    NoInfo,
    ObjectiveInfo,
    SchedulerInfo,
)


def test_each_family_has_its_record():
    assert DEFENSES.info_type is DefenseInfo and ATTACKS.info_type is AttackInfo
    assert SCHEDULERS.info_type is SchedulerInfo and SCHEDULER_OBJECTIVES.info_type is ObjectiveInfo
    assert DATASETS.info_type is DatasetInfo and LR_SCHEDULES.info_type is LrScheduleInfo
    assert CUES.info_type is NoInfo


def test_defaults_are_stated_once_in_the_record():
    assert DefenseInfo() == DefenseInfo(
        scheduler=DEFAULT_SCHEDULER, uses_cues=True, learnable=False, takes_loss=False, loss=None,
        awp=False, attack_bn=True, norms=None, norm_note="", budget_note="", check=None,
    )  # fmt: skip
    assert AttackInfo() == AttackInfo(norms=("linf",), training=True)
    assert SchedulerInfo().learnable is False
    assert ObjectiveInfo().lr == DEFAULT_SCHEDULER_LR == 1e-3
    assert DatasetInfo().test_split is None and LrScheduleInfo().per_iteration is False


def test_register_builds_the_record_from_its_keywords():
    registry = Registry("defense", info=DefenseInfo)
    registry.register("x", object, description="d", uses_cues=False, norms=["linf"])
    entry = registry.entry("x")
    assert entry.info == DefenseInfo(uses_cues=False, norms=("linf",))
    assert entry.description == "d"
    registry.register("y", object, info=DefenseInfo(awp=True))
    assert registry.entry("y").info.awp


def test_an_unknown_field_is_refused_in_one_line_naming_the_accepted_ones():
    registry = Registry("scheduler", info=SchedulerInfo)
    with pytest.raises(RegistryError, match=r"^scheduler 'x': unknown metadata field\(s\) learnabel; accepted: learnable$"):
        registry.register("x", object, learnabel=True)
    assert "x" not in registry
    with pytest.raises(RegistryError, match=r"^cue 'c': unknown metadata field\(s\) lr; accepted: \(none\)$"):
        Registry("cue").register("c", object, lr=1.0)


def test_a_value_of_the_wrong_type_is_refused():
    registry = Registry("defense", info=DefenseInfo)
    with pytest.raises(RegistryError, match="defense 'x': bad metadata .*uses_cues.*; accepted: scheduler, "):
        registry.register("x", object, uses_cues="no")
    with pytest.raises(RegistryError, match="not both"):
        registry.register("x", object, info=DefenseInfo(), awp=True)
    with pytest.raises(RegistryError, match="info must be a DefenseInfo, got AttackInfo"):
        registry.register("x", object, info=AttackInfo())


def test_records_are_frozen():
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        DefenseInfo().awp = True  # type: ignore[misc]


def test_a_plugin_with_an_unknown_metadata_key_is_a_named_failure(monkeypatch):
    def factory(options, *, num_cues, budget, allocation):
        return None

    factory.ades_meta = {"learnable": True, "learnabel": True}
    module = types.ModuleType("ades_fake_info")
    module.factory = factory
    monkeypatch.setitem(sys.modules, "ades_fake_info", module)
    registry = Registry("scheduler", "ades.schedulers", info=SchedulerInfo)
    ep = metadata.EntryPoint("typo", "ades_fake_info:factory", "ades.schedulers")
    (failure,) = load_entry_points(registry, [ep])
    assert "unknown metadata field(s) learnabel; accepted: learnable" in failure.error
    assert "typo" not in registry


def test_the_built_ins_declare_what_the_rules_read():
    assert DEFENSES.entry("ades").info.learnable and SCHEDULERS.entry("mlp").info.learnable
    assert DEFENSES.entry("trades").info.loss == "trades" and not DEFENSES.entry("trades").info.takes_loss
    assert DEFENSES.entry("fast-at").info.norms == ("linf",)
    assert not ATTACKS.entry("autoattack").info.training and ATTACKS.entry("pgd").info.norms == ("linf", "l2")
    assert LR_SCHEDULES.entry("cosine").info.per_iteration and not LR_SCHEDULES.entry("multistep").info.per_iteration
    assert DATASETS.entry("cifar10").info.test_split is not None
