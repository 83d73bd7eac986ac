"""Where a base model comes from: what the workflow needs of a base-model spec at DAG time, kept apart from
models.py so that planning a grid imports no torch or transformers (languages.py: how its inputs are tagged)."""

from __future__ import annotations

from pathlib import Path


class ModelError(ValueError):
    """A base-model spec that cannot be honoured (unknown source, missing local path)."""


def resolve_model_path(spec: dict, built_dir: Path | None = None) -> str:
    """Where from_pretrained should load a base model: a hub id, a local folder, or the built one."""
    source = spec["source"]
    if source == "hub":
        return spec["id"]
    if source == "local":
        path = Path(spec["path"])
        if not (path / "config.json").exists():
            raise ModelError(f"base model path {path} has no config.json")
        return str(path)
    if source == "package":
        import importlib.resources

        try:
            return str(importlib.resources.files(spec["package"]) / spec.get("subdir", "model"))
        except ModuleNotFoundError as exc:
            raise ModelError(f"base model package {spec['package']!r} is not installed: pip install it") from exc
    if source == "build":
        if built_dir is None:
            raise ModelError("a built base model needs the folder it was built into")
        return str(built_dir)
    raise ModelError(f"unknown base model source {source!r}; expected hub, local, package or build")

