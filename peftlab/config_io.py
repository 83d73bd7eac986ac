"""Reading a study's YAML strictly: a key given twice in one mapping is an error, not "the last one wins".

PyYAML (which Snakemake uses for --configfile) silently keeps the last of two equal keys, so an en-de entry
repeated with `target_lang: ru` trains en-ru under the name en-de. YAML 1.2 requires keys to be unique; PyYAML
does not enforce it, hence this loader. Merge keys (`<<: *anchor`) still override as YAML intends: only keys
written out in the same mapping are compared.
"""

from __future__ import annotations

from pathlib import Path

import yaml


class DuplicateKeyError(ValueError):
    """A YAML mapping names one key twice."""


class UniqueKeyLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        first_line: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                repeated = key in first_line
            except TypeError:  # an unhashable key: SafeLoader reports it itself below
                continue
            mark = key_node.start_mark
            if repeated:
                raise DuplicateKeyError(f"{mark.name}, line {mark.line + 1}: duplicate key {key!r} (first given on "
                                        f"line {first_line[key]}); YAML would silently keep only the last one")
            first_line[key] = mark.line + 1
        return super().construct_mapping(node, deep=deep)


def load_yaml(path: str | Path) -> object:
    """A YAML file's content; DuplicateKeyError names the file, line and key of a repeated key."""
    with open(path, encoding="utf-8") as f:
        return yaml.load(f, Loader=UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass


def load_study_config(path: str | Path, schema_path: str | Path) -> dict:
    """A study config read strictly and validated against `schema_path` with the schema's defaults filled in,
    as Snakemake's `validate` does for the workflow, so tools outside Snakemake see the same grid.

    jsonschema, rather than snakemake.utils, because peftlab never imports snakemake.
    """
    import jsonschema

    config = load_yaml(path)
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a study config must be a mapping, found {type(config).__name__}")
    schema = load_yaml(schema_path)
    base = jsonschema.validators.validator_for(schema)

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001 - jsonschema's keyword signature
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(name, sub["default"])
        yield from base.VALIDATORS["properties"](validator, properties, instance, schema)

    validator = jsonschema.validators.extend(base, {"properties": set_defaults})(schema)
    try:
        validator.validate(config)
    except jsonschema.ValidationError as error:
        where = "/".join(map(str, error.absolute_path)) or "(top level)"
        raise ValueError(f"{path}: config error at {where}: {error.message}") from None
    return config
