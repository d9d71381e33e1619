"""Built-in studies: TOML files in core/studies/, read like any study file a user writes."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources

from core.spec import SpecError, Study

_FOLDER = resources.files("core") / "studies"
_SUFFIX = ".toml"
PROTOCOL = "protocol"  # the study's own protocol: listed first, the console's default


@dataclass(frozen=True)
class PresetSize:
    """What a preset costs: its runs and the training tokens they see together."""

    name: str
    description: str
    runs: int
    tokens: int


def preset_names() -> list[str]:
    """The built-in studies, by name (the file name without .toml): the protocol first."""
    names = sorted(
        f.name.removesuffix(_SUFFIX) for f in _FOLDER.iterdir() if f.name.endswith(_SUFFIX)
    )
    return sorted(names, key=lambda name: name != PROTOCOL)


def preset_text(name: str) -> str:
    """The TOML text of a built-in study; SpecError for an unknown name."""
    if name not in preset_names():
        raise SpecError(f"unknown preset {name!r}: choose one of {', '.join(preset_names())}")
    return (_FOLDER / f"{name}{_SUFFIX}").read_text(encoding="utf-8")


def load_preset(name: str) -> Study:
    """A built-in study; SpecError for an unknown name."""
    return Study.from_toml(preset_text(name))


def study_size(study: Study) -> tuple[int, int]:
    """(runs, training tokens of all runs together) of a study."""
    specs = study.specs()
    return len(specs), sum(spec.tokens for spec in specs)


def preset_sizes() -> list[PresetSize]:
    """Every built-in study with its description, number of runs and training tokens."""
    out = []
    for name in preset_names():
        study = load_preset(name)
        runs, tokens = study_size(study)
        out.append(PresetSize(name, study.description, runs, tokens))
    return out
