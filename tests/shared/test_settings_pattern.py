"""One settings pattern for every service: a service's settings class extends the core `Settings`, and a
component takes its class's view of whatever settings it is handed with `<Class>.of(settings)`."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dreammask.shared.settings import Settings, all_settings_classes

REPO = Path(__file__).resolve().parents[2]


def test_every_settings_class_extends_the_core_one_and_adds_only_its_own_fields():
    classes = all_settings_classes()
    assert classes[0] is Settings and len(classes) == 5
    for cls in classes[1:]:
        assert issubclass(cls, Settings), cls
        own = set(cls.model_fields) - set(Settings.model_fields)
        assert own, f"{cls.__name__} adds no field"


def test_no_other_base_settings_class_anywhere():
    pattern = re.compile(r"class \w+\(BaseSettings\)")
    found = [str(p.relative_to(REPO)) for top in ("shared", "services", "trainer") for p in (REPO / top).rglob("*.py")
             if pattern.search(p.read_text(encoding="utf-8"))]
    assert found == ["shared/settings.py"]


def test_of_gives_the_class_view_of_any_settings(monkeypatch, tmp_path):
    from dreammask.services.annotation.settings import AnnotationSettings
    from dreammask.services.synthesis.settings import SynthesisSettings

    monkeypatch.setenv("DREAMMASK_GLIGEN_BATCH_SIZE", "3")
    core = Settings(models_dir=tmp_path, device="cpu")
    view = SynthesisSettings.of(core)
    assert view.models_dir == tmp_path and view.device == "cpu"  # the core values handed over
    assert view.gligen_batch_size == 3  # the service's own from the environment
    assert SynthesisSettings.of(view) is view  # already one: itself
    # Handed another service's settings, its core values carry over too.
    assert AnnotationSettings.of(view).models_dir == tmp_path
    assert Settings.of() is Settings.of() and SynthesisSettings.of() is SynthesisSettings.of()


def test_the_core_checks_hold_for_every_service_class():
    from dreammask.services.association.settings import AssociationSettings

    with pytest.raises(ValueError, match="MIN_SYNTHESIS_STEPS"):
        AssociationSettings(min_synthesis_steps=50, max_synthesis_steps=10)
    with pytest.raises(ValueError, match="CNA_MIN_SUPPORT"):
        AssociationSettings(cna_rounds=2, cna_min_support=3)
