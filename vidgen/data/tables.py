"""CSV and parquet manifests: one row per video, in the column names corpora ship with.

WebVid's CSVs name a clip by `videoid` (and a `contentUrl` it was downloaded from) and caption it
in `name`; other tables use `path` and `caption` or `text`. The first column present of each list
is used:

- the video: `path` (a file, relative to the table's folder), `videoid` (the file
  `{videoid}.mp4` in the table's folder), `contentUrl` (a local path or file:// URL; an http URL
  must be downloaded first, e.g. with video2dataset, and trained on as shards);
- the caption: `caption`, `name`, `text` (an empty or missing cell: an unlabeled clip).

Every other column whose cell holds a plain value (a number, a string, a bool) is kept in the
record as it is (`frames`, `fps`, `duration`, ...), as a JSON-lines manifest keeps its keys.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from ..errors import VidgenError

PATH_COLUMNS = ("path", "videoid", "contentUrl")
CAPTION_COLUMNS = ("caption", "name", "text")
TABLE_SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


def is_table(manifest: str | os.PathLike) -> bool:
    return Path(manifest).suffix.lower() in TABLE_SUFFIXES


def _load(manifest: Path):
    import pandas as pd

    kind = TABLE_SUFFIXES[manifest.suffix.lower()]
    try:
        if kind == "csv":
            return pd.read_csv(manifest, dtype={"videoid": str, "path": str, "contentUrl": str}, keep_default_na=False,
                               na_values=[""])
        return pd.read_parquet(manifest)
    except Exception as exc:  # pandas' and pyarrow's parser errors have no common base
        raise VidgenError(f"manifest {manifest} cannot be read as {kind} ({str(exc).splitlines()[0][:200]})") from None


def _plain(value):
    """A cell as a JSON value, or None where it is empty (NaN, None, '') or not plain (a list, an array)."""
    if hasattr(value, "item"):  # numpy scalars; an array (a parquet list column) is not a plain value
        if np.ndim(value) != 0:
            return None
        value = value.item()
    elif isinstance(value, (list, tuple, dict)):
        return None
    if value is None or (isinstance(value, float) and math.isnan(value)) or value == "":
        return None
    return value if isinstance(value, (int, float, str, bool)) else None


def _video_path(column: str, value, folder: Path, where: str) -> str:
    text = str(value).strip()
    if column == "videoid":
        return os.path.normpath(folder / f"{text}.mp4")
    if column == "contentUrl":
        url = urlparse(text)
        if url.scheme in ("http", "https", "s3", "gs"):
            raise VidgenError(f"{where}: contentUrl {text} is remote; vidgen reads local files: download the corpus "
                              f"first (video2dataset writes WebDataset shards, which train as data.shards=...)")
        if url.scheme == "file":
            text = unquote(url.path)
    return os.path.normpath(folder / text)


def read_table(manifest: str | os.PathLike) -> list[dict]:
    """Records of a CSV or parquet manifest: `path` resolved against the table's folder, `caption`
    where the row has one, and the row's other plain columns."""
    manifest = Path(manifest)
    table = _load(manifest)
    columns = [str(c) for c in table.columns]
    path_column = next((c for c in PATH_COLUMNS if c in columns), None)
    if path_column is None:
        raise VidgenError(f"manifest {manifest} has no video column: name one of {', '.join(PATH_COLUMNS)} "
                          f"(its columns: {', '.join(columns[:8])})")
    caption_column = next((c for c in CAPTION_COLUMNS if c in columns), None)
    folder = manifest.resolve().parent
    records = []
    first_row = 2 if TABLE_SUFFIXES[manifest.suffix.lower()] == "csv" else 1  # a CSV's line 1 is its header
    for number, row in enumerate(table.to_dict(orient="records"), start=first_row):
        where = f"{manifest}:{number}"
        if _plain(row[path_column]) is None:
            raise VidgenError(f"{where}: the {path_column} cell is empty: every row names a video")
        record = {key: value for key, value in ((str(k), _plain(v)) for k, v in row.items())
                  if value is not None and key not in (path_column, caption_column, "path", "caption")}
        record["path"] = _video_path(path_column, row[path_column], folder, where)
        caption = _plain(row[caption_column]) if caption_column else None
        if caption is not None and " ".join(str(caption).split()):
            record["caption"] = " ".join(str(caption).split())
        records.append(record)
    if not records:
        raise VidgenError(f"manifest {manifest} lists no videos")
    return records
