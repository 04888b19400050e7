"""Read datasets into labelled documents, checking them before anything is traced.

:func:`load_documents` accepts local ``.jsonl``, ``.json``, ``.csv``, ``.parquet`` and ``.txt``
files, folders of them, and hub dataset ids (through the optional ``datasets`` package). It
returns a :class:`DocumentSet`: one row per document, ``doc_id`` = the row index in the data.
A ``text`` column (name configurable) is tokenized later; an ``input_ids`` column is traced as
given. ``domain`` and ``language`` become document labels; other columns go into metadata.
Every problem a user can cause raises a one-line :class:`~moelens.errors.DataError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from moelens.errors import (ColumnNotFoundError, DataEncodingError, DataError, DataNotFoundError,
                            EmptyDatasetError, VocabularyError, option)

__all__ = ["Document", "DocumentSet", "load_documents", "SUFFIXES"]

SUFFIXES = (".jsonl", ".json", ".csv", ".parquet", ".txt")
LABEL_COLUMNS = ("domain", "language", "source")


@dataclass(frozen=True)
class Document:
    doc_id: int
    text: str | None
    input_ids: tuple[int, ...] | None
    domain: str | None
    language: str | None
    source: str | None
    meta: dict[str, Any]


class DocumentSet:
    """Documents held as an Arrow table (cheap for millions of rows)."""

    def __init__(self, table: Any, *, name: str, text_column: str | None, ids_column: str | None) -> None:
        self.table, self.name = table, name
        self.text_column, self.ids_column = text_column, ids_column
        self._meta_columns = [c for c in table.column_names
                              if c not in (text_column, ids_column, *LABEL_COLUMNS)]

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def has_text(self) -> bool:
        return self.ids_column is None

    def _column(self, name: str | None) -> list[Any] | None:
        if name is None or name not in self.table.column_names:
            return None
        return self.table.column(name).to_pylist()

    def iter_documents(self, start: int = 0, stop: int | None = None) -> Iterator[Document]:
        stop = len(self) if stop is None else min(stop, len(self))
        chunk = 4096
        for lo in range(start, stop, chunk):
            part = DocumentSet(self.table.slice(lo, min(chunk, stop - lo)), name=self.name,
                               text_column=self.text_column, ids_column=self.ids_column)
            texts = part._column(self.text_column) if self.ids_column is None else None
            ids = part._column(self.ids_column)
            labels = {c: part._column(c) for c in LABEL_COLUMNS}
            metas = {c: part._column(c) for c in self._meta_columns}
            for i in range(part.table.num_rows):
                yield Document(
                    doc_id=lo + i,
                    text=None if texts is None else texts[i],
                    input_ids=None if ids is None or ids[i] is None else tuple(int(x) for x in ids[i]),
                    domain=_label(labels["domain"], i), language=_label(labels["language"], i),
                    source=_label(labels["source"], i),
                    meta={c: v[i] for c, v in metas.items() if v[i] is not None})

    def check_vocabulary(self, vocab_size: int) -> None:
        """Raise :class:`VocabularyError` if an ``input_ids`` value is outside ``[0, vocab_size)``."""
        if self.ids_column is None:
            return
        import pyarrow.compute as pc

        flat = pc.list_flatten(self.table.column(self.ids_column))
        if len(flat) == 0:
            return
        lo, hi = pc.min(flat).as_py(), pc.max(flat).as_py()
        if lo < 0 or hi >= vocab_size:
            bad = hi if hi >= vocab_size else lo
            raise VocabularyError(
                f"input_ids contain {bad}, outside the model's vocabulary [0, {vocab_size});"
                " the ids were made with another tokenizer - re-tokenize with this model's tokenizer.")


def _label(values: list[Any] | None, i: int) -> str | None:
    if values is None or values[i] is None:
        return None
    return str(values[i])


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise DataEncodingError(
            f"{path} is not UTF-8 (invalid byte at offset {error.start});"
            " convert it first, e.g. `iconv -f latin1 -t utf-8`.") from None


def _split_text(text: str, mode: str) -> list[str]:
    if mode == "file":
        return [text]
    if mode == "line":
        return text.splitlines()
    return [p for p in text.replace("\r\n", "\n").split("\n\n")]


def _read_file(path: Path, txt_mode: str) -> Any:
    import pyarrow as pa

    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        if suffix == ".csv":
            import pyarrow.csv as pcsv

            _read_text(path)  # UTF-8 check with a clear message
            return pcsv.read_csv(path)
        if suffix == ".jsonl":
            rows = []
            for n, line in enumerate(_read_text(path).splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as error:
                        raise DataError(f"{path}:{n} is not valid JSON ({error.msg}); fix or remove that line.") from None
            return pa.Table.from_pylist(rows)
        if suffix == ".json":
            try:
                obj = json.loads(_read_text(path))
            except json.JSONDecodeError as error:
                raise DataError(f"{path} is not valid JSON ({error.msg} at line {error.lineno}).") from None
            if isinstance(obj, dict) and isinstance(obj.get("data"), list):
                obj = obj["data"]
            if isinstance(obj, dict) and all(isinstance(v, list) for v in obj.values()):
                return pa.table(obj)
            if isinstance(obj, list):
                return pa.Table.from_pylist([o if isinstance(o, dict) else {"text": o} for o in obj])
            raise DataError(f"{path} holds a JSON {type(obj).__name__}; expected a list of records.")
        if suffix == ".txt":
            parts = _split_text(_read_text(path), txt_mode)
            return pa.table({"text": parts, "source": [str(path)] * len(parts)})
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DataError(f"cannot read {path}: {str(error).splitlines()[0]}") from None
    raise DataError(f"{path} has an unsupported suffix; use one of {', '.join(SUFFIXES)}.")


def _concat(tables: list[Any]) -> Any:
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
        raise DataError(f"files in the folder have incompatible columns: {str(error).splitlines()[0]}") from None


def _did_you_mean(source: str) -> str:
    """`` (did you mean X?)`` over the data files and folders next to where ``source`` points, or ``""``."""
    import difflib

    path = Path(source).expanduser()
    folder = path.parent if str(path.parent) not in ("", ".") else Path(".")
    try:
        names = [p.name for p in folder.iterdir() if p.is_dir() or p.suffix.lower() in SUFFIXES]
    except OSError:
        return ""
    close = difflib.get_close_matches(path.name, names, n=1, cutoff=0.6)
    return f" (did you mean {folder / close[0] if folder != Path('.') else close[0]}?)" if close else ""


def _looks_local(source: str, path: Path) -> bool:
    """A name that can only be a path: a data-file suffix, or a path-like start."""
    return (path.suffix.lower() in SUFFIXES or source.startswith((".", "/", "~", "\\"))
            or any(part in ("..", ".") for part in path.parts) or source.count("/") > 1)


def _load_hub(name: str, split: str) -> Any:
    try:
        import datasets
    except ImportError:
        raise DataNotFoundError(f"no file or folder named {name}{_did_you_mean(name)}; if it is a hub dataset id,"
                                " reading it needs the optional `datasets` package: pip install 'moelens[datasets]'.") from None
    from moelens.hub import cached_repos, did_you_mean, hub_offline

    if name not in cached_repos("datasets") and hub_offline():
        raise DataNotFoundError(f"no file or folder named {name}{_did_you_mean(name) or did_you_mean(name, cached_repos('datasets'))},"
                                " and the Hugging Face hub cannot be reached from here (offline) to read it as a"
                                " dataset id.")
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as error:  # noqa: BLE001 - datasets raises many kinds
        raise DataNotFoundError(f"cannot load dataset {name!r} (split {split!r}): "
                                f"{str(error).splitlines()[0][:200]}") from None
    return ds.data.table if hasattr(ds.data, "table") else ds.with_format("arrow")[:]


def load_documents(source: str, *, text_column: str = "text", split: str = "train",
                   txt_mode: str = "file") -> DocumentSet:
    """Read ``source`` into a :class:`DocumentSet` and check it can be traced."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise EmptyDatasetError(f"{path} contains no {'/'.join(SUFFIXES)} files.")
        table = _concat([_read_file(f, txt_mode) for f in files])
        name = path.name
    elif path.exists():
        table = _read_file(path, txt_mode)
        name = path.stem
    elif _looks_local(source, path):
        raise DataNotFoundError(f"no file or folder at {source}{_did_you_mean(source)}; give a data file, a folder"
                                " of them or a hub dataset id.")
    else:
        table = _load_hub(source, split)
        name = source.rsplit("/", 1)[-1]

    if table.num_rows == 0:
        raise EmptyDatasetError(f"{source} holds no documents.")
    columns = table.column_names
    ids_column = "input_ids" if "input_ids" in columns else None
    if ids_column is None and text_column not in columns:
        raise ColumnNotFoundError(
            f"the data has no column {text_column!r} (columns: {', '.join(columns) or 'none'});"
            f" choose one with {option('text_column')}, or provide an input_ids column.")
    if ids_column is None:
        import pyarrow as pa

        col = table.column(text_column)
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type)):
            raise DataError(f"column {text_column!r} holds {col.type}, not text; choose a text column with"
                            f" {option('text_column')}.")
    return DocumentSet(table, name=name, text_column=None if ids_column else text_column, ids_column=ids_column)
