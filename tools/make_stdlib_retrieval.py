"""Freeze the standard-library retrieval pairs used by the MiniLM testbed.

    python tools/make_stdlib_retrieval.py            # writes data/stdlib_retrieval.jsonl

Each pair: the query is the first paragraph of a public function's, method's or class's
docstring (whitespace collapsed); the document is its qualified name and signature, e.g.
``json.dumps(obj, *, skipkeys=False, ...)``. Pairs whose query or document repeats are dropped
(both ways), so every query has exactly one right document. Docstrings differ between Python
versions: the file is committed and its SHA-256 recorded in ``data/MANIFEST.json`` under
``fixtures``; this script is how it was made (on the Python named there).
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import platform
import re
import warnings
from collections import Counter
from pathlib import Path

MODULES = (
    "abc argparse ast base64 bisect calendar cmd codecs collections colorsys configparser "
    "contextlib copy csv dataclasses datetime decimal difflib dis email.message email.utils "
    "enum filecmp fileinput fnmatch fractions ftplib functools getopt gettext glob graphlib "
    "gzip hashlib heapq hmac html html.parser http.client http.cookies imaplib inspect io "
    "ipaddress itertools json keyword linecache locale logging lzma mailbox mimetypes "
    "netrc numbers operator optparse os os.path pathlib pickle pickletools pkgutil platform "
    "plistlib poplib pprint pydoc queue quopri random re reprlib sched secrets selectors "
    "shelve shlex shutil smtplib socket socketserver statistics string struct subprocess "
    "symtable tabnanny tarfile tempfile textwrap threading timeit tokenize trace traceback "
    "turtle types typing unittest.case unittest.mock urllib.parse urllib.request uuid "
    "warnings wave weakref xml.dom.minidom xml.etree.ElementTree zipfile zipimport"
).split()
MIN_WORDS = 4
MAX_CHARS = 600


def _first_paragraph(doc: str) -> str:
    para = re.split(r"\n\s*\n", inspect.cleandoc(doc).strip(), maxsplit=1)[0]
    return " ".join(para.split())


def _signature(obj: object) -> str | None:
    """``str(inspect.signature(obj))`` with memory addresses removed (they change per run)."""
    try:
        sig = str(inspect.signature(obj))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return re.sub(r" at 0x[0-9a-f]+", "", sig)


def _candidates(modname: str):
    mod = importlib.import_module(modname)
    for name, obj in sorted(vars(mod).items()):
        if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj):
            yield f"{modname}.{name}", obj
            for mname, meth in sorted(vars(obj).items()):
                if not mname.startswith("_") and inspect.isfunction(meth):
                    yield f"{modname}.{name}.{mname}", meth
        elif inspect.isfunction(obj):
            yield f"{modname}.{name}", obj


def collect() -> list[dict]:
    """All pairs of :data:`MODULES`, deduplicated, in module order."""
    raw = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for modname in MODULES:
            for qual, obj in _candidates(modname):
                doc, sig = inspect.getdoc(obj), _signature(obj)
                if not doc or sig is None:
                    continue
                query = _first_paragraph(doc)
                if len(query.split()) < MIN_WORDS or len(query) > MAX_CHARS:
                    continue
                raw.append({"module": modname, "query": query, "document": f"{qual}{sig}"})
    nq = Counter(r["query"] for r in raw)
    nd = Counter(r["document"] for r in raw)
    pairs = [r for r in raw if nq[r["query"]] == 1 and nd[r["document"]] == 1]
    return [{"id": i, **r} for i, r in enumerate(pairs)]


def main() -> None:
    data = Path(__file__).resolve().parents[1] / "data"
    pairs = collect()
    blob = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in pairs).encode("utf-8")
    (data / "stdlib_retrieval.jsonl").write_bytes(blob)
    mpath = data / "MANIFEST.json"
    manifest = json.loads(mpath.read_text())
    manifest.setdefault("fixtures", {})["stdlib-retrieval"] = {
        "file": "stdlib_retrieval.jsonl",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "pairs": len(pairs),
        "modules": len({p["module"] for p in pairs}),
        "source": f"docstrings of Python {platform.python_version()}'s standard library",
        "made_with": "python tools/make_stdlib_retrieval.py",
    }
    mpath.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"{len(pairs)} pairs from {len({p['module'] for p in pairs})} modules")


if __name__ == "__main__":
    main()
