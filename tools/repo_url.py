"""Point every Colab badge, Colab set-up cell and the README at another repository URL.

A teacher who hands the course out from a fork or a private copy runs

    python tools/repo_url.py https://github.com/OWNER/NAME      (or: make repo-url URL=...)

The README's ``<!-- REPO_URL -->`` value is the one place the URL is defined (the notebook tests
keep the notebooks in sync with it). This replaces, in ``README.md``, ``docs/*.md`` and
``notebooks/*.ipynb``, every occurrence of the current URL with the new one and every Colab link
``https://colab.research.google.com/github/OLD_OWNER/OLD_NAME/`` with the new owner and name. The
files are edited as text (notebook JSON keeps its layout). Colab opens notebooks from GitHub, so
the URL must be ``https://github.com/OWNER/NAME`` (a trailing ``.git`` or ``/`` is dropped).
Exit status: 0 done (or nothing to change), 2 a bad URL or no README marker.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!-- REPO_URL -->\s*(\S+?)\s*<!-- /REPO_URL -->")
GITHUB = re.compile(r"^https://github\.com/(?P<owner>[A-Za-z0-9][A-Za-z0-9-]{0,38})/"
                    r"(?P<name>[A-Za-z0-9._-]{1,100})$")
COLAB = "https://colab.research.google.com/github/{owner}/{name}/"


def normalise(url: str) -> re.Match:
    """The match of ``url`` (trailing ``/`` and ``.git`` removed) against a GitHub repository
    URL; raises ``ValueError`` naming the accepted form."""
    url = url.strip().rstrip("/")
    url = url[:-4] if url.endswith(".git") else url
    m = GITHUB.match(url)
    if not m:
        raise ValueError(f"URL must be https://github.com/OWNER/NAME (Colab badges open "
                         f"notebooks from GitHub), got {url!r}")
    return m


def current_url(root: Path = ROOT) -> str:
    m = MARKER.search((root / "README.md").read_text())
    if not m:
        raise ValueError("README.md has no <!-- REPO_URL --> ... <!-- /REPO_URL --> marker")
    return m.group(1).rstrip("/")


def files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md")),
            *sorted((root / "notebooks").glob("*.ipynb"))]


def repoint(new: str, root: Path = ROOT) -> dict[Path, int]:
    """Replace the current repository URL by ``new`` everywhere; returns {file: replacements}."""
    m_new = normalise(new)
    m_old = normalise(current_url(root))
    pairs = [(COLAB.format(**m_old.groupdict()), COLAB.format(**m_new.groupdict())),
             (m_old.group(0), m_new.group(0))]
    changed = {}
    for path in files(root):
        text = path.read_text()
        n = sum(text.count(old) for old, _ in pairs)
        if n and m_old.group(0) != m_new.group(0):
            for old, rep in pairs:
                text = text.replace(old, rep)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(text)
            tmp.replace(path)
            changed[path] = n
    return changed


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url", help="https://github.com/OWNER/NAME")
    p.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    try:
        old = current_url(a.root)
        changed = repoint(a.url, a.root)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for path, n in changed.items():
        print(f"{path.relative_to(a.root)}: {n} link(s)")
    print(f"{old} -> {normalise(a.url).group(0)}: {len(changed)} file(s) changed")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
