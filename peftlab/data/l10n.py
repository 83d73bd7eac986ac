"""(English, X) pairs harvested from localisation data that installed packages ship.

Babel's CLDR locale data (names of territories, languages, currencies, units, months, time zones...),
Django's and Sphinx's gettext catalogues and pycountry's ISO-code catalogues (.mo). Like OPUS's
KDE/GNOME corpora: short, real, software-localisation text. Counts change between package releases, so
the versions harvested go into the corpus manifest.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import version
from pathlib import Path
from typing import Any

from peftlab.data.clean import DataError

PIP_NAMES = {"babel": "Babel", "django": "Django", "sphinx": "Sphinx", "pycountry": "pycountry"}
PACKAGES = tuple(PIP_NAMES)
# Where each package keeps one entry per locale, relative to the package: babel has <code>.dat files,
# the others <code>/LC_MESSAGES/ folders.
_LOCALE_ROOTS = {"babel": "locale-data", "django": "conf/locale", "sphinx": "locale", "pycountry": "locales"}
# pycountry catalogues worth having. Left out: iso3166-2 (subdivisions) and iso639-3 (7,900 language names),
# mostly transliterations whose coverage varies wildly (iso639-3: 9,274 clean pairs for hi, 3,055 for de,
# 182 for fi): they would swamp some corpora and make corpus size and domain differ across language pairs.
_PYCOUNTRY_DOMAINS = ("iso3166-1", "iso3166-3", "iso4217", "iso15924", "iso639-5")


def package_dir(package: str) -> Path | None:
    """The installed package's folder, found without importing it (cheap, for check_corpus_spec)."""
    spec = importlib.util.find_spec(package)
    return Path(spec.origin).parent if spec and spec.origin else None


def _locale_codes(package: str) -> set[str]:
    root = package_dir(package)
    if root is None or not (root / _LOCALE_ROOTS[package]).is_dir():
        return set()
    root = root / _LOCALE_ROOTS[package]
    if package == "babel":
        return {p.stem for p in root.glob("*.dat")}
    return {p.name for p in root.iterdir() if (p / "LC_MESSAGES").is_dir()}


def locale_code(package: str, lang: str) -> str | None:
    """The package's locale for a config language ("de", "pt-BR", "zh"): an exact match, else the
    alphabetically first regional variant ("zh" -> Django's zh_Hans, Sphinx's zh_CN)."""
    lang = lang.replace("-", "_")
    codes = _locale_codes(package)
    if lang in codes:
        return lang
    return min((c for c in codes if c.startswith(lang + "_") or c.startswith(lang + "@")), default=None)


def available_l10n_languages(packages: tuple[str, ...] = PACKAGES) -> set[str]:
    """Languages at least one of the (installed) packages has data for."""
    return {c for p in packages for c in _locale_codes(p)} - {"en", "root"}


def package_versions(packages: list[str]) -> dict[str, str]:
    return {p: version(PIP_NAMES[p]) for p in packages}


def _catalog_pairs(path: Path) -> list[tuple[str, str]]:
    # Compiled .mo catalogues, not .po: msgfmt leaves out fuzzy (unconfirmed) entries, and babel's .po
    # parser prints warnings to stdout for Django's extra plural forms. Plural entries pair the singulars.
    from babel.messages.mofile import read_mo

    with open(path, "rb") as f:
        catalog = read_mo(f)
    pairs = []
    for msg in catalog:
        src = msg.id[0] if isinstance(msg.id, tuple | list) else msg.id
        tgt = msg.string[0] if isinstance(msg.string, tuple | list) else msg.string
        if src and tgt:  # the header has an empty id
            pairs.append((src, tgt))
    return pairs


def _django(code: str) -> list[tuple[str, str]]:
    root = package_dir("django")
    # the core catalogue plus every contrib app's (admin, auth, gis, humanize, ...)
    files = sorted(root.glob(f"conf/locale/{code}/LC_MESSAGES/*.mo"))
    files += sorted(root.glob(f"contrib/*/locale/{code}/LC_MESSAGES/*.mo"))
    return [pair for f in files for pair in _catalog_pairs(f)]


def _sphinx(code: str) -> list[tuple[str, str]]:
    return _catalog_pairs(package_dir("sphinx") / "locale" / code / "LC_MESSAGES" / "sphinx.mo")


def _pycountry(code: str) -> list[tuple[str, str]]:
    folder = package_dir("pycountry") / "locales" / code / "LC_MESSAGES"
    files = [folder / f"{d}.mo" for d in _PYCOUNTRY_DOMAINS if (folder / f"{d}.mo").is_file()]
    return [pair for f in files for pair in _catalog_pairs(f)]


def _babel(code: str) -> list[tuple[str, str]]:
    from babel import Locale

    en, loc = Locale("en"), Locale.parse(code)
    pairs: list[tuple[str, str]] = []

    def add(a: dict, b: dict) -> None:  # pair values that share a key (a CLDR code)
        pairs.extend((a[k], b[k]) for k in a if k in b and isinstance(a[k], str) and isinstance(b[k], str))

    for name in ("territories", "languages", "scripts", "variants", "currencies"):
        add(getattr(en, name), getattr(loc, name))
    for name in ("months", "days", "quarters"):
        for context in ("format", "stand-alone"):
            add(getattr(en, name)[context]["wide"], getattr(loc, name)[context]["wide"])
    add(en.eras["wide"], loc.eras["wide"])
    # only the "long" unit names: "short" is "m" in English but "Meter" in German
    add(*({k: v.get("long") for k, v in x.unit_display_names.items()} for x in (en, loc)))
    for zone in en.meta_zones:  # "Central European Summer Time": generic, standard and daylight names
        if zone in loc.meta_zones:
            add(dict(en.meta_zones[zone].get("long", {})), dict(loc.meta_zones[zone].get("long", {})))
    add(*({k: v.get("city") for k, v in x.time_zones.items()} for x in (en, loc)))
    return pairs


HARVESTERS = {"babel": _babel, "django": _django, "sphinx": _sphinx, "pycountry": _pycountry}


def harvest(lang: str, packages: list[str]) -> list[tuple[str, str]]:
    """Raw (English, lang) pairs from the given packages, in a fixed order (uncleaned)."""
    pairs = []
    for package in packages:
        code = locale_code(package, lang)
        if code is None:
            raise DataError(f"package {package!r} has no localisation data for language {lang!r}")
        pairs += HARVESTERS[package](code)
    return pairs


# --- labelled phrases for classification: the category of a phrase is its label -------------------------

# Each phrase has a concept key that is the same in every language (a CLDR code, a time-zone id, a gettext
# msgid), so a concept's English and German names can be kept on the same side of a split.
CATEGORIES = ("territory", "language", "script", "currency", "unit", "zone", "city", "calendar", "ui")


def _ui_msgids() -> list[str]:
    """English UI messages: every msgid of Django's source catalogues (en .po) and Sphinx's template (.pot)."""
    import contextlib
    import io

    from babel.messages.pofile import read_po

    django, sphinx = package_dir("django"), package_dir("sphinx")
    files = sorted(django.glob("conf/locale/en/LC_MESSAGES/*.po")) if django else []
    files += sorted(django.glob("contrib/*/locale/en/LC_MESSAGES/*.po")) if django else []
    files += [sphinx / "locale" / "sphinx.pot"] if sphinx else []
    ids = []
    for path in files:
        with open(path, "rb") as f, contextlib.redirect_stdout(io.StringIO()):  # babel prints plural warnings
            catalog = read_po(f)
        ids += [m.id[0] if isinstance(m.id, tuple | list) else m.id for m in catalog if m.id]
    return ids


def _ui(lang: str) -> dict[str, str]:
    if lang == "en":
        return {i: i for i in _ui_msgids()}
    out: dict[str, str] = {}
    for package, harvest_one in (("django", _django), ("sphinx", _sphinx)):
        code = package_dir(package) and locale_code(package, lang)
        if code:
            for src, tgt in harvest_one(code):
                out.setdefault(src, tgt)
    return out


def _babel_category(loc: Any, category: str) -> dict[str, str]:  # loc: a babel.Locale
    if category in ("territory", "language", "script", "currency"):
        return dict(getattr(loc, {"territory": "territories", "currency": "currencies"}.get(category, category + "s")))
    if category == "unit":  # only the long names: "meters", not "m"
        return {k: v["long"] for k, v in loc.unit_display_names.items() if v.get("long")}
    if category == "zone":  # "Central European Summer Time": generic, standard and daylight names
        names = {z: dict(v.get("long", {})) for z, v in loc.meta_zones.items()}
        return {f"{z}/{kind}": name for z, kinds in names.items() for kind, name in kinds.items()}
    if category == "city":
        from babel.core import get_global

        cities = {z: v["city"] for z, v in loc.time_zones.items() if v.get("city")}
        if loc.language == "en":  # CLDR spells most English cities only in the zone id ("America/St_Johns")
            cities = {z: cities.get(z, z.rsplit("/", 1)[-1].replace("_", " ")) for z in get_global("zone_territories")}
        return cities
    if category == "calendar":  # month and day names (stand-alone: nominative case), quarters, eras
        out = {}
        for name in ("months", "days", "quarters"):
            out.update({f"{name}:{k}": v for k, v in getattr(loc, name)["stand-alone"]["wide"].items()})
        out.update({f"eras:{k}": v for k, v in loc.eras["wide"].items()})
        return out
    raise DataError(f"unknown l10n category {category!r}: choose from {list(CATEGORIES)}")


def labelled_phrases(lang: str, categories: list[str]) -> list[tuple[str, str, str]]:
    """(concept key, category, text in lang) for each category, in a fixed order (uncleaned).

    Babel's CLDR data gives the named categories; "ui" is Django's and Sphinx's interface messages.
    A concept a language does not name is absent (no fallback to English text).
    """
    from babel import Locale

    loc = Locale.parse(lang.replace("-", "_"))
    out = []
    for category in categories:
        names = _ui(lang) if category == "ui" else _babel_category(loc, category)
        out += [(f"{category}:{key}", category, text) for key, text in names.items() if isinstance(text, str)]
    return out


def category_packages(categories: list[str]) -> list[str]:
    """The packages the categories are read from (their versions go into the manifest)."""
    return ["babel", *(["django", "sphinx"] if "ui" in categories else [])]
